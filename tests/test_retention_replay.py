"""ReplayMemory: reservoir uniformity, byte budget, compression, sampling and save / load."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces

from nb2_agents.retention.replay import ReplayMemory

N_STREAM = 2000
CAPACITY = 100
TRIALS = 300


def _curriculum_space() -> spaces.Dict:
    """The padded vector observation of a curriculum of 3 tasks with masked actions."""
    return spaces.Dict(
        {
            "obs": spaces.Box(-np.inf, np.inf, (6,), np.float32),
            "obs_mask": spaces.MultiBinary(6),
            "task_id": spaces.Discrete(3),
            "action_mask": spaces.MultiBinary(3),
        }
    )


def _curriculum_batch(n: int, task: int, first: int = 0) -> dict[str, np.ndarray]:
    """``n`` observations of task ``task``; ``obs[:, 0]`` numbers them from ``first`` (exact in float16)."""
    rng = np.random.default_rng(first + 1000 * task)
    obs = rng.normal(size=(n, 6)).astype(np.float32) * 10
    obs[:, 0] = np.arange(first, first + n)
    return {
        "obs": obs,
        "obs_mask": np.tile(np.array([1, 1, 1, 1, 0, 0], np.int8), (n, 1)),
        "task_id": np.full(n, task, np.int64),
        "action_mask": np.tile(np.array([1, 1, 0], np.int8), (n, 1)),
    }


def _chi_square_uniform(counts: np.ndarray, expected: float) -> tuple[float, float]:
    """Chi-square statistic of ``counts`` against ``expected`` per cell, and a tolerant upper threshold.

    The threshold is the normal approximation of the chi-square distribution, mean ``df`` plus five
    standard deviations ``sqrt(2 df)``: a uniform scheme passes it with overwhelming probability.
    """
    stat = float(((counts - expected) ** 2 / expected).sum())
    df = len(counts) - 1
    return stat, df + 5 * math.sqrt(2 * df)


def _stream(memory: ReplayMemory, task: int, first: int, last: int, batch: int = 13) -> None:
    """Offer items ``first..last-1`` (as Discrete observations) to ``task`` in batches."""
    for start in range(first, last, batch):
        memory.add(task, np.arange(start, min(start + batch, last)))


def _stored_items(memory: ReplayMemory, task: int) -> np.ndarray:
    """Every stored observation of ``task`` (a Discrete space), read from the state."""
    return np.asarray(memory.state_dict()["data"][task][""], dtype=np.int64)


# ---------------------------------------------------------------- reservoir


def _inclusion_counts(scheme: Callable[[int], np.ndarray]) -> np.ndarray:
    counts = np.zeros(N_STREAM, dtype=np.int64)
    for trial in range(TRIALS):
        kept = scheme(trial)
        assert len(kept) == CAPACITY and len(np.unique(kept)) == CAPACITY
        counts[kept] += 1
    return counts


def _reservoir(trial: int) -> np.ndarray:
    memory = ReplayMemory(spaces.Discrete(N_STREAM), budget_bytes=CAPACITY * 2, seed=trial)
    assert memory.bytes_per_obs == 2  # uint16 holds 0..1999
    _stream(memory, 0, 0, N_STREAM)
    assert memory.capacity(0) == CAPACITY and memory.sizes() == {0: CAPACITY}
    assert memory.seen() == {0: N_STREAM}
    return _stored_items(memory, 0)


def _random_slot(trial: int) -> np.ndarray:
    """A biased scheme: every later item overwrites a random slot (favours recent items)."""
    rng = np.random.default_rng(trial)
    kept = np.arange(CAPACITY)
    for item in range(CAPACITY, N_STREAM):
        kept[rng.integers(0, CAPACITY)] = item
    return kept


def test_reservoir_inclusion_frequency_is_uniform() -> None:
    counts = _inclusion_counts(_reservoir)
    stat, threshold = _chi_square_uniform(counts, TRIALS * CAPACITY / N_STREAM)
    assert stat < threshold, (stat, threshold)
    # Early and late halves of the stream are kept equally often.
    halves = counts.reshape(2, -1).sum(axis=1) / (TRIALS * CAPACITY)
    assert np.allclose(halves, 0.5, atol=0.03), halves


@pytest.mark.parametrize(
    "scheme",
    [
        lambda trial: np.arange(CAPACITY),  # keep first
        lambda trial: np.arange(N_STREAM - CAPACITY, N_STREAM),  # keep last
        _random_slot,
    ],
    ids=["keep-first", "keep-last", "random-slot"],
)
def test_uniformity_check_rejects_biased_schemes(scheme: Callable[[int], np.ndarray]) -> None:
    counts = _inclusion_counts(scheme)
    stat, threshold = _chi_square_uniform(counts, TRIALS * CAPACITY / N_STREAM)
    assert stat > threshold


def test_shrinking_keeps_each_task_uniform() -> None:
    """Task 0 shrinks when task 1 appears, then goes on: still a uniform sample of its whole stream."""
    counts = np.zeros(N_STREAM, dtype=np.int64)
    for trial in range(TRIALS):
        memory = ReplayMemory(spaces.Discrete(N_STREAM), budget_bytes=2 * CAPACITY * 2, seed=trial)
        _stream(memory, 0, 0, N_STREAM // 2)
        assert memory.sizes() == {0: 2 * CAPACITY}
        memory.add(1, np.array([7]))
        assert memory.sizes() == {0: CAPACITY, 1: 1}
        _stream(memory, 0, N_STREAM // 2, N_STREAM)
        kept = _stored_items(memory, 0)
        assert len(np.unique(kept)) == CAPACITY
        counts[kept] += 1
    stat, threshold = _chi_square_uniform(counts, TRIALS * CAPACITY / N_STREAM)
    assert stat < threshold, (stat, threshold)


def _algorithm_r(seed: int, items: np.ndarray, capacity: int) -> np.ndarray:
    """Reference Algorithm R, one item at a time."""
    rng = np.random.default_rng(seed)
    kept: list[int] = []
    for i, item in enumerate(items.tolist()):
        if i < capacity:
            kept.append(item)
        else:
            j = int(rng.integers(0, i + 1))
            if j < capacity:
                kept[j] = item
    return np.asarray(kept)


@pytest.mark.parametrize("batch", [1, 3, 16, 64])
def test_batched_add_matches_algorithm_r_row_by_row(batch: int) -> None:
    """Rows of one batch aimed at the same slot: the later one wins, as in sequential Algorithm R."""
    items = np.arange(500)
    memory = ReplayMemory(spaces.Discrete(500), budget_bytes=20 * 2, seed=5)
    _stream(memory, 0, 0, len(items), batch=batch)
    np.testing.assert_array_equal(_stored_items(memory, 0), _algorithm_r(5, items, 20))


# ---------------------------------------------------------------- budget and compression


def test_bytes_per_obs_and_compressed_dtypes_of_a_curriculum_dict() -> None:
    memory = ReplayMemory(_curriculum_space(), budget_bytes=10_000)
    # obs: 6 x float16 = 12, obs_mask: 6 x uint8 = 6, task_id: uint8 = 1, action_mask: 3 x uint8 = 3.
    assert memory.bytes_per_obs == 12 + 6 + 1 + 3 == 22
    memory.add(0, _curriculum_batch(4, 0))
    data = memory.state_dict()["data"][0]
    assert data["obs"].dtype == np.float16
    assert data["obs_mask"].dtype == np.uint8 and data["action_mask"].dtype == np.uint8
    assert np.issubdtype(data["task_id"].dtype, np.integer) and data["task_id"].dtype.itemsize == 1


@pytest.mark.parametrize(
    ("space", "stored", "bytes_per_obs"),
    [
        (spaces.Box(0, 255, (7, 7, 3), np.uint8), np.uint8, 147),
        (spaces.Box(-1, 1, (4,), np.float64), np.float16, 8),
        (spaces.Box(-5, 5, (2,), np.int32), np.int32, 8),
        (spaces.MultiBinary(5), np.uint8, 5),
        (spaces.Discrete(1000), np.uint16, 2),
        (spaces.MultiDiscrete([3, 4]), np.int16, 4),
        (spaces.MultiDiscrete([3, 100_000]), np.int32, 8),
    ],
)
def test_compression_per_space(space: spaces.Space, stored: type, bytes_per_obs: int) -> None:
    memory = ReplayMemory(space, budget_bytes=1000)
    assert memory.bytes_per_obs == bytes_per_obs
    batch = np.stack([space.sample() for _ in range(5)])
    memory.add(0, batch)
    assert memory.state_dict()["data"][0][""].dtype == stored
    out = memory.task_sample(0, 8)
    assert isinstance(out, np.ndarray) and out.dtype == space.dtype and out.shape == (8, *(space.shape or ()))
    assert all(space.contains(row) for row in out)


def test_budget_is_split_equally_and_never_exceeded() -> None:
    budget = 22 * 300 + 17
    memory = ReplayMemory(_curriculum_space(), budget_bytes=budget, seed=1)
    capacities = []
    for task in range(3):
        for step in range(40):
            memory.add(task, _curriculum_batch(16, task, first=16 * step))
            assert memory.nbytes <= budget
        n_tasks = task + 1
        expected = budget // (n_tasks * 22)
        assert [memory.capacity(t) for t in memory.tasks] == [expected] * n_tasks
        assert memory.sizes() == dict.fromkeys(range(n_tasks), expected)
        assert memory.nbytes == n_tasks * expected * 22
        capacities.append(expected)
    assert capacities == [300, 150, 100]
    assert memory.tasks == [0, 1, 2] and memory.size == 300
    assert memory.seen() == dict.fromkeys(range(3), 640)


def test_budget_too_small_names_budget_bytes_per_obs_and_tasks() -> None:
    with pytest.raises(ValueError, match=r"budget_bytes=21.*bytes_per_obs=22.*1 task"):
        ReplayMemory(_curriculum_space(), budget_bytes=21)
    memory = ReplayMemory(_curriculum_space(), budget_bytes=50)
    memory.add(0, _curriculum_batch(3, 0))
    memory.add(1, _curriculum_batch(3, 1))
    with pytest.raises(ValueError, match=r"budget_bytes=50.*bytes_per_obs=22.*3 task"):
        memory.add(2, _curriculum_batch(3, 2))
    assert memory.tasks == [0, 1] and memory.sizes() == {0: 1, 1: 1}


def test_add_rejects_bad_batches() -> None:
    memory = ReplayMemory(_curriculum_space(), budget_bytes=1000)
    batch = _curriculum_batch(2, 0)
    with pytest.raises(ValueError, match="lacks key"):
        memory.add(0, {k: v for k, v in batch.items() if k != "obs_mask"})
    with pytest.raises(ValueError, match="'obs' has shape"):
        memory.add(0, {**batch, "obs": batch["obs"][0]})
    with pytest.raises(ValueError, match="batch sizes"):
        memory.add(0, {**batch, "task_id": np.zeros(3, np.int64)})
    with pytest.raises(ValueError, match="flat Dict"):
        ReplayMemory(spaces.Dict({"a": spaces.Dict({"b": spaces.Discrete(2)})}))
    assert memory.tasks == []


# ---------------------------------------------------------------- sampling


def test_sample_restores_dtypes_shapes_and_values() -> None:
    space = _curriculum_space()
    memory = ReplayMemory(space, budget_bytes=22 * 3 * 50, seed=2)
    added = {task: _curriculum_batch(30, task) for task in range(3)}
    for task, batch in added.items():
        memory.add(task, batch)
    obs, task_ids = memory.sample(200, tasks=[0, 2])
    assert isinstance(obs, dict) and list(obs) == list(space.spaces)
    assert set(task_ids.tolist()) == {0, 2} and task_ids.shape == (200,)
    for key, sub in space.spaces.items():
        assert obs[key].dtype == sub.dtype and obs[key].shape == (200, *(sub.shape or ()))
    np.testing.assert_array_equal(obs["task_id"], task_ids)
    for row, task in enumerate(task_ids):
        original = {k: v[int(obs["obs"][row, 0])] for k, v in added[int(task)].items()}
        np.testing.assert_allclose(obs["obs"][row], original["obs"], rtol=2**-10, atol=1e-3)
        for key in ("obs_mask", "task_id", "action_mask"):
            np.testing.assert_array_equal(obs[key][row], original[key])
    assert all(space.contains({k: v[row] for k, v in obs.items()}) for row in range(5))


def test_sample_is_uniform_over_stored_observations() -> None:
    memory = ReplayMemory(spaces.Discrete(100), budget_bytes=60, seed=3)
    memory.add(0, np.arange(60))  # 60 offered, 60 stored
    memory.add(1, np.arange(10))  # task 0 shrinks to 60 // 2 = 30
    assert memory.sizes() == {0: 30, 1: 10}
    _, tasks = memory.sample(40_000)
    assert abs(np.mean(tasks == 0) - 0.75) < 0.01
    values = memory.task_sample(1, 20_000)
    assert isinstance(values, np.ndarray)
    stat, threshold = _chi_square_uniform(np.bincount(values, minlength=10).astype(float), 2000.0)
    assert stat < threshold


def test_sample_errors_and_discrete_offset() -> None:
    memory = ReplayMemory(spaces.Discrete(4, start=-2), budget_bytes=100)
    with pytest.raises(ValueError, match=r"no stored observations for task\(s\) \[\]"):
        memory.sample(3)
    memory.add(5, np.array([-2, 1, 0]))
    with pytest.raises(ValueError, match=r"unknown task\(s\) \[6\]"):
        memory.sample(3, tasks=[6])
    values = memory.task_sample(5, 50)
    assert isinstance(values, np.ndarray)
    assert set(values.tolist()) == {-2, 0, 1} and values.dtype == np.int64
    obs, tasks = memory.sample(0)
    assert isinstance(obs, np.ndarray) and obs.shape == (0,) and tasks.shape == (0,)


def test_float16_overflow_is_clipped() -> None:
    memory = ReplayMemory(spaces.Box(-np.inf, np.inf, (2,), np.float32), budget_bytes=100)
    memory.add(0, np.array([[1e6, -1e6]], np.float32))
    out = memory.task_sample(0, 1)
    assert isinstance(out, np.ndarray) and np.all(np.isfinite(out))


# ---------------------------------------------------------------- save / load


def _filled_memory() -> ReplayMemory:
    memory = ReplayMemory(_curriculum_space(), budget_bytes=22 * 2 * 40, seed=9)
    for step in range(10):
        memory.add(0, _curriculum_batch(8, 0, first=8 * step))
    for step in range(3):
        memory.add(1, _curriculum_batch(8, 1, first=8 * step))
    return memory


def _assert_same(a: ReplayMemory, b: ReplayMemory) -> None:
    assert (a.tasks, a.seen(), a.sizes(), a.budget_bytes, a.seed) == (
        b.tasks,
        b.seen(),
        b.sizes(),
        b.budget_bytes,
        b.seed,
    )
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["rng_state"] == sb["rng_state"]
    for task in a.tasks:
        for key in sa["data"][task]:
            np.testing.assert_array_equal(sa["data"][task][key], sb["data"][task][key])


def test_save_load_round_trip_and_identical_behaviour(tmp_path: Path) -> None:
    memory = _filled_memory()
    path = memory.save(tmp_path / "replay")
    assert path == tmp_path / "replay.npz" and sorted(p.name for p in tmp_path.iterdir()) == ["replay.npz"]
    loaded = ReplayMemory.load(path, _curriculum_space())
    _assert_same(memory, loaded)
    assert loaded.nbytes == memory.nbytes
    for m in (memory, loaded):
        m.add(1, _curriculum_batch(40, 1, first=24))
        m.add(2, _curriculum_batch(16, 2))
    _assert_same(memory, loaded)
    (oa, ta), (ob, tb) = memory.sample(64), loaded.sample(64)
    np.testing.assert_array_equal(ta, tb)
    assert isinstance(oa, dict) and isinstance(ob, dict)
    for key in oa:
        np.testing.assert_array_equal(oa[key], ob[key])
    # Saving again replaces the file atomically and leaves no temporary file.
    assert loaded.save(path) == path and [p.name for p in tmp_path.iterdir()] == ["replay.npz"]


def test_state_dict_round_trip_in_memory() -> None:
    memory = _filled_memory()
    other = ReplayMemory(_curriculum_space(), seed=123)
    other.load_state_dict(memory.state_dict())
    _assert_same(memory, other)
    bad = memory.state_dict()
    bad["data"][1]["obs"] = bad["data"][1]["obs"][:-1]
    bad["budget_bytes"] = 10**6
    with pytest.raises(ValueError, match="data has shape"):
        other.load_state_dict(bad)
    _assert_same(memory, other)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.npz"
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        ReplayMemory.load(missing, _curriculum_space())
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match=re.escape(str(corrupt))):
        ReplayMemory.load(corrupt, _curriculum_space())
    path = _filled_memory().save(tmp_path / "good.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ValueError, match=re.escape(str(truncated))):
        ReplayMemory.load(truncated, _curriculum_space())
    other_space = spaces.Dict({**_curriculum_space().spaces, "task_id": spaces.Discrete(4)})
    with pytest.raises(ValueError, match=r"good\.npz.*another observation space"):
        ReplayMemory.load(path, other_space)
