"""Each env's last K observations, kept in NumPy: what the wrapper and ``predict(state=...)`` carry."""

from __future__ import annotations

from typing import Any

import numpy as np

from nb2_agents.memory.layout import PREFIX, STEP_KEY, VALID_KEY, MemoryLayout, past_space


class ObsWindow:
    """The memory of ``n_envs`` envs: the last K values of each kept key, most recent first.

    ``compose(obs)`` gives the observation a memory-carrying policy reads; ``push(obs)`` moves
    every env one step on after it acted on ``obs``; ``clear(rows)`` empties the memory of
    the envs whose episode starts.
    """

    def __init__(self, layout: MemoryLayout, n_envs: int) -> None:
        self.layout = layout
        self.past = {
            key: np.zeros((n_envs, *space.shape), dtype=space.dtype)
            for key in layout.past_keys
            for space in [past_space(layout.step_part(key), layout.k)]
        }
        self.valid = np.zeros((n_envs, layout.k), dtype=np.float32)

    def parts(self, obs: Any) -> dict[str, np.ndarray]:
        """A batch of step observations as named parts (a Dict's keys, or ``obs``)."""
        return dict(obs) if self.layout.is_dict else {STEP_KEY: obs}

    def compose(self, obs: Any) -> dict[str, np.ndarray]:
        """``obs`` (a batch, one row per env) with each env's memory beside it (copies)."""
        out = self.parts(obs)
        for key, past in self.past.items():
            out[PREFIX + key] = past.copy()
        out[VALID_KEY] = self.valid.copy()
        return out

    def compose_one(self, obs: Any, row: int) -> dict[str, np.ndarray]:
        """One env's observation (no batch axis) with env ``row``'s memory beside it."""
        out = self.parts(obs)
        for key, past in self.past.items():
            out[PREFIX + key] = past[row].copy()
        out[VALID_KEY] = self.valid[row].copy()
        return out

    def push(self, obs: Any) -> None:
        """Every env acted on its row of ``obs``: that step becomes the most recent past."""
        parts = self.parts(obs)
        for key, past in self.past.items():
            past[:, 1:] = past[:, :-1]  # (n, K, ...): oldest step dropped
            past[:, 0] = np.asarray(parts[key]).reshape(past.shape[0], *past.shape[2:])
        self.valid[:, 1:] = self.valid[:, :-1]
        self.valid[:, 0] = 1.0

    def clear(self, rows: np.ndarray) -> None:
        """Forget the past of the envs where ``rows`` (n_envs,) is true: their episodes start."""
        rows = np.asarray(rows, dtype=bool).reshape(-1)
        for past in self.past.values():
            past[rows] = 0
        self.valid[rows] = 0.0

    def nbytes(self) -> int:
        """The memory of every env, in bytes."""
        return int(sum(past.nbytes for past in self.past.values()) + self.valid.nbytes)

    def state(self) -> tuple[np.ndarray, ...]:
        """The memory as ``predict``'s state: ``(valid, *past values in layout order)``."""
        return (self.valid.copy(), *(past.copy() for past in self.past.values()))

    @classmethod
    def from_state(cls, layout: MemoryLayout, state: tuple[np.ndarray, ...] | None, n_envs: int) -> ObsWindow:
        """The window a ``predict`` state holds; an empty one for ``None``."""
        window = cls(layout, n_envs)
        if state is None:
            return window
        if len(state) != 1 + len(window.past) or np.shape(state[0]) != window.valid.shape:
            raise ValueError(
                f"state: expected the state predict returned for {n_envs} env(s) with memory "
                f"{layout.k} ({1 + len(window.past)} arrays, the first of shape {window.valid.shape}), "
                f"got {len(state)} array(s) of shapes {[np.shape(s) for s in state]}; pass None "
                "at the first step"
            )
        window.valid[:] = state[0]
        for past, value in zip(window.past.values(), state[1:], strict=True):
            past[:] = value
        return window
