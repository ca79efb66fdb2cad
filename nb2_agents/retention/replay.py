"""Compact replay memory of observations from earlier curriculum tasks.

NB2's knowledge retention replays observations of the tasks a curriculum has already trained on, to
distill the old policies into the new one. :class:`ReplayMemory` keeps them under a fixed byte budget:

* The budget is split equally between the tasks seen so far; each task holds
  ``budget_bytes // (n_tasks * bytes_per_obs)`` observations. When a new task appears, the earlier
  tasks' reservoirs shrink to the new capacity by keeping a uniformly random subset.
* Each task's store is a reservoir (Vitter's Algorithm R), so it is a uniform sample of everything the
  task offered, whatever the stream's length. :meth:`ReplayMemory.add` takes a batch (``n_envs`` rows,
  as a VecEnv returns) and is vectorised across it.
* Observations are stored compressed: floating Box → float16 (clipped to float16's finite range),
  uint8 Box and MultiBinary → uint8, Discrete → the smallest unsigned type that holds ``n`` (offset by
  ``start``), MultiDiscrete → int16 / int32 as needed; other integer Boxes keep their dtype. Flat Dict
  spaces are compressed per key. :meth:`ReplayMemory.sample` restores the space's dtypes.
* Each task's arrays are allocated once at its capacity, so :attr:`ReplayMemory.nbytes` never exceeds
  the budget; everything is deterministic given ``seed``, and the RNG state is part of the saved state.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from nb2_agents.runs import atomic_write
from nb2_agents.safe_files import load_npz

__all__ = ["ReplayMemory"]

_FORMAT_VERSION = 1
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_SINGLE = ""
"""The key under which a non-Dict observation space is stored."""


@dataclass(frozen=True)
class _Codec:
    """How one key (or a whole non-Dict space) is stored and restored."""

    shape: tuple[int, ...]
    dtype: np.dtype
    """The space's dtype, which :meth:`ReplayMemory.sample` restores."""
    store_dtype: np.dtype
    offset: int = 0
    """Subtracted before storing (a Discrete's ``start``), added back when restoring."""
    clip: bool = False
    """Clip to float16's finite range before storing."""
    description: str = ""
    """What the data means, compared when a saved memory is loaded for a space."""

    @property
    def nbytes(self) -> int:
        """Bytes one stored observation costs."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.store_dtype.itemsize

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` ready to be assigned into the store (the assignment casts)."""
        if self.clip:
            return np.clip(rows, -_FLOAT16_MAX, _FLOAT16_MAX)
        if self.offset:
            return rows - self.offset
        return rows

    def allocate(self, capacity: int) -> np.ndarray:
        """An uninitialised store for ``capacity`` observations."""
        return np.empty((capacity, *self.shape), dtype=self.store_dtype)


def _codec(space: gymnasium.Space, name: str) -> _Codec:
    """The codec of a non-composite space; ValueError for spaces that cannot be stored."""
    shape = tuple(int(d) for d in (space.shape or ()))
    dtype = np.dtype(space.dtype) if space.dtype is not None else None
    if isinstance(space, spaces.Box):
        assert dtype is not None
        if np.issubdtype(dtype, np.floating):
            return _Codec(shape, dtype, np.dtype(np.float16), clip=True, description=f"Box{shape} {dtype}")
        return _Codec(shape, dtype, dtype, description=f"Box{shape} {dtype}")
    if isinstance(space, spaces.MultiBinary):
        assert dtype is not None
        return _Codec(shape, dtype, np.dtype(np.uint8), description=f"MultiBinary{shape}")
    if isinstance(space, spaces.Discrete):
        assert dtype is not None
        n, start = int(space.n), int(space.start)
        store = np.dtype(np.min_scalar_type(max(n - 1, 0)))
        return _Codec((), dtype, store, offset=start, description=f"Discrete({n}, start={start})")
    if isinstance(space, spaces.MultiDiscrete):
        assert dtype is not None
        low, high = int(np.min(space.start)), int(np.max(space.start + space.nvec - 1))
        store = next(
            np.dtype(t)
            for t in (np.int16, np.int32, np.int64)
            if np.iinfo(t).min <= low <= high <= np.iinfo(t).max
        )
        desc = f"MultiDiscrete(nvec={space.nvec.tolist()}, start={np.asarray(space.start).tolist()})"
        return _Codec(shape, dtype, store, description=desc)
    raise ValueError(
        f"ReplayMemory cannot store observation {name!r} of space {space}; supported: Box, MultiBinary, "
        "Discrete, MultiDiscrete, and flat Dicts of them"
    )


