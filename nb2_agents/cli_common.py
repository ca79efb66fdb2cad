"""What the ``nb2`` subcommands share: argparse value types that fail with a one-line message,
and how ``nb2 train`` and ``nb2 distill`` end (the summary, or where an interrupted run's model
and checkpoint are, with the shell's exit status for Ctrl-C)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Any, Protocol

from nb2_agents.counts import parse_steps
from nb2_agents.errors import UsageError

EXIT_INTERRUPTED = 130


def steps_arg(text: str) -> int:
    """A step count: ``100000``, ``1e5`` or ``100k``."""
    try:
        return parse_steps(text, "the value")
    except ValueError as err:  # UsageError is a ValueError
        raise argparse.ArgumentTypeError(str(err)) from None


def count_arg(text: str) -> int:
    """A step count or ``0`` (never)."""
    return 0 if text.strip() == "0" else steps_arg(text)


def quiet(args: argparse.Namespace) -> bool:
    """``-q``: only the result and errors."""
    return bool(getattr(args, "quiet", False))


def verbosity(args: argparse.Namespace) -> int:
    """0 with ``-q`` (the result and errors), 2 with ``-v`` (SB3's table of logged values too), else 1."""
    return 0 if quiet(args) else 2 if getattr(args, "verbose", False) else 1


def common_options(
    parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """The options every subcommand takes (``--debug``, ``-q`` / ``-v``, ``--gym-packages``), as a
    parent parser."""
    common = parser_class(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    talk = common.add_mutually_exclusive_group()
    talk.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print only the result and errors (no configuration, no progress)",
    )
    talk.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="when training, also print SB3's table of logged values (rollout/, train/, nb2/ ...)",
    )
    common.add_argument(
        "--gym-packages",
        nargs="+",
        default=[],
        metavar="MODULE",
        help="modules to import first, which register the envs of your own (as RL Zoo's); or name an env "
        "module:EnvId",
    )
    return common


def add_resume_options(p: argparse.ArgumentParser, job: str) -> None:
    """``--resume RUN`` and ``--force`` of a job (``distill``, ``curriculum``) whose resumed run
    takes its options from its ``config.yaml``."""
    p.add_argument(
        "--resume",
        metavar="RUN",
        help=f"continue RUN (a {job} run folder) from its newest checkpoints, with the options it recorded",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --resume: resume although its configuration rebuilds differently",
    )


def refuse_with_resume(args: argparse.Namespace, defaults: dict[str, Any]) -> None:
    """``--resume RUN`` continues with the options RUN's ``config.yaml`` recorded: an option of
    ``defaults`` given a value other than its default is refused, by name."""
    given = [f"--{k.replace('_', '-')}" for k, v in defaults.items() if getattr(args, k) != v]
    if given:
        raise UsageError(
            f"--resume {args.resume} continues with the options its config.yaml recorded; "
            f"{', '.join(given)} cannot be given with it"
        )


def whole_arg(text: str) -> int:
    """A whole number >= 0 (a seed; a thread count, where 0 is torch's default)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, e.g. 0 or 3; got {text!r}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def positive_arg(text: str) -> float:
    """A finite number > 0."""
    value = _finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, e.g. 0.5; got {text!r}")
    return value


def non_negative_arg(text: str) -> float:
    """A finite number >= 0."""
    value = _finite(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, e.g. 0.5; got {text!r}")
    return value


class FinishedRun(Protocol):
    interrupted: bool
    steps: int
    model_path: Path
    checkpoint: Path | None

    def summary(self) -> str: ...


def finish(result: FinishedRun) -> int:
    """Print what a user needs next; the exit status (0, or 130 when interrupted)."""
    if result.interrupted:
        print(
            f"\ninterrupted at {result.steps:,} steps; model saved to {result.model_path}, "
            f"checkpoint {result.checkpoint}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(result.summary())
    return 0


def options_from_args(cls: type[Any], args: argparse.Namespace) -> Any:
    """The options dataclass ``cls`` from a subcommand's parsed arguments: each field from the
    argument of the same name (the options' one list; the parser's ``dest`` names follow it)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable, into ``overrides``): hyperparameters over the entry's."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def add_trust_option(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """``--trust-pickle``: the only way to have a file unpickled (it runs the code a file holds)."""
    parser.add_argument(
        "--trust-pickle",
        *aliases,
        dest="trust_pickle",
        action="store_true",
        help="load files that need unpickling (SB3's own load): it runs any code they hold, so only for "
        "files you trust; without it nothing is unpickled",
    )


LOCAL_CPUS = os.cpu_count() or 1
"""``--workers``' default: a local Ray with this machine's cores (one job alone runs in the process)."""


def add_executor_options(parser: argparse.ArgumentParser, what: str, *aliases: str) -> None:
    """``--workers`` (and ``aliases`` of it) and ``--address``: where side-by-side ``what`` run
    (:mod:`nb2_agents.executor`)."""
    parser.add_argument(
        "--workers",
        *aliases,
        dest="workers",
        type=count_arg,
        default=LOCAL_CPUS,
        help=f"{what} trained side by side, as Ray tasks on a local Ray with this many CPUs (default: this "
        f"machine's {LOCAL_CPUS} cores; 1: one after another in this process)",
    )
    parser.add_argument(
        "--address",
        metavar="auto|HOST:PORT",
        help=f"train the {what} on this Ray cluster (default: RAY_ADDRESS; a local Ray for --workers > 1)",
    )
