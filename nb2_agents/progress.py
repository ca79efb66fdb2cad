"""Progress of a long job (train, curriculum, distill, benchmarks): a bar on a terminal, and a short
line every 30 seconds when the output is not one (CI logs, ``nohup``, ``make run > log``), where a
bar would print nothing useful until the end."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Literal, TextIO

from tqdm.auto import tqdm

Mode = Literal["bar", "lines", "off"]
LINE_EVERY_S = 30.0


def progress_mode(progress: bool | None, stream: TextIO | None = None) -> Mode:
    """``None``: a bar on a terminal, lines elsewhere; ``True``: a bar; ``False``: nothing."""
    if progress is None:
        return "bar" if (stream or sys.stderr).isatty() else "lines"
    return "bar" if progress else "off"


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """Steps done out of ``total``: a tqdm bar (``bar``), a line on stderr at most every ``every``
    seconds and at the end (``lines``), or nothing (``off``)."""

    def __init__(
        self,
        total: int,
        label: str,
        mode: Mode,
        initial: int = 0,
        every: float = LINE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.label, self.mode, self.every, self.clock = total, label, mode, every, clock
        self.stream = stream
        self.n = self._start_n = initial
        self.postfix = ""
        self._start = self._last_line = clock()
        self.bar = tqdm(total=total, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True,
                        disable=mode != "bar", desc=label or None)  # fmt: skip

    def update(self, n: int) -> None:
        """``n`` steps done in all (not an increment)."""
        if n > self.total:  # the last rollout overshoots the budget
            self.total = self.bar.total = n
        self.bar.update(n - self.n)
        self.n = n
        if self.mode == "lines" and self.clock() - self._last_line >= self.every:
            self._line()

    def set_postfix(self, text: str) -> None:
        self.postfix = text
        self.bar.set_postfix_str(text, refresh=False)

    def line(self) -> str:
        """The progress line: steps, share, speed, time left and the postfix."""
        elapsed = max(self.clock() - self._start, 1e-9)
        rate = (self.n - self._start_n) / elapsed
        left = f", {_duration((self.total - self.n) / rate)} left" if rate > 0 and self.n < self.total else ""
        share = 100.0 * self.n / max(self.total, 1)
        text = f"{self.label}: " if self.label else ""
        text += f"{self.n:,}/{self.total:,} steps ({share:.0f} %), {rate:,.0f} steps/s"
        text += f", {_duration(elapsed)}{left}"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _line(self) -> None:
        self._last_line = self.clock()
        print(self.line(), file=self.stream or sys.stderr, flush=True)

    def close(self) -> None:
        if self.mode == "lines" and self.n > self._start_n:
            self._line()
        self.bar.close()
