"""The ``nb2`` command: train, evaluate, plot, info, curriculum, zoo, distill and export.

A thin layer over the Python API.

Bad input (unknown env, algorithm, preset or key, malformed YAML, unreadable model file)
prints one line, ``nb2 <command>: error: ...``, and exits with 2; ``--debug`` shows the
traceback instead. Ctrl-C during training saves the model and a checkpoint and exits with 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from importlib import metadata
from typing import Any, NoReturn

from nb2_agents.cli_common import (
    EXIT_INTERRUPTED,
    add_executor_options,
    add_resume_options,
    add_set_option,
    add_trust_option,
    common_options,
    count_arg,
    finish,
    options_from_args,
    positive_arg,
    quiet,
    refuse_with_resume,
    steps_arg,
    verbosity,
    whole_arg,
)
from nb2_agents.distill import cli as distill_cli
from nb2_agents.errors import UsageError
from nb2_agents.export import cli as export_cli
from nb2_agents.nn.config import PRESETS
from nb2_agents.sb3.names import ALGO_NAMES
from nb2_agents.sweep import cli as sweep_cli
from nb2_agents.zoo import cli as zoo_cli

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_train(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train",
        parents=[common],
        help="train an NB2 policy in a fresh run folder",
        description="Train an NB2 policy; hyperparameters come from policies/<algo>.yaml.",
    )
    p.add_argument("--env", help="Gymnasium env id, e.g. CartPole-v1 or MiniGrid-DoorKey-5x5-v0")
    p.add_argument("--algo", help=f"one of {', '.join(ALGO_NAMES)} (default ppo)")
    p.add_argument("--preset", help=f"NB2 size: {', '.join(PRESETS)} (default: the file's, else nano)")
    p.add_argument(
        "--steps", type=steps_arg, help="env steps: 100000, 1e5 or 100k (default: the file's n_timesteps)"
    )
    p.add_argument("--seed", type=whole_arg, help="default 0")
    p.add_argument("--n-envs", type=steps_arg, help="parallel envs (default: the file's n_envs)")
    p.add_argument("--hyperparams", metavar="FILE", help="RL Zoo-style YAML (default policies/<algo>.yaml)")
    add_set_option(p, "override a hyperparameter, e.g. n_steps=64 or policy_kwargs.nb2_kwargs.d_model=48")
    p.add_argument("--env-kwargs", metavar="JSON", help="gym.make keyword arguments as a JSON object")
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default runs/)")
    p.add_argument("--eval-freq", type=count_arg, help="evaluate every N steps (default steps/10; 0: never)")
    p.add_argument(
        "--eval-episodes", type=steps_arg, help="episodes per evaluation during training (default 5)"
    )
    p.add_argument(
        "--final-episodes", type=steps_arg, help="episodes of the final evaluation, eval.json (default 20)"
    )
    p.add_argument(
        "--save-freq",
        "--checkpoint-freq",
        dest="save_freq",
        type=count_arg,
        help="checkpoint every N steps, resumable (default steps/5; 0: never)",
    )
    p.add_argument(
        "--keep-checkpoints", type=steps_arg, help="resumable checkpoints kept, the newest (default 2)"
    )
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue RUN (a run folder) from its newest checkpoint, exactly as if it had not stopped",
    )
    p.add_argument(
        "--force", action="store_true", help="with --resume: resume although options change the run's config"
    )
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument(
        "--threads", type=whole_arg, help="torch threads (default 1: fastest for small networks on CPU)"
    )
    p.add_argument("--config", metavar="FILE", help="re-run a run's config.yaml; other options override it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_evaluate(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("evaluate", parents=[common], help="evaluate a run folder or model file")
    p.add_argument(
        "path",
        metavar="PATH",
        help="a run folder, a model .zip, zoo:NAME, an nb2 export file or a curriculum run",
    )
    p.add_argument(
        "--env",
        help="env id (default: the one it was trained on); for a curriculum model, a task's name or env id "
        "(default: every task)",
    )
    p.add_argument("--env-kwargs", metavar="JSON", help="gym.make keyword arguments as a JSON object")
    p.add_argument(
        "--episodes", type=steps_arg, help="default 20; for a curriculum model, each task's eval_episodes"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--deterministic",
        dest="deterministic",
        action="store_true",
        default=None,
        help="greedy actions (default, except MiniGrid: as the run evaluated)",
    )
    mode.add_argument("--stochastic", dest="deterministic", action="store_false", help="sample actions")
    p.add_argument(
        "--seed", type=whole_arg, help="default: the run's evaluation seed (training seed + 10000)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--video", metavar="DIR", help="record every episode to DIR (Gymnasium RecordVideo)")
    p.add_argument("--device", default="auto")
    add_trust_option(p)


def _add_plot(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("plot", parents=[common], help="plot learning curves of runs")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or folders that hold runs")
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE.png",
        help="default learning_curves.png; curriculum runs: RUN/curves.png and RUN/heatmap.png",
    )
    p.add_argument(
        "--window", type=steps_arg, help="smoothing window in episodes (default: 1/10 of them, <= 100)"
    )


def _add_info(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("info", parents=[common], help="what a model file holds")
    p.add_argument("path", metavar="PATH", help="a run folder, a model .zip or zoo:NAME (a zoo entry)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_trust_option(p)


def _seeds(text: str) -> list[int]:
    """``0,1,2``, ``0-19`` (both ends included) or both, ``0-4,10``."""
    seeds: list[int] = []
    try:
        for part in filter(str.strip, text.split(",")):
            first, dash, last = part.strip().partition("-")
            seeds += list(range(int(first), int(last) + 1)) if dash else [int(first)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers like 0,1,2 or a range 0-19; got {text!r}"
        ) from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"expected non-negative integers, e.g. 0,1,2; got {text!r}")
    return seeds


def _add_curriculum(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "curriculum",
        parents=[common],
        help="train one agent across a curriculum of tasks and measure what it kept",
        description="Train one NB2 agent across a curriculum (sequential or multitask), evaluate it on "
        "every task throughout, and write metrics.json, matrix.csv and curves.csv.",
    )
    p.add_argument("curriculum", nargs="?", help="a built-in suite (see --list) or a curriculum YAML file")
    p.add_argument("--list", action="store_true", help="list the built-in suites")
    p.add_argument("--algo", help=f"one of {', '.join(ALGO_NAMES)} (default: the suite's)")
    p.add_argument("--preset", help=f"NB2 size: {', '.join(PRESETS)} (default: the suite's)")
    p.add_argument("--mode", default="sequential", choices=["sequential", "multitask"])
    p.add_argument(
        "--retention",
        default="none",
        help="none (fine-tuning, default), ewc, distill, nb2 (distill + task ids), nb2+ewc, or a+b",
    )
    p.add_argument(
        "--retention-set",
        dest="retention_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a retention setting, e.g. replay_budget_mb=16 or ewc_strength=5",
    )
    p.add_argument(
        "--task-ids",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tell the agent which task it is on (default: with nb2 retention and multitask)",
    )
    p.add_argument(
        "--seeds", type=_seeds, default=[0], help="comma-separated, or a range: 0,1,2 or 0-19 (default 0)"
    )
    p.add_argument(
        "--steps-scale", type=positive_arg, default=1.0, help="multiply every task's budget (default 1)"
    )
    p.add_argument(
        "--evals-per-task", type=count_arg, default=4, help="evaluations per task window (default 4)"
    )
    add_set_option(p, "override a hyperparameter of the suite, e.g. n_epochs=10")
    p.add_argument("--references", action="store_true",
                   help="run (or reuse) the single-task runs that forward transfer needs")  # fmt: skip
    add_executor_options(p, "seeds")
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default runs/)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--threads", type=whole_arg, default=1, help="torch threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--checkpoint-freq",
        type=count_arg,
        help="resumable checkpoint every N steps, and at each task's start (default: as often as the "
        "evaluations; 0: at task starts only)",
    )
    p.add_argument(
        "--keep-checkpoints",
        type=steps_arg,
        default=2,
        help="resumable checkpoints kept per seed (default 2)",
    )
    add_resume_options(p, "curriculum")


CURRICULUM_RESUME_ALONE: dict[str, Any] = {
    **dict.fromkeys(("curriculum", "algo", "preset", "task_ids", "checkpoint_freq")),
    **{"mode": "sequential", "retention": "none", "retention_options": [], "seeds": [0], "steps_scale": 1.0},
    **{"evals_per_task": 4, "overrides": [], "references": False, "device": "auto", "keep_checkpoints": 2},
}
"""Options that ``nb2 curriculum --resume`` takes from the run's config.yaml: giving one is an error."""


