"""nb2 export: parity of ONNX / TorchScript files with the PyTorch policy, their sidecars, bad input.

Models are trained for a few hundred steps (or not at all) in temporary folders; each parity
check runs on observations recorded from the env with the model acting.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from benchmarks.parity import record
from nb2_agents import ExportedPolicy, export, train
from nb2_agents.cli import main
from nb2_agents.curriculum.adapter import TaskAdapter, common_spaces
from nb2_agents.curriculum.spec import load_curriculum
from nb2_agents.envs_util import EnvSpec
from nb2_agents.errors import UsageError
from nb2_agents.evaluation import evaluate, load_model
from nb2_agents.export import exporter  # the module; nb2_agents.export is the function
from nb2_agents.export.graph import StaticNB2
from nb2_agents.export.spaces import space_from_json, space_to_json
from nb2_agents.nn.config import get_config
from nb2_agents.nn.model import NB2
from nb2_agents.nn.probes import kept_share
from nb2_agents.runs import save_model

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
FORMATS = [
    pytest.param("onnx", marks=pytest.mark.skipif(not HAS_ONNX, reason="needs the export extra")),
    "torchscript",
]
TINY_PPO = {"n_steps": 64, "batch_size": 64, "n_epochs": 2}
RECORDED = 300
LOGIT_TOL = 1e-4


# --------------------------------------------------------------------------- models and data


def _train(root: Path, env: str, algo: str = "ppo", steps: int = 256, **overrides: Any) -> Path:
    result = train(
        env=env, algo=algo, steps=steps, n_envs=2 if algo == "ppo" else 1, overrides=overrides or TINY_PPO,
        runs_dir=root, eval_freq=0, save_freq=0, final_episodes=1, progress=False, verbose=False, threads=1,
    )  # fmt: skip
    return result.run_dir


def nb2(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2_agents.cli", *map(str, args)], capture_output=True, text=True, env=ENV
    )


def sb3_logits(model: BaseAlgorithm, obs: Any) -> np.ndarray:
    """What SB3's own API says the raw output is (normalised log-probabilities for Discrete)."""
    policy: Any = model.policy
    x, _ = policy.obs_to_tensor(obs)
    with torch.no_grad():
        if isinstance(model, DQN):
            return policy.q_net(x).numpy()
        if isinstance(model, SAC):
            return policy.actor.get_action_dist_params(x)[0].numpy()
        if isinstance(model, TD3):
            return policy.actor(x).numpy()
        dist = policy.get_distribution(x).distribution
        return (dist.logits if isinstance(model.action_space, spaces.Discrete) else dist.mean).numpy()


def assert_parity(model: BaseAlgorithm, file: Path, obs: Any) -> np.ndarray:
    """The exported file's actions equal PyTorch's and its logits agree within 1e-4."""
    exported = ExportedPolicy(file)
    actions, _ = exported.predict(obs)
    expected, _ = model.predict(obs, deterministic=True)
    assert actions.shape == expected.shape
    if isinstance(model.action_space, spaces.Box):  # float32 rescaling: the last bit may differ
        np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-5)
    else:
        np.testing.assert_array_equal(actions, expected)
    _, logits = exported.run(obs)
    reference = sb3_logits(model, obs)
    if isinstance(model.action_space, spaces.Discrete) and not isinstance(model, DQN):
        logits = torch.log_softmax(torch.from_numpy(logits), dim=-1).numpy()
        valid = reference > -1e7  # masked actions sit at -1e8, where float32 steps are ~8
        logits, reference = logits[valid], reference[valid]
    np.testing.assert_allclose(logits, reference, rtol=0, atol=LOGIT_TOL)
    return actions


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BaseAlgorithm, np.ndarray]:
    run = _train(tmp_path_factory.mktemp("cartpole"), "CartPole-v1", steps=512)
    model = load_model(run).model
    vec = EnvSpec("CartPole-v1", {}).make_vec(2, 1)
    return run, model, record(model, RECORDED, vec=vec)