def _codecs(space: gymnasium.Space) -> dict[str, _Codec]:
    """The codec of each key of ``space`` (a non-Dict space has the single key ``""``)."""
    if not isinstance(space, spaces.Dict):
        return {_SINGLE: _codec(space, "observation")}
    out: dict[str, _Codec] = {}
    for key, sub in space.spaces.items():
        if isinstance(sub, (spaces.Dict, spaces.Tuple)):
            raise ValueError(f"ReplayMemory stores flat Dict spaces only; key {key!r} holds {sub}")
        out[str(key)] = _codec(sub, str(key))
    return out


def _fingerprint(codecs: Mapping[str, _Codec]) -> str:
    """A JSON description of the stored layout, to detect a memory saved for another space."""
    return json.dumps([[key, c.description, str(c.store_dtype)] for key, c in codecs.items()])


class ReplayMemory:
    """Per-task reservoirs of compressed observations under one byte budget.

    Args:
        observation_space: The (shared) observation space of the curriculum's tasks: a Box,
            MultiBinary, Discrete, MultiDiscrete or a flat Dict of them.
        budget_bytes: Bytes that the stored arrays may take, all tasks together.
        seed: Seed of the memory's RNG (reservoir replacement, shrinking, sampling).
    """

    def __init__(
        self, observation_space: gymnasium.spaces.Space, budget_bytes: int = 64 * 2**20, seed: int = 0
    ) -> None:
        self.observation_space = observation_space
        self._codecs = _codecs(observation_space)
        self._dict = isinstance(observation_space, spaces.Dict)
        self._bytes_per_obs = sum(c.nbytes for c in self._codecs.values())
        if self._bytes_per_obs <= 0:
            raise ValueError(f"ReplayMemory: observation space {observation_space} has no data to store")
        self.budget_bytes = int(budget_bytes)
        self.seed = int(seed)
        self._check_budget(1)
        self._rng = np.random.default_rng(self.seed)
        self._capacity = 0
        self._stores: dict[int, dict[str, np.ndarray]] = {}
        self._seen: dict[int, int] = {}

    # ------------------------------------------------------------------ sizes

    @property
    def keys(self) -> list[str]:
        """The stored observation's keys (``""`` for an observation that is not a dict)."""
        return list(self._codecs)

    @property
    def bytes_per_obs(self) -> int:
        """Bytes one stored (compressed) observation costs, all keys together."""
        return self._bytes_per_obs

    @property
    def nbytes(self) -> int:
        """Bytes allocated by the stored arrays; never more than ``budget_bytes``."""
        return sum(arr.nbytes for store in self._stores.values() for arr in store.values())

    @property
    def size(self) -> int:
        """Observations stored, all tasks."""
        return sum(self.sizes().values())

    def sizes(self) -> dict[int, int]:
        """Observations stored per task."""
        return {task: min(seen, self._capacity) for task, seen in self._seen.items()}

    def seen(self) -> dict[int, int]:
        """Observations offered per task (the reservoir counters)."""
        return dict(self._seen)

    @property
    def tasks(self) -> list[int]:
        """Task ids in the order first seen."""
        return list(self._stores)

    def capacity(self, task: int) -> int:
        """Observations task ``task`` can hold now (equal for all tasks seen so far)."""
        self._check_known([task])
        return self._capacity

    def _capacity_for(self, n_tasks: int, budget_bytes: int | None = None) -> int:
        budget = self.budget_bytes if budget_bytes is None else budget_bytes
        return budget // (n_tasks * self._bytes_per_obs)

    def _check_budget(self, n_tasks: int, budget_bytes: int | None = None) -> None:
        budget = self.budget_bytes if budget_bytes is None else budget_bytes
        if self._capacity_for(n_tasks, budget) < 1:
            raise ValueError(
                f"ReplayMemory: budget_bytes={budget} is too small for one observation per task "
                f"(bytes_per_obs={self._bytes_per_obs}, {n_tasks} task(s) need at least "
                f"{n_tasks * self._bytes_per_obs} bytes)"
            )

    def _check_known(self, tasks: Sequence[int]) -> None:
        unknown = [t for t in tasks if t not in self._stores]
        if unknown:
            raise ValueError(f"ReplayMemory: unknown task(s) {unknown}; tasks seen so far: {self.tasks}")

    # ------------------------------------------------------------------ adding

    def add(self, task: int, obs: dict[str, np.ndarray] | np.ndarray) -> None:
        """Offer a batch of observations of task ``task`` (leading axis = samples, e.g. ``n_envs``).

        Each row goes through the task's reservoir (Algorithm R): the ``i``-th observation offered
        (0-based) is stored if ``i < capacity``, else it replaces slot ``j = rng.integers(0, i + 1)``
        when ``j < capacity``. A new task first shrinks the earlier tasks' reservoirs.
        """
        rows = self._rows(obs)
        batch = len(next(iter(rows.values())))
        if batch == 0:
            return
        task = int(task)
        store = self._stores.get(task)
        if store is None:
            store = self._new_task(task)
        start, cap = self._seen[task], self._capacity
        self._seen[task] = start + batch
        if start + batch <= cap:
            for key, codec in self._codecs.items():
                store[key][start : start + batch] = codec.encode(rows[key])
            return
        src, dst = self._reservoir_slots(start, batch, cap)
        if len(dst) == 0:
            return
        for key, codec in self._codecs.items():
            store[key][dst] = codec.encode(rows[key][src])

    def _reservoir_slots(self, start: int, batch: int, cap: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the batch to store and their slots; of rows aimed at one slot, the last wins."""
        index = np.arange(start, start + batch)
        slots = index.copy()
        over = index >= cap
        slots[over] = self._rng.integers(0, index[over] + 1)
        src = np.flatnonzero(slots < cap)
        dst = slots[src]
        if len(dst) > 1:
            # Later rows overwrite earlier ones, as when the rows are added one at a time.
            _, last = np.unique(dst[::-1], return_index=True)
            keep = len(dst) - 1 - last
            src, dst = src[keep], dst[keep]
        return src, dst

    def _rows(self, obs: Mapping[str, Any] | np.ndarray) -> dict[str, np.ndarray]:
        """The batch as one array per key, shapes checked."""
        if self._dict:
            if not isinstance(obs, Mapping):
                raise ValueError(
                    f"ReplayMemory.add: expected a dict of arrays with keys {list(self._codecs)}"
                )
            missing = [k for k in self._codecs if k not in obs]
            if missing:
                raise ValueError(f"ReplayMemory.add: observation lacks key(s) {missing}")
            rows = {key: np.asarray(obs[key]) for key in self._codecs}
        else:
            rows = {_SINGLE: np.asarray(obs)}
        batch = None
        for key, arr in rows.items():
            shape = self._codecs[key].shape
            if arr.ndim != len(shape) + 1 or arr.shape[1:] != shape:
                name = f"key {key!r}" if self._dict else "observation"
                raise ValueError(
                    f"ReplayMemory.add: {name} has shape {arr.shape}; expected a batch of shape (n, *{shape})"
                )
            if batch is not None and arr.shape[0] != batch:
                raise ValueError(
                    f"ReplayMemory.add: keys have different batch sizes ({batch} and {arr.shape[0]})"
                )
            batch = arr.shape[0]
        return rows

    def _new_task(self, task: int) -> dict[str, np.ndarray]:
        """Register ``task``: shrink the earlier reservoirs, allocate the new one."""
        n_tasks = len(self._stores) + 1
        self._check_budget(n_tasks)
        cap = self._capacity_for(n_tasks)
        for old, store in self._stores.items():
            self._stores[old] = self._shrunk(store, min(self._seen[old], self._capacity), cap)
        self._capacity = cap
        store = {key: codec.allocate(cap) for key, codec in self._codecs.items()}
        self._stores[task] = store
        self._seen[task] = 0
        return store

    def _shrunk(self, store: dict[str, np.ndarray], size: int, cap: int) -> dict[str, np.ndarray]:
        """``store`` reallocated at capacity ``cap``, keeping a uniformly random subset if too full."""
        if size > cap:
            keep = np.sort(self._rng.choice(size, cap, replace=False))
            return {key: np.ascontiguousarray(arr[keep]) for key, arr in store.items()}
        out = {}
        for key, arr in store.items():
            new = self._codecs[key].allocate(cap)
            new[:size] = arr[:size]
            out[key] = new
        return out

    # ------------------------------------------------------------------ sampling

    def sample(
        self, n: int, tasks: Sequence[int] | None = None
    ) -> tuple[dict[str, np.ndarray] | np.ndarray, np.ndarray]:
        """``n`` observations drawn uniformly (with replacement) from the stored ones of ``tasks``.

        Returns the batch, restored to the space's dtypes and shapes, and the task id of each row.
        ``tasks`` defaults to all tasks; ValueError naming them when they hold no observation.
        """
        chosen = self.tasks if tasks is None else list(dict.fromkeys(int(t) for t in tasks))
        self._check_known(chosen)
        sizes = self.sizes()
        counts = np.array([sizes[t] for t in chosen], dtype=np.int64)
        total = int(counts.sum())
        if total == 0:
            raise ValueError(f"ReplayMemory.sample: no stored observations for task(s) {chosen}")
        draw = self._rng.integers(0, total, size=int(n))
        ends = np.cumsum(counts)
        which = np.searchsorted(ends, draw, side="right")
        local = draw - (ends - counts)[which]
        out = {key: np.empty((int(n), *c.shape), dtype=c.dtype) for key, c in self._codecs.items()}
        for i, task in enumerate(chosen):
            if counts[i] == 0:
                continue
            rows = which == i
            sel = local[rows]
            for key, arr in self._stores[task].items():
                out[key][rows] = arr[sel]
        return self._restored(out), np.asarray(chosen, dtype=np.int64)[which]

    def task_sample(self, task: int, n: int) -> dict[str, np.ndarray] | np.ndarray:
        """``n`` observations drawn uniformly (with replacement) from task ``task``'s reservoir."""
        return self.sample(n, [task])[0]

    def _restored(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray] | np.ndarray:
        """Add back the offsets; unwrap a non-Dict space."""
        for key, codec in self._codecs.items():
            if codec.offset:
                out[key] += np.asarray(codec.offset, dtype=codec.dtype)
        return out if self._dict else out[_SINGLE]

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the memory: budget, seed, RNG state, counters and the stored rows."""
        sizes = self.sizes()
        return {
            "version": _FORMAT_VERSION,
            "space": _fingerprint(self._codecs),
            "budget_bytes": self.budget_bytes,
            "seed": self.seed,
            "rng_state": self._rng.bit_generator.state,
            "tasks": self.tasks,
            "seen": [self._seen[t] for t in self.tasks],
            "data": {
                t: {key: arr[: sizes[t]].copy() for key, arr in self._stores[t].items()} for t in self.tasks
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (budget, seed and RNG state included).

        ValueError, leaving the memory unchanged, when the state does not fit this memory's space.
        """
        if state.get("version") != _FORMAT_VERSION:
            raise ValueError(f"ReplayMemory: unsupported state version {state.get('version')!r}")
        if state["space"] != _fingerprint(self._codecs):
            raise ValueError(
                "ReplayMemory: state was saved for another observation space "
                f"(stored layout {state['space']}, this memory's {_fingerprint(self._codecs)})"
            )
        tasks = [int(t) for t in state["tasks"]]
        seen = [int(s) for s in state["seen"]]
        if len(tasks) != len(seen) or len(set(tasks)) != len(tasks):
            raise ValueError("ReplayMemory: state's tasks and counters do not match")
        budget = int(state["budget_bytes"])
        self._check_budget(max(len(tasks), 1), budget)
        cap = self._capacity_for(len(tasks), budget) if tasks else 0
        stores = {
            t: self._restored_store(state["data"][t], min(s, cap), cap)
            for t, s in zip(tasks, seen, strict=True)
        }
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng_state"]
        self.budget_bytes, self.seed = budget, int(state["seed"])
        self._rng, self._capacity, self._stores = rng, cap, stores
        self._seen = dict(zip(tasks, seen, strict=True))

    def _restored_store(self, data: Mapping[str, np.ndarray], size: int, cap: int) -> dict[str, np.ndarray]:
        """A store of capacity ``cap`` holding ``data``, whose arrays must have ``size`` rows."""
        store = {}
        for key, codec in self._codecs.items():
            arr = np.asarray(data[key])
            if arr.shape != (size, *codec.shape) or arr.dtype != codec.store_dtype:
                raise ValueError(
                    f"ReplayMemory: state's {key!r} data has shape {arr.shape} and dtype {arr.dtype}; "
                    f"expected {(size, *codec.shape)} and {codec.store_dtype}"
                )
            new = codec.allocate(cap)
            new[:size] = arr
            store[key] = new
        return store

    def save(self, path: Path) -> Path:
        """Write the memory to one ``.npz`` file, atomically; returns the path written.

        ``.npz`` is appended when ``path`` lacks it. The file is written to a temporary file in the same
        folder, then moved into place with ``os.replace``.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        keys = list(self._codecs)
        arrays = {
            f"data_{i}_{k}": state["data"][t][key]
            for i, t in enumerate(state["tasks"])
            for k, key in enumerate(keys)
        }
        meta = {
            name: state[name]
            for name in ("version", "space", "budget_bytes", "seed", "rng_state", "tasks", "seen")
        }
        meta["keys"] = keys

        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:  # a file object: np.savez would add .npz to a name
                np.savez(f, meta=np.array(json.dumps(meta)), **arrays)

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: Path, observation_space: gymnasium.spaces.Space) -> ReplayMemory:
        """A memory saved by :meth:`save`.

        ValueError naming the file when it is missing, corrupt or was saved for another space.
        """
        path = Path(path)
        try:
            with load_npz(path) as npz:
                meta = json.loads(str(npz["meta"][()]))
                keys = list(meta["keys"])
                data = {
                    t: {key: npz[f"data_{i}_{k}"] for k, key in enumerate(keys)}
                    for i, t in enumerate(meta["tasks"])
                }
            memory = cls(observation_space, budget_bytes=int(meta["budget_bytes"]), seed=int(meta["seed"]))
            memory.load_state_dict({**meta, "data": data})
        except FileNotFoundError as err:
            raise ValueError(f"replay memory file {path} does not exist") from err
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"replay memory file {path} cannot be loaded: {err}") from err
        return memory
