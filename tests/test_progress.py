"""Progress off a terminal: a line every 30 seconds and one at the end (``nb2_agents/progress.py``)."""

from __future__ import annotations

import io

import pytest

from nb2_agents.progress import Progress, progress_mode


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_mode_is_a_bar_on_a_terminal_and_lines_elsewhere() -> None:
    assert progress_mode(None, _Tty()) == "bar"
    assert progress_mode(None, io.StringIO()) == "lines"  # CI logs, nohup, make run > log
    assert progress_mode(True, io.StringIO()) == "bar" and progress_mode(False, _Tty()) == "off"


def test_lines_come_every_30_seconds_with_speed_and_time_left() -> None:
    clock, out = _Clock(), io.StringIO()
    progress = Progress(10_000, "s0", "lines", clock=clock, stream=out)
    for step in range(0, 10_001, 100):  # 100 steps a second
        clock.now = step / 100
        progress.update(step)
        if step == 5_000:
            progress.set_postfix("task 1 avg score 0.50")
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 100 // 30 + 1  # at 30, 60 and 90 s, then the end
    assert lines[0] == "s0: 3,000/10,000 steps (30 %), 100 steps/s, 30s, 1m 10s left"
    assert lines[-1] == "s0: 10,000/10,000 steps (100 %), 100 steps/s, 1m 40s, task 1 avg score 0.50"


@pytest.mark.parametrize("mode", ["bar", "off"])
def test_no_lines_with_a_bar_or_off(mode: str) -> None:
    clock, out = _Clock(), io.StringIO()
    progress = Progress(100, "train", mode, clock=clock, stream=out)  # type: ignore[arg-type]
    clock.now = 120.0
    progress.update(150)  # the last rollout overshoots the budget: the total grows
    progress.close()
    assert out.getvalue() == "" and progress.total == 150