def _progress(args: argparse.Namespace) -> bool | None:
    """False (none) with --no-progress or -q; None: a bar on a terminal, lines elsewhere."""
    return False if args.no_progress or quiet(args) else None


def _version() -> str:
    """The installed distribution's version (``pyproject.toml``), or "unknown" for a bare checkout."""
    try:
        return metadata.version("nb2-agents")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    common = common_options(_Parser)
    parser = _Parser(prog="nb2", description="NB2 transformer policies for Stable-Baselines3.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    adders = (_add_train, _add_evaluate, _add_plot, _add_info, _add_curriculum)
    for add in (
        *adders,
        zoo_cli.add_parser,
        distill_cli.add_parser,
        export_cli.add_parser,
        sweep_cli.add_parser,
    ):
        add(sub, common)
    return parser


def _train(args: argparse.Namespace) -> int:
    from nb2_agents.config import TrainOptions
    from nb2_agents.training import train

    result = train(
        options_from_args(TrainOptions, args),
        runs_dir=args.runs_dir,
        progress=_progress(args),
        verbose=verbosity(args),
        resume=args.resume,
        force=args.force,
    )
    return finish(result)


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from nb2_agents.curriculum.evaluate import evaluate_curriculum, is_curriculum_path, results_json
    from nb2_agents.evaluation import DEFAULT_EPISODES, evaluate

    torch.set_num_threads(1)  # as nb2 train evaluates, so results match its eval.json

    env_kwargs = None
    if args.env_kwargs is not None:
        try:
            env_kwargs = json.loads(args.env_kwargs)
        except json.JSONDecodeError as err:
            raise UsageError(
                f"--env-kwargs is not JSON ({err}); expected an object, e.g. '{{\"size\": 8}}'"
            ) from None
    if is_curriculum_path(args.path):
        if args.env_kwargs is not None or args.video is not None:
            raise UsageError(
                "--env-kwargs and --video apply to one env; a curriculum model's tasks have their own"
            )
        results = evaluate_curriculum(
            args.path, args.env, args.episodes, args.deterministic, args.seed, args.device, args.trust_pickle
        )
        models = list(dict.fromkeys(r.model for r in results))
        if args.json or len(models) == 1:
            print(results_json(results) if args.json else "\n".join(r.summary() for r in results))
        else:  # a run folder's seeds: each model, then its tasks
            for model in models:
                print(f"{model}:\n" + "\n".join(f"  {r.summary()}" for r in results if r.model == model))
        return 0
    result = evaluate(
        args.path,
        env=args.env,
        episodes=DEFAULT_EPISODES if args.episodes is None else args.episodes,
        deterministic=args.deterministic,
        seed=args.seed,
        video=args.video,
        env_kwargs=env_kwargs,
        device=args.device,
        trust_pickle=args.trust_pickle,
    )
    print(json.dumps(result.to_dict()) if args.json else result.summary())
    return 0


def _plot(args: argparse.Namespace) -> int:
    from nb2_agents.plot import plot_all

    for path in plot_all(args.runs, args.out, args.window):
        print(f"wrote {path}")
    return 0


def _curriculum(args: argparse.Namespace) -> int:
    import torch

    from nb2_agents.curriculum import builtin_curricula, run_curriculum, run_references
    from nb2_agents.curriculum.resolve import CurriculumOptions

    if args.list:
        print("\n".join(builtin_curricula()))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume is not None:
        from nb2_agents.curriculum.runner import resume_curriculum

        refuse_with_resume(args, CURRICULUM_RESUME_ALONE)
        resumed = resume_curriculum(args.resume, force=args.force, workers=args.workers, address=args.address,
                                    progress=_progress(args), verbose=verbosity(args))  # fmt: skip
        print(resumed.summary())
        return 0
    if not args.curriculum:
        raise UsageError(f"name a curriculum: one of {', '.join(builtin_curricula())}, or a YAML file")
    options = options_from_args(CurriculumOptions, args)
    run = dict(
        runs_dir=args.runs_dir, workers=args.workers, progress=_progress(args), verbose=verbosity(args),
        address=args.address,
    )  # fmt: skip
    if args.references:
        for path in run_references(options, **run):
            print(f"reference: {path}")
        return 0
    result = run_curriculum(options, **run)
    print(result.summary())
    return 0


def _info(args: argparse.Namespace) -> int:
    from nb2_agents.info import info

    result = info(args.path, trust_pickle=args.trust_pickle)
    print(json.dumps(result.to_dict()) if args.json else result.text())
    return 0


COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "plot": _plot,
    "info": _info,
    "curriculum": _curriculum,
    "zoo": zoo_cli.run,
    "distill": distill_cli.handle,
    "export": export_cli.run,
    "sweep": sweep_cli.handle,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nb2`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)  # light: nothing heavy is imported before this line
    prog = f"nb2 {args.command}"
    try:
        from nb2_agents.envs_util import import_gym_packages

        import_gym_packages(getattr(args, "gym_packages", []))
        return COMMANDS[args.command](args)
    except UsageError as err:
        if args.debug:
            traceback.print_exc()
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the output went to a pipe that closed early (nb2 info ... | head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own advice
        return 1
    except Exception as err:
        if args.debug:
            raise
        print(
            f"{prog}: error: {type(err).__name__}: {' '.join(str(err).split())} (run with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
