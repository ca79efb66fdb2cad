"""RL-Zoo-style hyperparameter files: policies/<algo>.yaml."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.env_util import make_vec_env

import nb2_agents  # noqa: F401  (registers "NB2Policy")
from nb2_agents.hyperparams import DATA_DIR, Hyperparams, LinearSchedule, load_hyperparams

ROOT = Path(__file__).resolve().parents[1]
PPO_YAML = ROOT / "policies" / "ppo.yaml"


def write(tmp_path: Path, text: str, name: str = "algo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_cartpole_entry() -> None:
    hp = load_hyperparams(PPO, "CartPole-v1", PPO_YAML)
    assert isinstance(hp, Hyperparams)
    assert (hp.n_envs, hp.n_timesteps, hp.policy) == (8, 100_000, "NB2Policy")
    kw = hp.algo_kwargs
    assert kw["n_steps"] == 32 and kw["batch_size"] == 256 and kw["n_epochs"] == 20
    assert kw["gamma"] == 0.98 and kw["gae_lambda"] == 0.8 and kw["ent_coef"] == 0.0
    assert kw["policy_kwargs"] == {"preset": "nano"}
    for key, start in (("learning_rate", 1e-3), ("clip_range", 0.2)):
        schedule = kw[key]
        assert isinstance(schedule, LinearSchedule)
        assert schedule(1.0) == pytest.approx(start)
        assert schedule(0.5) == pytest.approx(start / 2)
        assert schedule(0.0) == 0.0
    assert not set(kw) & {"n_envs", "n_timesteps", "policy"}


def test_packaged_copy_is_the_same_file() -> None:
    packaged = DATA_DIR / "policies" / "ppo.yaml"
    assert packaged.read_text() == PPO_YAML.read_text()
    assert load_hyperparams(PPO, "CartPole-v1", packaged).n_envs == 8


def test_cartpole_entry_builds_ppo() -> None:
    hp = load_hyperparams(PPO, "CartPole-v1", PPO_YAML)
    env = make_vec_env("CartPole-v1", n_envs=hp.n_envs, seed=0)
    model = PPO(hp.policy, env, seed=0, **hp.algo_kwargs)
    assert model.n_steps * model.n_envs == 256
    assert model.lr_schedule(1.0) == pytest.approx(1e-3)
    assert model.clip_range(0.25) == pytest.approx(0.05)
    assert model.policy.nb2_config.d_model == 32
    env.close()


def test_default_entry(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        default:
          n_envs: 4
          n_timesteps: !!float 2e4
          gamma: 0.9
          learning_rate: 0.0003
        Foo-v0:
          gamma: 0.95
        """,
    )
    hp = load_hyperparams(PPO, "Foo-v0", path)
    assert (hp.n_envs, hp.n_timesteps) == (4, 20_000)
    assert hp.algo_kwargs == {"gamma": 0.95, "learning_rate": 0.0003}  # merged over default
    # an env without an entry gets the default
    hp = load_hyperparams(PPO, "Bar-v0", path)
    assert hp.algo_kwargs == {"gamma": 0.9, "learning_rate": 0.0003}
    assert hp.policy == "NB2Policy"


@pytest.mark.parametrize(
    ("value", "start"), [("lin_1e-3", 1e-3), ("lin_0.5", 0.5), ("lin_2", 2.0), ("lin_.25", 0.25)]
)
def test_lin_schedule(tmp_path: Path, value: str, start: float) -> None:
    path = write(tmp_path, f"Foo-v0:\n  learning_rate: {value}\n")
    schedule = load_hyperparams(PPO, "Foo-v0", path).algo_kwargs["learning_rate"]
    assert isinstance(schedule, LinearSchedule)
    assert schedule(1.0) == pytest.approx(start)
    assert schedule(0.2) == pytest.approx(0.2 * start)
    assert repr(schedule) == f"lin_{start:g}"


