"""The per-algorithm table (``sb3/algos.py``): one row per algorithm, read by every part that
dispatches on the algorithm, and a saved zip recognised from plain JSON."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3

from nb2_agents.envs_util import ACTION_SPACES
from nb2_agents.errors import UsageError
from nb2_agents.evaluation import guess_algo
from nb2_agents.hyperparams import ALGOS as ALGO_CLASSES
from nb2_agents.sb3 import POLICY_FOR_ALGO, algos

MADE = {
    "ppo": (PPO, "CartPole-v1", {"n_steps": 16}),
    "a2c": (A2C, "CartPole-v1", {}),
    "maskable_ppo": (MaskablePPO, "CartPole-v1", {"n_steps": 16}),
    "dqn": (DQN, "CartPole-v1", {"buffer_size": 100}),
    "sac": (SAC, "Pendulum-v1", {"buffer_size": 100}),
    "td3": (TD3, "Pendulum-v1", {"buffer_size": 100}),
}


def test_every_view_of_the_algorithms_is_the_table() -> None:
    assert list(algos.ALGOS) == list(ALGO_CLASSES) == list(ACTION_SPACES)
    for name, row in algos.ALGOS.items():
        assert ALGO_CLASSES[name] is row.cls and ACTION_SPACES[name] == row.action_spaces
        assert POLICY_FOR_ALGO[row.cls] is row.policy and algos.of(row.cls) is row
    assert algos.of(DDPG).name == "td3"  # a TD3 with policy_delay 1
    assert [n for n, row in algos.ALGOS.items() if row.masks_actions] == ["ppo", "a2c", "maskable_ppo"]
    with pytest.raises(UsageError, match=r"--algo 'trpo' is not supported; valid: ppo, a2c"):
        algos.get("trpo")


@pytest.mark.parametrize("name", list(MADE))
def test_a_saved_zip_is_recognised_from_its_plain_data(name: str, tmp_path: Path) -> None:
    """SB3's own MLP policies, with nb2's metadata absent: only the attributes each algorithm saves."""
    cls, env_id, kwargs = MADE[name]
    model = cls("MlpPolicy", env_id, device="cpu", seed=0, **kwargs)
    path = tmp_path / f"{name}.zip"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        data = json.loads(archive.read("data"))
    assert algos.recognise_data(data) == name
    assert guess_algo(path) == name
    parts = algos.optimizers(model.policy)
    assert sorted(parts) == (["actor", "critic"] if name in ("sac", "td3") else ["policy"])


def test_a_zip_no_row_recognises_names_the_valid_algorithms(tmp_path: Path) -> None:
    path = tmp_path / "odd.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data", json.dumps({"learning_rate": 0.1}))
    assert algos.recognise_data({"learning_rate": 0.1}) is None
    with pytest.raises(UsageError, match=r"odd\.zip: cannot tell which algorithm saved it; valid"):
        guess_algo(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(UsageError, match=r"odd\.zip: not an SB3 model zip"):
        guess_algo(path)
