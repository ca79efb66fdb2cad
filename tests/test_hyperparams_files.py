"""The shipped hyperparameter files and presets: every entry loads, presets agree with the code."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import nb2_agents  # noqa: F401  (registers "NB2Policy")
from nb2_agents.envs_util import ACTION_SPACES, check_algo, check_env_id
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import (
    ALGOS,
    DATA_DIR,
    load_hyperparams,
    parse_assignment,
    parse_steps,
    read_yaml,
    set_dotted,
)
from nb2_agents.nn.config import PRESETS, NB2Config, load_presets
from nb2_agents.runs import atomic_write

POLICIES = Path(__file__).resolve().parents[1] / "policies"
TUNED = ["CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1", "MiniGrid-Empty-5x5-v0",
         "MiniGrid-DoorKey-5x5-v0", "MiniGrid-Unlock-v0"]  # fmt: skip
ENTRIES = [(algo, env) for algo in ALGOS for env in read_yaml(POLICIES / f"{algo}.yaml")]


@pytest.mark.parametrize(("algo", "env"), ENTRIES, ids=[f"{a}:{e}" for a, e in ENTRIES])
def test_every_entry_loads(algo: str, env: str) -> None:
    hp = load_hyperparams(ALGOS[algo], env, DATA_DIR / "policies" / f"{algo}.yaml")
    assert hp.policy == "NB2Policy" and hp.n_envs >= 1 and hp.n_timesteps >= 1
    preset = (hp.algo_kwargs.get("policy_kwargs") or {}).get("preset", "nano")
    assert preset in PRESETS


def test_each_required_env_has_a_tuned_entry() -> None:
    for env in TUNED:
        algos = [algo for algo, e in ENTRIES if e == env]
        assert algos, f"no entry for {env}"


def test_presets_come_from_presets_yaml() -> None:
    data = read_yaml(POLICIES / "presets.yaml")
    assert sorted(data) == sorted(PRESETS)
    for name, cfg in PRESETS.items():
        assert data[name] == dataclasses.asdict(cfg), name
        assert NB2Config(**data[name]) == cfg


def test_bad_preset_file_names_file_and_preset(tmp_path: Path) -> None:
    path = tmp_path / "presets.yaml"
    path.write_text("tiny:\n  d_model: 30\n  n_heads: 4\n")
    with pytest.raises(ValueError, match=r"presets.yaml \[tiny\].*divisible"):
        load_presets(path)


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("100000", 100_000),
        ("1e5", 100_000),
        ("100k", 100_000),
        ("1.5M", 1_500_000),
        ("100_000", 100_000),
        (256, 256),
    ],
)
def test_parse_steps(text: str | int, steps: int) -> None:
    assert parse_steps(text) == steps


@pytest.mark.parametrize("text", ["0", "-5", "1.5", "abc", "10x", "", "1e-3"])
def test_parse_steps_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="100k"):
        parse_steps(text)


def test_set_assignments() -> None:
    entry: dict = {"policy_kwargs": {"preset": "nano"}}
    for text in (
        "n_steps=64",
        "learning_rate=1e-4",
        "policy_kwargs.nb2_kwargs.d_model=48",
        "clip_range=lin_0.1",
    ):
        set_dotted(entry, *parse_assignment(text))
    assert entry == {
        "policy_kwargs": {"preset": "nano", "nb2_kwargs": {"d_model": 48}},
        "n_steps": 64,
        "learning_rate": 1e-4,  # YAML 1.1 would read "1e-4" as text
        "clip_range": "lin_0.1",
    }


def test_env_checks() -> None:
    check_env_id("CartPole-v1")
    with pytest.raises(UsageError, match="did you mean CartPole-v1"):
        check_env_id("cartpole-v1")
    import gymnasium as gym

    check_algo("dqn", "CartPole-v1", gym.spaces.Discrete(2))
    for algo, spaces in ACTION_SPACES.items():
        if gym.spaces.Box not in spaces:
            with pytest.raises(UsageError, match="valid pairs"):
                check_algo(algo, "Pendulum-v1", gym.spaces.Box(-1, 1, (1,)))


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "eval.json"
    target.write_text("good")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, fail)
    assert target.read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["eval.json"]