@pytest.mark.parametrize("value", ["lin_", "lin_abc", "lin_1e-3x"])
def test_bad_schedule(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"Foo-v0:\n  learning_rate: {value}\n")
    with pytest.raises(ValueError) as info:
        load_hyperparams(PPO, "Foo-v0", path)
    msg = str(info.value)
    assert str(path) in msg and "learning_rate" in msg and value in msg


@pytest.mark.parametrize(
    ("algo", "key"), [(PPO, "learning_rat"), (PPO, "buffer_size"), (DQN, "n_epochs"), (SAC, "clip_range")]
)
def test_unknown_key(tmp_path: Path, algo, key: str) -> None:
    path = write(tmp_path, f"Foo-v0:\n  gamma: 0.9\n  {key}: 1\n")
    with pytest.raises(ValueError) as info:
        load_hyperparams(algo, "Foo-v0", path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"Foo-v0].{key}" in msg
    assert algo.__name__ in msg
    assert "gamma" in msg  # lists the valid keys


def test_algorithm_specific_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "Foo-v0:\n  buffer_size: 1000\n  tau: 0.01\n  train_freq: 4\n")
    assert load_hyperparams(DQN, "Foo-v0", path).algo_kwargs == {
        "buffer_size": 1000,
        "tau": 0.01,
        "train_freq": 4,
    }
    assert load_hyperparams(SAC, "Foo-v0", path).algo_kwargs["tau"] == 0.01


def test_unknown_key_in_default_names_the_default_entry(tmp_path: Path) -> None:
    path = write(tmp_path, "default:\n  bogus: 1\nFoo-v0:\n  gamma: 0.9\n")
    with pytest.raises(ValueError, match=r"\[default\]\.bogus"):
        load_hyperparams(PPO, "Foo-v0", path)


def test_unknown_key_in_default_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "default:\n  bogus: 1\nFoo-v0:\n  gamma: 0.9\n")
    with pytest.raises(ValueError, match="bogus") as info:
        load_hyperparams(PPO, "Foo-v0", path)
    assert str(path) in str(info.value)


def test_no_entry_and_no_default(tmp_path: Path) -> None:
    path = write(tmp_path, "Foo-v0:\n  gamma: 0.9\n")
    with pytest.raises(ValueError, match="Bar-v0") as info:
        load_hyperparams(PPO, "Bar-v0", path)
    assert str(path) in str(info.value) and "Foo-v0" in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n"])
def test_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match="mapping"):
        load_hyperparams(PPO, "Foo-v0", path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        load_hyperparams(PPO, "Foo-v0", tmp_path / "missing.yaml")
    path = write(tmp_path, "Foo-v0: [unclosed\n")
    with pytest.raises(ValueError, match="cannot read"):
        load_hyperparams(PPO, "Foo-v0", path)


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(ValueError, match="no entry"):
        load_hyperparams(PPO, "Foo-v0", path)


def test_schedule_keys_per_algorithm(tmp_path: Path) -> None:
    path = write(tmp_path, "Foo-v0:\n  ent_coef: lin_0.01\n")
    assert load_hyperparams(PPO, "Foo-v0", path).algo_kwargs["ent_coef"] == LinearSchedule(0.01)
    with pytest.raises(ValueError) as info:  # SAC's ent_coef is a float or "auto", no schedule
        load_hyperparams(SAC, "Foo-v0", path)
    msg = str(info.value)
    assert str(path) in msg and "ent_coef" in msg and "learning_rate" in msg


def test_repeated_key_is_an_error_not_last_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "Foo-v0:\n  n_steps: 32\n  gamma: 0.9\n  n_steps: 64\n")
    with pytest.raises(ValueError) as info:
        load_hyperparams(PPO, "Foo-v0", path)
    msg = str(info.value)
    assert f"{path}:4" in msg and "'n_steps' is given twice" in msg


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    path = write(tmp_path, "A-v0: &a\n  n_steps: 32\n  gamma: 0.9\nB-v0:\n  <<: *a\n  n_steps: 64\n")
    assert load_hyperparams(PPO, "B-v0", path).algo_kwargs == {"n_steps": 64, "gamma": 0.9}
