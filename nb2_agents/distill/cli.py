"""``nb2 distill``: its options and handler (registered by :mod:`nb2_agents.cli`)."""

from __future__ import annotations

import argparse
from typing import Any

from nb2_agents.cli_common import (
    add_resume_options,
    add_set_option,
    add_trust_option,
    count_arg,
    finish,
    non_negative_arg,
    positive_arg,
    quiet,
    refuse_with_resume,
    steps_arg,
    verbosity,
    whole_arg,
)
from nb2_agents.nn.config import PRESETS


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``distill`` to the ``nb2`` subcommands."""
    p = sub.add_parser(
        "distill",
        parents=[common],
        help="distil teacher policies (SB3 or NB2 models) into an NB2 student",
        description="Distil teachers into an NB2 student (PPO + NB2): the student acts, the teachers label "
        "the states it visits. One teacher with --env; one per task, in order, with --curriculum.",
    )
    p.add_argument(
        "--teacher",
        dest="teachers",
        action="append",
        default=[],
        metavar="PATH",
        help="a model .zip (SB3 or nb2), a run folder or zoo:NAME; repeat once per curriculum task",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument("--env", help="Gymnasium env id of the teacher, e.g. CartPole-v1")
    target.add_argument("--curriculum", metavar="SUITE", help="a built-in suite or a curriculum YAML file")
    p.add_argument("--preset", default="nano", help=f"student size: {', '.join(PRESETS)} (default nano)")
    p.add_argument(
        "--steps",
        type=steps_arg,
        help="env steps (default: the hyperparameter entry's n_timesteps; the suite's total)",
    )
    p.add_argument(
        "--mode",
        default="pure",
        choices=["pure", "kickstart"],
        help="pure: distillation loss only (default); kickstart: PPO's loss plus the distillation "
        "loss, its weight annealed to 0",
    )
    p.add_argument(
        "--temperature",
        type=positive_arg,
        default=1.0,
        help="τ of softmax(logits/τ) and softmax(Q/τ) for Discrete teachers (default 1)",
    )
    p.add_argument(
        "--kl-coef",
        type=non_negative_arg,
        default=1.0,
        help="kickstart: the distillation loss's initial weight λ (default 1)",
    )
    p.add_argument(
        "--value-coef",
        type=non_negative_arg,
        default=0.5,
        help="weight of the value regression to the teacher's value (default 0.5; 0: off)",
    )
    add_trust_option(p, "--trust-teacher")
    p.add_argument("--eval-freq", type=count_arg, help="evaluate every N steps (default steps/10; 0: never)")
    p.add_argument(
        "--final-episodes",
        type=steps_arg,
        help="episodes of the final evaluation, student and teacher (default 20)",
    )
    add_set_option(
        p,
        "override a student hyperparameter (the env's policies/distill.yaml entry for pure, "
        "ppo.yaml for kickstart, or the curriculum's), e.g. n_epochs=20",
    )
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default runs/)")
    p.add_argument("--seed", type=whole_arg, default=0, help="default 0")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--threads", type=whole_arg, default=1, help="torch threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_resume_options(p, "distill")


RESUME_ALONE: dict[str, Any] = {
    **dict.fromkeys(("env", "curriculum", "steps", "eval_freq", "final_episodes")),
    **{"teachers": [], "overrides": [], "preset": "nano", "mode": "pure", "seed": 0, "device": "auto"},
    **{"temperature": 1.0, "kl_coef": 1.0, "value_coef": 0.5},
}
"""Options that ``--resume`` takes from the run's config.yaml, with their defaults: giving one is an error."""


def handle(args: argparse.Namespace) -> int:
    """Run ``nb2 distill``; returns the exit code."""
    import torch

    from nb2_agents.distill.run import distill

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume is not None:
        from nb2_agents.distill.run import resume_distill

        refuse_with_resume(args, RESUME_ALONE)
        progress = False if args.no_progress or quiet(args) else None
        resumed = resume_distill(args.resume, force=args.force, trust_pickle=args.trust_pickle,
                                 progress=progress, verbose=verbosity(args))  # fmt: skip
        return finish(resumed)
    result = distill(
        args.teachers,
        env=args.env,
        curriculum=args.curriculum,
        preset=args.preset,
        steps=args.steps,
        mode=args.mode,
        temperature=args.temperature,
        kl_coef=args.kl_coef,
        value_coef=args.value_coef,
        runs_dir=args.runs_dir,
        seed=args.seed,
        trust_pickle=args.trust_pickle,
        device=args.device,
        eval_freq=args.eval_freq,
        final_episodes=args.final_episodes,
        overrides=args.overrides,
        progress=False if args.no_progress or quiet(args) else None,
        verbose=verbosity(args),
    )
    return finish(result)
