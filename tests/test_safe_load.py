"""Opening a file never runs code from it unless ``--trust-pickle`` says so (``safe_load.py``).

Every pickled field SB3 writes into a model zip, and every tensor file, gets a payload that
writes a marker file when unpickled; each loader must leave the marker unwritten.
"""

from __future__ import annotations

import base64
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

from nb2_agents import safe_files
from nb2_agents.cli import main
from nb2_agents.errors import UsageError
from nb2_agents.evaluation import load_model
from nb2_agents.safe_load import NeedsPickle, load_algorithm, load_tensors, parse_space, saved_space

POLICY_KW = {"preset": "nano"}


class _Payload:
    """Unpickling this writes ``marker``: what a crafted file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"__import__('pathlib').Path({str(self.marker)!r}).write_text('ran')",))


def _save(model: BaseAlgorithm, path: Path) -> Path:
    model.save(path)
    return path


def _rewrite(path: Path, member: str, content: bytes, out: Path) -> Path:
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, content if item.filename == member else src.read(item.filename))
    return out


def _craft_field(path: Path, key: str, marker: Path, out: Path) -> Path:
    """``path`` with the pickle of ``data[key]`` replaced by the payload (its summary kept)."""
    with zipfile.ZipFile(path) as archive:
        data = json.loads(archive.read("data"))
    entry = data[key] if isinstance(data[key], dict) else {}
    entry[":serialized:"] = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    data[key] = entry
    return _rewrite(path, "data", json.dumps(data).encode(), out)


def _actions(model: BaseAlgorithm, n: int = 8) -> np.ndarray:
    space = model.observation_space
    space.seed(0)
    obs = [space.sample() for _ in range(n)]
    batch = {k: np.stack([o[k] for o in obs]) for k in obs[0]} if isinstance(obs[0], dict) else np.stack(obs)
    return model.predict(batch, deterministic=True)[0]


CASES = [
    ("ppo", PPO, "NB2Policy", "CartPole-v1"),
    ("ppo", PPO, "MlpPolicy", "CartPole-v1"),
    ("a2c", A2C, "NB2Policy", "Pendulum-v1"),
    ("dqn", DQN, "NB2Policy", "CartPole-v1"),
    ("dqn", DQN, "MlpPolicy", "CartPole-v1"),
    ("sac", SAC, "NB2Policy", "Pendulum-v1"),
    ("sac", SAC, "MlpPolicy", "Pendulum-v1"),
    ("td3", TD3, "NB2Policy", "Pendulum-v1"),
    ("maskable_ppo", MaskablePPO, "NB2Policy", "CartPole-v1"),
]


@pytest.mark.parametrize(("algo", "cls", "policy", "env"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_round_trip_without_unpickling(tmp_path: Path, algo: str, cls: Any, policy: str, env: str) -> None:
    kwargs: dict[str, Any] = {"policy_kwargs": dict(POLICY_KW)} if policy == "NB2Policy" else {}
    if algo in ("dqn", "sac", "td3"):
        kwargs["buffer_size"] = 1000
    model = cls(policy, env, seed=0, **kwargs)
    path = _save(model, tmp_path / "model.zip")
    loaded, name = load_algorithm(path, device="cpu")
    assert name == algo and type(loaded) is cls and type(loaded.policy) is type(model.policy)
    np.testing.assert_array_equal(_actions(loaded), _actions(model))
    for a, b in zip(loaded.policy.state_dict().values(), model.policy.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert cls.load(path).num_timesteps == loaded.num_timesteps  # SB3's own load still reads it


def test_cnn_and_dict_spaces_come_back_from_their_summaries(tmp_path: Path) -> None:
    image = spaces.Box(0, 255, (3, 16, 16), np.uint8)
    assert saved_space(_summary(image)) == image
    box = spaces.Box(np.array([-1, -2, 0], np.float32), np.array([1, 2, np.inf], np.float32))
    nested = spaces.Dict({"obs": box, "task_id": spaces.Discrete(3), "m": spaces.MultiDiscrete([2, 3])})
    assert saved_space(_summary(nested)) == nested
    assert parse_space("Discrete(3, start=1)") == spaces.Discrete(3, start=1)
    assert parse_space("MultiBinary(4)") == spaces.MultiBinary(4)
    huge = spaces.Box(np.arange(2000, dtype=np.float32), np.arange(2000, dtype=np.float32) + 1)
    assert saved_space(_summary(huge)) is None  # numpy elides the bounds: not rebuilt


def _summary(space: spaces.Space) -> dict[str, Any]:
    from stable_baselines3.common.save_util import data_to_json

    return json.loads(data_to_json({"s": space}))["s"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def ppo_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ppo")
    return _save(PPO("NB2Policy", "CartPole-v1", policy_kwargs=dict(POLICY_KW), seed=0), folder / "ppo.zip")


@pytest.fixture(scope="module")
def dqn_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dqn")
    model = DQN("NB2Policy", "CartPole-v1", policy_kwargs=dict(POLICY_KW), buffer_size=100, seed=0)
    return _save(model, folder / "dqn.zip")


PICKLED = {  # every field SB3 pickles in these zips (and plain ones a crafted file could pickle)
    "ppo": ["policy_class", "lr_schedule", "clip_range", "observation_space", "action_space",
            "rollout_buffer_class", "policy_kwargs", "learning_rate", "ep_info_buffer", "_last_obs"],
    "dqn": ["policy_class", "lr_schedule", "exploration_schedule", "observation_space", "action_space",
            "replay_buffer_class", "train_freq", "action_noise"],
}  # fmt: skip


@pytest.mark.parametrize(("algo", "key"), [(a, k) for a, keys in PICKLED.items() for k in keys])
def test_a_payload_in_any_pickled_field_never_runs(
    ppo_zip: Path, dqn_zip: Path, tmp_path: Path, algo: str, key: str
) -> None:
    marker = tmp_path / "ran"
    original = ppo_zip if algo == "ppo" else dqn_zip
    crafted = _craft_field(original, key, marker, tmp_path / "crafted.zip")
    try:
        loaded = load_model(crafted, device="cpu")
        rebuilt, expected = _actions(loaded.model), _actions((PPO if algo == "ppo" else DQN).load(original))
        np.testing.assert_array_equal(rebuilt, expected)  # rebuilt from the summaries, not unpickled
    except UsageError as err:
        assert "\n" not in str(err) and str(crafted) in str(err) and "--trust-pickle" in str(err)
    assert not marker.exists(), f"the payload in data[{key!r}] ran"


@pytest.mark.parametrize("member", ["policy.pth", "policy.optimizer.pth", "pytorch_variables.pth"])
def test_a_payload_in_a_tensor_member_never_runs(ppo_zip: Path, tmp_path: Path, member: str) -> None:
    marker = tmp_path / "ran"
    buffer = __import__("io").BytesIO()
    torch.save({"weight": torch.zeros(1), "evil": _Payload(marker)}, buffer)
    crafted = _rewrite(ppo_zip, member, buffer.getvalue(), tmp_path / "crafted.zip")
    with pytest.raises(NeedsPickle, match=rf"{member}.*holds more than tensors.*--trust-pickle") as err:
        load_model(crafted, device="cpu")
    assert "\n" not in str(err.value)
    assert not marker.exists()
    with pytest.warns(UserWarning, match="--trust-pickle: unpickling"):
        load_tensors(buffer.getvalue(), crafted, member, trust_pickle=True)
    assert marker.exists()  # the opt-in does what it says


def test_the_cli_refuses_with_one_line_and_trusts_on_request(
    ppo_zip: Path, tmp_path: Path, capsys: Any, recwarn: Any
) -> None:
    marker = tmp_path / "ran"
    buffer = __import__("io").BytesIO()
    torch.save({"evil": _Payload(marker)}, buffer)
    crafted = _rewrite(ppo_zip, "policy.optimizer.pth", buffer.getvalue(), tmp_path / "crafted.zip")
    for command in (
        ["evaluate", str(crafted), "--env", "CartPole-v1", "--episodes", "1"],
        ["info", str(crafted)],
        ["export", str(crafted), "--format", "torchscript", "--out", str(tmp_path / "out.pt")],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--trust-pickle" in err and str(crafted) in err
    assert not marker.exists()
    # the opt-in: SB3's own load, with a warning; it unpickles data (SB3 reads tensors safely itself)
    trusted = _craft_field(ppo_zip, "clip_range", marker, tmp_path / "trusted.zip")
    assert main(["info", str(trusted)]) == 0 and not marker.exists()  # rebuilt from the summary
    assert main(["info", str(trusted), "--trust-pickle"]) == 2  # the payload is no schedule: SB3 fails
    assert marker.exists() and any("unpickling the model zip" in str(w.message) for w in recwarn)


def test_archives_are_checked_before_anything_unpacks(
    ppo_zip: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    traversal = tmp_path / "traversal.zip"
    with zipfile.ZipFile(ppo_zip) as src, zipfile.ZipFile(traversal, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr("../../evil.txt", "x")
    with pytest.raises(UsageError, match="outside the archive"):
        load_model(traversal, device="cpu")

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(ppo_zip) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr("padding.bin", bytes(4 * 2**20))
    monkeypatch.setattr(safe_files, "MAX_UNPACKED_BYTES", 2**20)
    with pytest.raises(UsageError, match="zip bomb"):
        load_model(bomb, device="cpu")
    monkeypatch.undo()

    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(ppo_zip.read_bytes()[: ppo_zip.stat().st_size // 2])
    with pytest.raises(UsageError, match="truncated") as err:
        load_model(truncated, device="cpu")
    assert "\n" not in str(err.value)


def test_npz_archives_are_checked_too(tmp_path: Path) -> None:
    from nb2_agents.retention.replay import ReplayMemory

    path = tmp_path / "replay.npz"
    np.savez(path, meta=np.array("{}"))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("../../outside.npy", b"x")
    with pytest.raises(ValueError, match="outside the archive"):
        ReplayMemory.load(path, spaces.Box(-1, 1, (4,)))


def test_image_and_dict_policies_round_trip(tmp_path: Path) -> None:
    from stable_baselines3.common.envs import FakeImageEnv, SimpleMultiObsEnv

    for policy, env in (("CnnPolicy", FakeImageEnv(screen_height=36, screen_width=36)),
                        ("MultiInputPolicy", SimpleMultiObsEnv())):  # fmt: skip
        model = PPO(policy, env, n_steps=16, batch_size=16, seed=0)
        path = _save(model, tmp_path / f"{policy}.zip")
        loaded, _ = load_algorithm(path, device="cpu")
        assert loaded.observation_space == model.observation_space
        np.testing.assert_array_equal(_actions(loaded), _actions(model))


def test_teachers_and_checkpoints_never_unpickle(ppo_zip: Path, tmp_path: Path) -> None:
    import gymnasium as gym

    from nb2_agents.checkpoint import store
    from nb2_agents.distill.teachers import load_teacher

    marker = tmp_path / "ran"
    buffer = __import__("io").BytesIO()
    torch.save({"evil": _Payload(marker)}, buffer)
    crafted = _rewrite(ppo_zip, "policy.pth", buffer.getvalue(), tmp_path / "crafted.zip")
    env = gym.make("CartPole-v1")
    with pytest.raises(UsageError, match=r"policy\.pth holds more than tensors.*--trust-pickle"):
        load_teacher(crafted, env.observation_space, env.action_space, device="cpu")

    folder = tmp_path / "ckpt" / "100"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text('{"num_timesteps": 100}')
    np.savez(folder / "arrays.npz", x=np.zeros(2))
    (folder / "params.pt").write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="cannot be read"):
        store.read(folder)
    assert not marker.exists()


def test_a_fresh_process_loads_the_same_actions(ppo_zip: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from nb2_agents.evaluation import load_model;"
        "m = load_model(sys.argv[1], device='cpu').model; m.observation_space.seed(0);"
        "obs = np.stack([m.observation_space.sample() for _ in range(8)]);"
        "print(m.predict(obs, deterministic=True)[0].tolist())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ppo_zip)], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == _actions(PPO.load(ppo_zip)).tolist()
