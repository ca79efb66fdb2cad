"""Gymnasium spaces as plain JSON (no pickle), and the graph inputs a space becomes.

>>> import numpy as np
>>> from gymnasium import spaces
>>> box = spaces.Box(-1.0, 1.0, (3,), np.float32)
>>> space_from_json(space_to_json(box)) == box
True

Box bounds that are the same everywhere are stored as one number; infinite bounds as the
strings ``"inf"`` / ``"-inf"`` (JSON has no infinity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from nb2_agents.errors import UsageError

SUPPORTED = "Box, Discrete, MultiDiscrete, MultiBinary, or a flat Dict of these"
OBS_INPUT = "obs"
"""The graph input of a non-Dict observation."""


def _number(x: float) -> float | str:
    return float(x) if np.isfinite(x) else ("inf" if x > 0 else "-inf" if x < 0 else "nan")


def _bounds(values: np.ndarray) -> Any:
    """One number when every entry is equal, else the nested list (non-finite as strings)."""
    flat = values.ravel()
    if flat.size and np.all(flat == flat[0]):
        return _number(flat[0])
    return np.vectorize(_number, otypes=[object])(values).tolist() if values.size else []


def _array(value: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    def parse(x: Any) -> Any:
        return [parse(v) for v in x] if isinstance(x, list) else float(x)

    return np.broadcast_to(np.asarray(parse(value), dtype=np.float64), shape).astype(dtype)


def space_to_json(space: spaces.Space, where: str = "observation space") -> dict[str, Any]:
    """A JSON object for ``space``; :class:`UsageError` naming the space when it has none."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _bounds(space.low),
            "high": _bounds(space.high),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": np.asarray(space.nvec).tolist(),
            "start": np.asarray(space.start).tolist(),
            "dtype": str(space.dtype),
        }
    if isinstance(space, spaces.MultiBinary):
        n = space.n
        return {"type": "MultiBinary", "n": [int(v) for v in n] if not isinstance(n, int) else int(n)}
    if isinstance(space, spaces.Dict) and where == "observation space":
        return {
            "type": "Dict",
            "spaces": {k: space_to_json(s, f"observation key {k!r}") for k, s in space.spaces.items()},
        }
    raise UsageError(
        f"cannot export a model whose {where} is {space}: the exported graph and its metadata "
        f"support {SUPPORTED}"
    )


def space_from_json(data: Any, where: str = "space") -> spaces.Space:
    """The space :func:`space_to_json` wrote; :class:`UsageError` for anything else."""
    kind = data.get("type") if isinstance(data, dict) else None
    try:
        if kind == "Box":
            shape = tuple(int(n) for n in data["shape"])
            dtype = np.dtype(data["dtype"])
            low, high = _array(data["low"], shape, dtype), _array(data["high"], shape, dtype)
            return spaces.Box(low, high, shape, dtype)  # type: ignore[arg-type]
        if kind == "Discrete":
            return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
        if kind == "MultiDiscrete":
            return spaces.MultiDiscrete(
                data["nvec"], dtype=data.get("dtype", "int64"), start=data.get("start")
            )
        if kind == "MultiBinary":
            return spaces.MultiBinary(data["n"])
        if kind == "Dict":
            return spaces.Dict(
                {k: space_from_json(v, f"{where} key {k!r}") for k, v in data["spaces"].items()}
            )
    except (KeyError, TypeError, ValueError) as err:
        raise UsageError(f"malformed {kind} in the {where} of the metadata: {err}") from err
    raise UsageError(
        f"unknown space type {kind!r} in the {where} of the metadata; expected Box, Discrete, "
        "MultiDiscrete, MultiBinary or Dict"
    )


@dataclass(frozen=True)
class GraphInput:
    """One input of an exported graph: its name, numpy dtype and shape after the batch axis."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": ["batch", *self.shape]}


def _input(name: str, space: spaces.Space) -> GraphInput:
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return GraphInput(name, "int64", tuple(space.shape or ()))  # integer values, one-hot in the graph
    return GraphInput(name, str(np.dtype(space.dtype)), tuple(space.shape or ()))


def graph_inputs(observation_space: spaces.Space) -> list[GraphInput]:
    """Inputs of the graph for ``observation_space``: ``obs``, or one per Dict key in key order."""
    if isinstance(observation_space, spaces.Dict):
        return [_input(k, s) for k, s in observation_space.spaces.items()]
    return [_input(OBS_INPUT, observation_space)]
