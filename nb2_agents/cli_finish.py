"""How ``nb2 train`` and ``nb2 distill`` end: the run's summary, or where an interrupted run's
model and checkpoint are, with the shell's exit status for Ctrl-C."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol

EXIT_INTERRUPTED = 130


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
