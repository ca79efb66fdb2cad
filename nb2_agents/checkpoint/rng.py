"""Random generator states as plain data: Python's, NumPy's global one, torch's (CPU and CUDA),
and NumPy ``Generator``s (envs', spaces')."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from gymnasium import spaces


def generator_state(gen: np.random.Generator) -> dict[str, Any]:
    return dict(gen.bit_generator.state)


def set_generator_state(owner: Any, state: dict[str, Any]) -> None:
    """Put ``owner.np_random`` (an env's or a space's generator) in ``state``, in place."""
    bit_generator = owner.np_random.bit_generator
    if type(bit_generator).__name__ != state["bit_generator"]:
        raise ValueError(f"a {state['bit_generator']} state for a {type(bit_generator).__name__} generator")
    bit_generator.state = state


def space_generators(space: spaces.Space) -> list[spaces.Space]:  # type: ignore[type-arg]
    """``space`` and every sub-space, each with its own generator (Dict and Tuple seed theirs)."""
    subs: list[Any] = []
    if isinstance(space, spaces.Dict):
        subs = list(space.spaces.values())
    elif isinstance(space, spaces.Tuple):
        subs = list(space.spaces)
    return [space, *[s for sub in subs for s in space_generators(sub)]]


def spaces_state(space: spaces.Space) -> list[dict[str, Any]]:  # type: ignore[type-arg]
    return [generator_state(s.np_random) for s in space_generators(space)]


def set_spaces_state(space: spaces.Space, states: list[dict[str, Any]]) -> None:  # type: ignore[type-arg]
    for s, state in zip(space_generators(space), states, strict=True):
        set_generator_state(s, state)


def global_state() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Python's, NumPy's and torch's global generators: (JSON part, arrays)."""
    py = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    arrays = {"rng/numpy_keys": np.asarray(keys), "rng/torch": torch.get_rng_state().numpy()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            arrays[f"rng/cuda{i}"] = state.numpy()
    info = {"python": [py[0], list(py[1]), py[2]], "numpy": [kind, int(pos), int(has_gauss), float(gauss)]}
    return info, arrays


def set_global_state(info: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    version, internal, gauss = info["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, pos, has_gauss, cached = info["numpy"]
    np.random.set_state((kind, arrays["rng/numpy_keys"], pos, has_gauss, cached))
    torch.set_rng_state(torch.from_numpy(arrays["rng/torch"].copy()))
    cuda = sorted(k for k in arrays if k.startswith("rng/cuda"))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.from_numpy(arrays[k].copy()) for k in cuda])
