"""``nb2 sweep``: its options and handler (registered by :mod:`nb2_agents.cli`); each option is
the field of :class:`~nb2_agents.sweep.run.SweepOptions` of the same name."""

from __future__ import annotations

import argparse
from typing import Any

from nb2_agents.cli_common import (
    EXIT_INTERRUPTED,
    LOCAL_CPUS,
    add_executor_options,
    add_set_option,
    options_from_args,
    refuse_with_resume,
    steps_arg,
    verbosity,
    whole_arg,
)

RESUME_MAY_CHANGE = {"trials": 10, "workers": LOCAL_CPUS, "address": None}
"""The options ``--resume`` takes (with their defaults); the others come from the sweep's own."""
RESUME_ALONE: dict[str, Any] = {
    "env": None,
    "algo": None,
    "steps": None,
    "seed": 0,
    "hyperparams": None,
    "overrides": [],
    "space": None,
    "search": [],
    "evals": 5,
    "eval_episodes": 5,
    "pruner": "asha",
    "storage": None,
    "study_name": None,
    "env_kwargs": None,
    "device": None,
    "threads": None,
    "retention": "none",
}


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``sweep`` to the ``nb2`` subcommands."""
    p = sub.add_parser(
        "sweep",
        parents=[common],
        help="search hyperparameters (Optuna TPE + ASHA, on Ray): the best as a policies/<algo>.yaml entry",
        description="Search an algorithm's hyperparameters and NB2's settings for one env: each trial is an "
        "nb2 train run; Optuna's TPE picks the values, ASHA stops weak trials at their evaluations. The "
        "search space is policies/sweeps.yaml.",
    )
    p.add_argument(
        "env",
        nargs="?",
        metavar="ENV_OR_SUITE",
        help="a Gymnasium env id, e.g. CartPole-v1, or a curriculum suite (nb2 curriculum --list, or a YAML "
        "file): each trial is then a curriculum, scored by its average performance",
    )
    p.add_argument(
        "--algo", help="ppo (default), a2c, dqn, sac, td3 or maskable_ppo; a suite's own by default"
    )
    p.add_argument("--retention", default="none", help="a suite's retention strategy (default none)")
    p.add_argument("--trials", "--n-trials", type=steps_arg, default=10, help="trials to run (default 10)")
    p.add_argument(
        "--steps",
        type=steps_arg,
        help="each trial's env steps (default: the entry's n_timesteps; a suite: over all its tasks)",
    )
    p.add_argument(
        "--seed", type=whole_arg, default=0, help="the trials' training seed and the sampler's (default 0)"
    )
    p.add_argument(
        "--hyperparams", metavar="FILE", help="the entries trials start from (default policies/<algo>.yaml)"
    )
    add_set_option(p, "fix a hyperparameter in every trial, e.g. n_envs=4")
    p.add_argument("--space", metavar="FILE", help="the search-space file (default policies/sweeps.yaml)")
    p.add_argument(
        "--search",
        action="append",
        default=[],
        metavar="KEY=SPEC",
        help="search KEY over SPEC: a list [a, b], or uniform, loguniform, int or logint(LOW, HIGH); "
        "KEY=none leaves it out, e.g. n_epochs='[5, 10]'",
    )
    p.add_argument(
        "--evals", type=steps_arg, default=5, help="evaluations per trial, where ASHA compares (default 5)"
    )
    p.add_argument("--eval-episodes", type=steps_arg, default=5, help="episodes per evaluation (default 5)")
    p.add_argument("--pruner", default="asha", help="asha (default) or none")
    p.add_argument(
        "--storage",
        metavar="URL",
        help="an Optuna storage shared between invocations and machines, e.g. sqlite:///sweep.db or "
        "postgresql://user@host/db (default: study.db in the sweep folder)",
    )
    p.add_argument("--study-name", help="the study in --storage (default ENV__ALGO__STEPS)")
    p.add_argument("--env-kwargs", metavar="JSON", help="gym.make keyword arguments as a JSON object")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--threads", type=whole_arg, help="torch threads per trial (default 1)")
    p.add_argument("--runs-dir", default="runs", help="where the sweep folder goes (default runs/)")
    p.add_argument("--resume", metavar="SWEEP", help="continue a sweep folder: the trials it lacks")
    add_executor_options(p, "trials", "--n-jobs")  # RL Zoo's names too


def handle(args: argparse.Namespace) -> int:
    """The handler of ``nb2 sweep``."""
    from nb2_agents.sweep.run import SweepOptions, sweep

    if args.resume is not None:
        refuse_with_resume(args, RESUME_ALONE)
        given = {
            k: getattr(args, k) for k, default in RESUME_MAY_CHANGE.items() if getattr(args, k) != default
        }
        result = sweep(resume=args.resume, runs_dir=args.runs_dir, verbose=verbosity(args), **given)
    else:
        result = sweep(options_from_args(SweepOptions, args), runs_dir=args.runs_dir, verbose=verbosity(args))
    print(result.summary())
    return EXIT_INTERRUPTED if result.interrupted else 0
