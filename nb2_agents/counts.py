"""Step counts as users write them: ``100000``, ``1e5``, ``100k``, ``1.5M``.

Light on purpose (no torch, no SB3): the command line parses its arguments with it before any
heavy import, so ``nb2 --help`` answers at once.
"""

from __future__ import annotations

from typing import Any

from nb2_agents.errors import UsageError


def parse_steps(value: Any, what: str = "steps") -> int:
    """``100000``, ``1e5``, ``100k``, ``1.5M``, ``100_000`` → an int > 0."""
    text = str(value).strip().lower().replace("_", "").replace(",", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1) if text else 1
    if scale > 1:
        text = text[:-1]
    try:
        number = float(text) * scale
    except ValueError:
        number = float("nan")
    if not number >= 1 or number != int(number) or isinstance(value, bool):
        raise UsageError(f"{what} must be a positive whole number such as 100000, 1e5 or 100k; got {value!r}")
    return int(number)
