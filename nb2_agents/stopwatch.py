"""Seconds spent per phase of a run (training, evaluation, retention), summed over its calls."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """``with watch("evaluation"): ...`` adds the block's wall time to ``watch.seconds["evaluation"]``.

    Phases may nest; each counts its own block, so a nested phase's time is in its parent's too.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