@pytest.fixture(scope="module")
def cartpole_exports(
    cartpole: tuple[Path, BaseAlgorithm, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """The CartPole run's fp32 export in a format, made once: ONNX by ``nb2 export`` in a
    subprocess, as a user would (its terminal output is checked too), TorchScript by the API."""
    done: dict[str, Path] = {}

    def get(fmt: str) -> Path:
        if fmt in done:
            return done[fmt]
        folder = tmp_path_factory.mktemp(f"cartpole-{fmt}")
        if fmt == "onnx":
            out = nb2("export", cartpole[0], "--format", "onnx", "--out", folder)
            assert out.returncode == 0, out.stderr
            assert out.stderr == ""  # no exporter noise on the terminal
            assert out.stdout.startswith(f"wrote {folder / 'model.onnx'} (onnx, ")
            done[fmt] = folder / "model.onnx"
        else:
            done[fmt] = export(cartpole[0], format=fmt, out=folder).path
        return done[fmt]

    return get


@pytest.fixture(scope="module")
def minigrid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BaseAlgorithm, np.ndarray]:
    pytest.importorskip("minigrid")
    env_id = "MiniGrid-Empty-5x5-v0"
    run = _train(tmp_path_factory.mktemp("minigrid"), env_id, steps=128)
    model = load_model(run).model
    return run, model, record(model, 128, vec=EnvSpec(env_id, {}).make_vec(2, 1))


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BaseAlgorithm, np.ndarray]:
    overrides = {"learning_starts": 64, "buffer_size": 512, "batch_size": 32}
    run = _train(tmp_path_factory.mktemp("pendulum"), "Pendulum-v1", algo="sac", steps=96, **overrides)
    model = load_model(run).model
    return run, model, record(model, RECORDED, vec=EnvSpec("Pendulum-v1", {}, "sac").make_vec(2, 1))


@pytest.fixture(scope="module")
def curriculum(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BaseAlgorithm, dict[str, np.ndarray]]:
    """PPO + NB2 on classic-control's adapted tasks: a Dict of obs, obs_mask, task_id, action_mask."""
    spec = load_curriculum("classic-control")
    envs = [gym.make(t.env_id) for t in spec.tasks]
    common = common_spaces(
        spec.task_names(), [e.observation_space for e in envs], [e.action_space for e in envs]
    )
    fns = [
        lambda i=i: Monitor(TaskAdapter(gym.make(spec.tasks[i].env_id), common, i)) for i in range(len(envs))
    ]
    vec = DummyVecEnv(fns)  # type: ignore[arg-type]
    model = PPO("NB2Policy", vec, seed=0, device="cpu", **TINY_PPO)
    model.learn(384)
    path = tmp_path_factory.mktemp("curriculum") / "model.zip"
    save_model(model, path, {"algo": "ppo", "env": None, "curriculum": "classic-control", "preset": "nano"})
    return path, model, record(model, RECORDED, vec=vec)


# --------------------------------------------------------------------------- spaces


@pytest.mark.parametrize(
    "space",
    [
        spaces.Box(-np.inf, np.inf, (4,), np.float32),
        spaces.Box(np.array([-1.0, 0.0]), np.array([1.0, np.inf]), dtype=np.float64),
        spaces.Box(0, 255, (3, 7, 7), np.uint8),
        spaces.Discrete(5, start=1),
        spaces.MultiDiscrete([3, 4]),
        spaces.MultiBinary([2, 3]),
        spaces.Dict({"a": spaces.Discrete(3), "b": spaces.Box(-1, 1, (2,), np.float32)}),
    ],
    ids=lambda s: type(s).__name__,
)
def test_spaces_round_trip_through_plain_json(space: spaces.Space) -> None:
    data = json.loads(json.dumps(space_to_json(space), allow_nan=False))
    assert space_from_json(data) == space


@pytest.mark.parametrize(
    ("space", "where", "message"),
    [
        (
            spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))),
            "observation space",
            "observation space is Tuple",
        ),
        (
            spaces.Dict({"inner": spaces.Dict({"x": spaces.Discrete(2)})}),
            "observation space",
            "key 'inner' is Dict",
        ),
        (spaces.Text(5), "observation space", r"observation space is Text\("),
        (spaces.Dict({"x": spaces.Discrete(2)}), "action space", "action space is Dict"),
    ],
)
def test_unexpressible_space_is_named(space: spaces.Space, where: str, message: str) -> None:
    with pytest.raises(UsageError, match=f"{message}.*support Box, Discrete, MultiDiscrete, MultiBinary"):
        space_to_json(space, where)


def test_export_names_the_space_it_cannot_express(
    cartpole: tuple[Path, BaseAlgorithm, np.ndarray], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run, _, _ = cartpole
    loaded = load_model(run)
    loaded.model.policy.observation_space = spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2)))
    monkeypatch.setattr(exporter, "load_model", lambda *a, **k: loaded)
    with pytest.raises(
        UsageError, match=r"observation space is Tuple\(Discrete\(2\), Discrete\(2\)\): the exported graph"
    ):
        export(run, format="torchscript", out=tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


# --------------------------------------------------------------------------- the static graph


@pytest.mark.parametrize("preset", ["nano", "small"])  # small: a level-0 block after the sampled one
def test_static_graph_matches_nb2_with_token_sampling(preset: str) -> None:
    space = spaces.Box(0, 255, (3, 7, 7), np.uint8)  # a MiniGrid view: 49 tokens in 4 windows
    net = NB2(space, get_config(preset), n_queries=2, check_finite=False).eval()
    with torch.no_grad():
        for p in net.parameters():  # away from the init, where every token scores alike
            p.add_(0.2 * torch.randn_like(p))
        x = torch.as_tensor(np.stack([space.sample() for _ in range(64)])).float()
        expected = net(x).flatten(1)
        kept = kept_share(net, x)
        assert kept is not None and float(kept.mean()) < 0.9  # tokens were dropped
        torch.testing.assert_close(StaticNB2(net)(x), expected, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("fmt", FORMATS)
def test_discrete_parity_cartpole(
    fmt: str, cartpole: tuple[Path, BaseAlgorithm, np.ndarray], cartpole_exports: Callable[[str], Path]
) -> None:
    _, model, obs = cartpole
    path = cartpole_exports(fmt)
    assert_parity(model, path, obs)
    single, _ = ExportedPolicy(path).predict(obs[0])  # one observation, as SB3's predict
    assert single.shape == () and single == model.predict(obs[0], deterministic=True)[0]
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert (meta["format"], meta["int8"], meta["env"], meta["preset"]) == (fmt, False, "CartPole-v1", "nano")
    assert meta["check"]["action_agreement"] == 1.0 and meta["exporter"]["torch"]
    assert meta["algo"] == "ppo" and meta["num_timesteps"] == 512


@pytest.mark.parametrize("fmt", FORMATS)
def test_int8_actions_agree(
    fmt: str,
    cartpole: tuple[Path, BaseAlgorithm, np.ndarray],
    cartpole_exports: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    run, model, obs = cartpole
    fp32 = cartpole_exports(fmt)
    int8 = export(run, format=fmt, int8=True, out=tmp_path)
    assert int8.path.name == f"model.int8{fp32.suffix}"
    assert int8.size_bytes < fp32.stat().st_size
    actions, _ = ExportedPolicy(int8.path).predict(obs)
    expected, _ = model.predict(obs, deterministic=True)
    assert np.mean(actions == expected) >= 0.99
    _, logits = ExportedPolicy(int8.path).run(obs)
    _, ref = ExportedPolicy(fp32).run(obs)
    assert np.abs(logits - ref).max() < 0.05  # weights rounded to 1/127 of their range
    assert json.loads(int8.sidecar.read_text())["int8"] is True


@pytest.mark.parametrize("fmt", FORMATS)
def test_continuous_parity_pendulum_sac(
    fmt: str, pendulum: tuple[Path, BaseAlgorithm, np.ndarray], tmp_path: Path
) -> None:
    run, model, obs = pendulum
    result = export(run, format=fmt, out=tmp_path)
    actions = assert_parity(model, result.path, obs)
    assert np.all(np.abs(actions) <= 2.0)  # tanh output rescaled to Pendulum's [-2, 2]
    assert "tanh" in json.loads(result.sidecar.read_text())["action"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_dict_parity_curriculum(
    fmt: str, curriculum: tuple[Path, BaseAlgorithm, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    path, model, obs = curriculum
    result = export(path, format=fmt, out=tmp_path)
    assert_parity(model, result.path, obs)
    meta = json.loads(result.sidecar.read_text())
    assert [i["name"] for i in meta["inputs"]] == ["action_mask", "obs", "obs_mask", "task_id"]  # key order
    assert meta["tasks"] == {"0": "CartPole-v1", "1": "Acrobot-v1", "2": "MountainCar-v0"}
    actions, _ = ExportedPolicy(result.path).predict(obs)
    assert np.all(actions[obs["task_id"] == 0] < 2)  # CartPole's third action is masked


@pytest.mark.parametrize("fmt", FORMATS)
def test_image_parity_minigrid(
    fmt: str, minigrid: tuple[Path, BaseAlgorithm, np.ndarray], tmp_path: Path
) -> None:
    """uint8 images, channels-first after VecTransposeImage; adaptive token sampling runs."""
    run, model, obs = minigrid
    result = export(run, format=fmt, out=tmp_path / "export")
    assert result.path == tmp_path / "export" / f"model{result.path.suffix}"
    assert_parity(model, result.path, obs)
    hwc, _ = ExportedPolicy(result.path).predict(obs.transpose(0, 2, 3, 1))  # as the env hands them out
    np.testing.assert_array_equal(hwc, model.predict(obs, deterministic=True)[0])


@pytest.mark.parametrize(
    ("algo", "policy", "env_id"),
    [
        (DQN, "NB2Policy", "CartPole-v1"),
        (TD3, "NB2Policy", "Pendulum-v1"),
        (PPO, "NB2Policy", "Pendulum-v1"),
        (A2C, "MlpPolicy", "CartPole-v1"),
        (PPO, "MlpPolicy", "Pendulum-v1"),
        (PPO, "nano-flat", "CartPole-v1"),
    ],
    ids=lambda x: getattr(x, "__name__", x),
)
def test_other_policies_parity(algo: type[BaseAlgorithm], policy: str, env_id: str, tmp_path: Path) -> None:
    """Q-networks, TD3 actors, Gaussian means clipped to the bounds, SB3's own Mlp policies, and
    the flat-attention baseline (``policy`` names its preset)."""
    env = EnvSpec(env_id, {}).make_vec(1, 0)
    kwargs = {"policy_kwargs": {"preset": policy}} if policy.endswith("-flat") else {}
    model = algo("NB2Policy" if kwargs else policy, env, seed=0, device="cpu", **kwargs)
    if isinstance(model, PPO) and isinstance(model.action_space, spaces.Box):
        with torch.no_grad():  # a mean far outside [-2, 2], so clipping matters
            model.policy.action_net.bias.fill_(3.0)  # type: ignore[union-attr]
    path = save_model(model, tmp_path / "model.zip", {"algo": algo.__name__.lower(), "env": env_id})
    result = export(path, format="torchscript")
    assert result.path == tmp_path / "model.pt"
    assert_parity(model, result.path, record(model, 64, vec=env))


# --------------------------------------------------------------------------- loading and evaluating


@pytest.mark.parametrize("fmt", FORMATS)
def test_evaluate_exported_file_gives_the_models_return(
    fmt: str,
    cartpole: tuple[Path, BaseAlgorithm, np.ndarray],
    cartpole_exports: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The acceptance: ``nb2 export RUN`` then ``nb2 evaluate FILE --json``: the model's return."""
    run, path = cartpole[0], cartpole_exports(fmt)
    capsys.readouterr()
    assert main(["evaluate", str(path), "--json", "--episodes", "3"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(run), "--json", "--episodes", "3"]) == 0
    pytorch = json.loads(capsys.readouterr().out)
    assert exported["mean_return"] == pytorch["mean_return"] and exported["returns"] == pytorch["returns"]
    assert (exported["env"], exported["seed"], exported["algo"]) == ("CartPole-v1", 10_000, "ppo")
    assert exported["model"] == str(path) and exported["steps_trained"] == 512


def test_missing_sidecar_is_an_error(
    cartpole: tuple[Path, BaseAlgorithm, np.ndarray], tmp_path: Path
) -> None:
    run, _, _ = cartpole
    result = export(run, format="torchscript", out=tmp_path / "a.pt")
    result.sidecar.unlink()
    with pytest.raises(UsageError, match=r"a\.pt has no metadata sidecar .*a\.pt\.json"):
        ExportedPolicy(result.path)


def test_mismatched_sidecar_is_an_error(
    cartpole: tuple[Path, BaseAlgorithm, np.ndarray], tmp_path: Path
) -> None:
    run, _, _ = cartpole
    fp32 = export(run, format="torchscript", out=tmp_path / "a.pt")
    int8 = export(run, format="torchscript", int8=True, out=tmp_path / "b.pt")
    shutil.copy(int8.sidecar, fp32.sidecar)  # the sidecar of another export
    with pytest.raises(UsageError, match=r"a\.pt does not match its metadata sidecar .*sha256"):
        ExportedPolicy(fp32.path)
    int8.sidecar.write_text("{}")
    with pytest.raises(UsageError, match=r"lacks schema, format"):
        ExportedPolicy(int8.path)


def test_env_with_other_spaces_is_an_error(
    cartpole: tuple[Path, BaseAlgorithm, np.ndarray], tmp_path: Path
) -> None:
    run, _, _ = cartpole
    result = export(run, format="torchscript", out=tmp_path)
    with pytest.raises(UsageError, match=r"Acrobot-v1's observations Box.* do not match .*model\.pt's Box"):
        evaluate(result.path, env="Acrobot-v1", episodes=1)
    with pytest.raises(UsageError, match=r"Acrobot-v1's observations .* do not match"):
        ExportedPolicy(result.path, env=gym.make("Acrobot-v1"))
    policy = ExportedPolicy(result.path, env=gym.make("CartPole-v1"))
    with pytest.raises(UsageError, match=r"input 'obs' expects shape \(4,\)"):
        policy.predict(np.zeros((2, 6), np.float32))
    with pytest.raises(UsageError, match="deterministic policy only"):
        policy.predict(np.zeros(4, np.float32), deterministic=False)


def test_bad_format_and_out_are_errors(
    cartpole: tuple[Path, BaseAlgorithm, np.ndarray], tmp_path: Path
) -> None:
    run, _, _ = cartpole
    with pytest.raises(UsageError, match="unknown export format 'tflite'; valid formats: onnx, torchscript"):
        export(run, format="tflite")
    with pytest.raises(UsageError, match=r"--out .*m\.txt: a torchscript file name ends in \.pt or \.ts"):
        export(run, format="torchscript", out=tmp_path / "m.txt")
    with pytest.raises(UsageError, match=r"m\.pt is a torchscript file name; for --format onnx use \.onnx"):
        export(run, format="onnx", out=tmp_path / "m.pt")
    with pytest.raises(UsageError, match=r"m\.onnx does not exist"):
        ExportedPolicy(tmp_path / "m.onnx")


# --------------------------------------------------------------------------- the command line


def test_cli_export_torchscript_int8_json(
    cartpole: tuple[Path, BaseAlgorithm, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(cartpole[0]), "--out", str(tmp_path / "policy.pt"), "--int8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["format"] == "torchscript" and result["int8"] is True  # the format from --out
    assert result["path"] == str(tmp_path / "policy.pt") and Path(result["sidecar"]).is_file()


def test_cli_unknown_format_lists_the_valid_ones(
    cartpole: tuple[Path, BaseAlgorithm, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(cartpole[0]), "--format", "tflite"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "nb2 export: error: argument --format: invalid choice: 'tflite'" in err
    assert "'onnx', 'torchscript'" in err and len(err.strip().splitlines()) == 1


def test_cli_missing_sidecar_exits_2(
    cartpole: tuple[Path, BaseAlgorithm, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(cartpole[0]), "--format", "torchscript", "--out", str(tmp_path / "p.pt")]) == 0
    (tmp_path / "p.pt.json").unlink()
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "p.pt"), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nb2 evaluate: error: ") and "p.pt has no metadata sidecar" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["export", str(tmp_path / "nothing.zip")]) == 2
    assert "nb2 export: error: model file" in capsys.readouterr().err
