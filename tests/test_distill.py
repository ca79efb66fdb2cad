"""Knowledge distillation: the loss math by hand, safe teacher loading for every algorithm, the
teachers' labels in a curriculum's shared spaces, agreement rising on CartPole, each bad input,
and ``nb2 distill`` end to end on tiny budgets."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from gymnasium import spaces
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from nb2_agents import distill
from nb2_agents.curriculum.adapter import TaskAdapter, common_spaces
from nb2_agents.distill.labels import Labeler
from nb2_agents.distill.losses import (
    Targets,
    action_mse,
    agreement,
    categorical_kl,
    distillation_loss,
    gaussian_kl,
    q_value_probs,
    tempered_probs,
    value_loss,
)
from nb2_agents.distill.plan import PURE_HYPERPARAMS, Options, make_plan
from nb2_agents.distill.policies import Outputs
from nb2_agents.distill.student import build_student
from nb2_agents.distill.teachers import load_teacher, resolve_teacher_path
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import ALGOS, parse_entry
from nb2_agents.sb3.sb3_zip import NeedsUnpickling

CARTPOLE_WEIGHTS = (0.05, 0.2, 1.0, 1.0)
"""Push right when 0.05 x + 0.2 x' + θ + θ' > 0: balances CartPole for 500 steps."""


# ---- the loss math, by hand -------------------------------------------------------------------------


def test_categorical_kl_by_hand() -> None:
    p_t, p_s = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.25, 0.75]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert categorical_kl(p_t, p_s.log()).item() == pytest.approx(expected, rel=1e-6)
    # an action the teacher never takes (a padded / masked one) adds nothing, even at log p_S = -1e8
    kl = categorical_kl(torch.tensor([[1.0, 0.0]]), torch.tensor([[math.log(0.8), -1e8]]))
    assert kl.item() == pytest.approx(-math.log(0.8), rel=1e-6)
    assert categorical_kl(p_t, p_t.log()).item() == pytest.approx(0.0, abs=1e-7)


def test_temperature_and_q_values() -> None:
    q = torch.tensor([[1.0, 2.0]])
    e2 = math.exp(2.0)  # softmax(Q / 0.5) = softmax([2, 4])
    assert q_value_probs(q, 0.5)[0].tolist() == pytest.approx([1 / (1 + e2), e2 / (1 + e2)], rel=1e-6)
    assert tempered_probs(q, 1e4)[0].tolist() == pytest.approx([0.5, 0.5], abs=1e-4)  # hot: uniform
    assert tempered_probs(q, 1e-3)[0].tolist() == pytest.approx([0.0, 1.0], abs=1e-6)  # cold: argmax
    with pytest.raises(ValueError, match="temperature"):
        tempered_probs(q, 0.0)


def test_gaussian_kl_by_hand() -> None:
    # N(0, 1) ‖ N(1, 2²) = log 2 + (1 + 1) / (2 · 4) − 1/2
    kl = gaussian_kl(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), torch.full((1, 1), math.log(2)))
    assert kl.item() == pytest.approx(math.log(2) - 0.25, rel=1e-6)
    # summed over dimensions, and masked dimensions add nothing; matches torch's own KL
    mt, lt, ms, ls = torch.randn(4, 3), torch.randn(4, 3) * 0.3, torch.randn(4, 3), torch.randn(4, 3) * 0.3
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mt, lt.exp()), torch.distributions.Normal(ms, ls.exp())
    )
    assert torch.allclose(gaussian_kl(mt, lt, ms, ls), ref.sum(-1), atol=1e-5)
    mask = torch.tensor([[1.0, 1.0, 0.0]]).expand(4, 3)
    assert torch.allclose(gaussian_kl(mt, lt, ms, ls, mask), ref[:, :2].sum(-1), atol=1e-5)


def test_action_mse_value_loss_and_agreement() -> None:
    half = torch.tensor([[2.0, 0.5]])
    assert action_mse(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.5]]), half).item() == pytest.approx(
        (1 / 2) ** 2 + (0.5 / 0.5) ** 2
    )
    v_t, v_s = torch.tensor([10.0, 30.0]), torch.tensor([12.0, 30.0])
    assert value_loss(v_s, v_t).item() == pytest.approx((4 / 2) / (1 + 20) ** 2)
    targets = Targets(probs=torch.tensor([[0.9, 0.1], [0.2, 0.8]]), value=v_t)
    student = Outputs(log_probs=torch.tensor([[0.6, 0.4], [0.7, 0.3]]).log(), value=v_s)
    loss, kl = distillation_loss(student, targets, value_coef=0.5)
    expected_kl = categorical_kl(targets.probs, student.log_probs).mean()  # type: ignore[arg-type]
    assert kl.item() == pytest.approx(expected_kl.item())
    assert loss.item() == pytest.approx(expected_kl.item() + 0.5 * value_loss(v_s, v_t).item())
    assert agreement(student, targets).tolist() == [True, False]
    # deterministic Box teacher: agreement within 5 % of the range (half-range 1: ±0.1)
    box = Targets(mean=torch.tensor([[0.0], [0.0]]), half_range=torch.ones(2, 1))
    assert agreement(Outputs(mean=torch.tensor([[0.05], [0.3]])), box).tolist() == [True, False]


# ---- teachers: safe loading for every algorithm ------------------------------------------------------


def _cartpole_teacher(path: Path) -> Path:
    """A CartPole PPO MlpPolicy teacher made by hand (no training): a linear policy that balances."""
    model = PPO("MlpPolicy", "CartPole-v1", policy_kwargs={"net_arch": {"pi": [], "vf": []}}, seed=0)
    with torch.no_grad():
        w = torch.tensor(CARTPOLE_WEIGHTS) * 20.0
        model.policy.action_net.weight.copy_(torch.stack([-w, w]))
        model.policy.action_net.bias.zero_()
    model.save(path)
    return path


@pytest.fixture(scope="module")
def cartpole_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cartpole_teacher(tmp_path_factory.mktemp("teacher") / "cartpole_ppo.zip")


def _refuse(*_: Any, **__: Any) -> Any:
    raise AssertionError("the teacher was unpickled")


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any unpickling of the zip's data (SB3's load does it with cloudpickle) fails the test."""
    monkeypatch.setattr(cloudpickle, "loads", _refuse)
    monkeypatch.setattr(pickle, "loads", _refuse)


def _obs(env_id: str, n: int = 16) -> np.ndarray:
    env = gym.make(env_id)
    env.observation_space.seed(0)
    return np.stack([env.observation_space.sample() for _ in range(n)]).clip(-3, 3)


ALGO_CASES = [
    ("ppo", "CartPole-v1", {"net_arch": [8]}),
    ("a2c", "CartPole-v1", {"net_arch": [8]}),  # pickles policy_kwargs (optimizer_class=RMSprop)
    ("maskable_ppo", "CartPole-v1", {"net_arch": [8], "activation_fn": nn.ReLU}),
    ("dqn", "CartPole-v1", {"net_arch": [8]}),
    ("ppo", "Pendulum-v1", {"net_arch": [8]}),
    ("sac", "Pendulum-v1", {"net_arch": [8]}),
    ("td3", "Pendulum-v1", {"net_arch": [8]}),
]


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn", "maskable_ppo"])
def test_nb2_teacher_loads_safely(algo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model nb2 trained (``"NB2Policy"``) is a teacher without ``--trust-teacher``, in a fresh
    process where NB2's policy names are still the lazy aliases; a MaskablePPO teacher takes masks."""
    path = tmp_path / "teacher.zip"
    ALGOS[algo]("NB2Policy", "CartPole-v1", seed=0).save(path)
    code = (
        "import pickle, sys, cloudpickle, gymnasium as gym, numpy as np\n"
        "from nb2_agents.distill.teachers import load_teacher\n"
        "def refuse(*a, **k): raise AssertionError('unpickled')\n"
        "cloudpickle.loads = pickle.loads = refuse\n"
        "env = gym.make('CartPole-v1')\n"
        "t = load_teacher(sys.argv[1], env.observation_space, env.action_space, device='cpu')\n"
        "obs = np.zeros((3, 4), dtype=np.float32)\n"
        "masks = np.ones((3, 2), dtype=bool) if t.algo == 'maskable_ppo' else None\n"
        "print(t.trusted, t.algo, t.predict(obs, action_masks=masks)[0].shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", algo, "(3,)"]


@pytest.mark.parametrize(("algo", "env_id", "policy_kwargs"), ALGO_CASES)
def test_teacher_loads_safely_and_acts_as_sb3(
    algo: str, env_id: str, policy_kwargs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model: BaseAlgorithm = ALGOS[algo]("MlpPolicy", env_id, policy_kwargs=policy_kwargs, seed=0)
    model.save(tmp_path / "teacher.zip")
    reference = ALGOS[algo].load(tmp_path / "teacher.zip", device="cpu")
    env = gym.make(env_id)
    with monkeypatch.context() as patch:
        patch.setattr(cloudpickle, "loads", _refuse)
        patch.setattr(pickle, "loads", _refuse)
        teacher = load_teacher(
            tmp_path / "teacher.zip", env.observation_space, env.action_space, device="cpu"
        )
    assert not teacher.trusted and teacher.algo == algo
    obs = _obs(env_id)
    expected, _ = reference.predict(obs, deterministic=True)
    actions, _ = teacher.predict(obs, deterministic=True)
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-6)
    out = teacher.outputs(torch.as_tensor(obs))
    assert out.value is not None and out.value.shape == (len(obs),)
    if isinstance(env.action_space, spaces.Discrete):
        assert out.log_probs is not None and torch.allclose(out.log_probs.exp().sum(-1), torch.ones(len(obs)))
        np.testing.assert_array_equal(out.log_probs.argmax(-1).numpy(), expected)
    else:
        assert out.mean is not None and (out.log_std is None) == (algo in ("sac", "td3"))


def test_nb2_teacher_and_run_folder_load_safely(tmp_path: Path, no_unpickling: None) -> None:
    from nb2_agents.runs import save_model

    model = PPO("NB2Policy", "CartPole-v1", policy_kwargs={"preset": "nano", "share_encoder": False}, seed=0)
    run = tmp_path / "run"
    save_model(model, run / "model.zip", {"algo": "ppo", "env": "CartPole-v1"})
    (run / "config.yaml").write_text("env: CartPole-v1\n")
    env = gym.make("CartPole-v1")
    teacher = load_teacher(run, env.observation_space, env.action_space, device="cpu")
    obs = torch.as_tensor(_obs("CartPole-v1"))
    with torch.no_grad():
        expected = model.policy.get_distribution(obs).distribution.probs
    assert torch.allclose(teacher.outputs(obs).log_probs.exp(), expected, atol=1e-5)  # type: ignore[union-attr]
    assert resolve_teacher_path(run) == run / "model.zip"


class CustomActivation(nn.Tanh):
    """A class outside torch and SB3: rebuilding it means unpickling code named by the file."""


def test_teacher_needing_unpickling_is_refused_without_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "custom.zip"
    PPO("MlpPolicy", "CartPole-v1", policy_kwargs={"activation_fn": CustomActivation, "net_arch": [8]}).save(
        path
    )
    env = gym.make("CartPole-v1")
    with pytest.raises(NeedsUnpickling, match=r"activation_fn.*--trust-pickle") as err:
        load_teacher(path, env.observation_space, env.action_space, device="cpu")
    assert "\n" not in str(err.value)
    with pytest.warns(UserWarning, match=r"--trust-pickle: unpickling the teacher zip of .*custom\.zip"):
        teacher = load_teacher(path, env.observation_space, env.action_space, trust=True, device="cpu")
    assert teacher.trusted and teacher.describe()["loaded"].startswith("trusted")


# ---- bad input: each a one-line UsageError before anything is written --------------------------------


def test_teacher_spaces_must_match_the_env(cartpole_teacher: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"Box\(\(4,\), float32\).*Acrobot-v1 has observations Box\(\(6,\)"):
        distill(cartpole_teacher, env="Acrobot-v1", steps=256, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content", [b"not a zip at all", b"PK\x03\x04 truncated"])
def test_corrupt_teacher_file(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "teacher.zip"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=r"teacher\.zip"):
        distill(path, env="CartPole-v1", steps=256, runs_dir=tmp_path / "runs")
    with pytest.raises(UsageError, match="does not exist"):
        distill(tmp_path / "missing.zip", env="CartPole-v1", steps=256, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_teacher_count_must_match_the_curriculum(cartpole_teacher: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"classic-control has 3 tasks .* got 2"):
        distill([cartpole_teacher] * 2, curriculum="classic-control", runs_dir=tmp_path / "runs")
    with pytest.raises(UsageError, match="takes one --teacher"):
        distill([cartpole_teacher] * 2, env="CartPole-v1", runs_dir=tmp_path / "runs")
    with pytest.raises(UsageError, match="--mode"):
        distill(cartpole_teacher, env="CartPole-v1", mode="dagger", runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_zoo_names_resolve_or_fail_clearly() -> None:
    with pytest.raises(UsageError, match="no-such-entry"):
        resolve_teacher_path("zoo:no-such-entry")


# ---- labels in a curriculum's shared spaces -----------------------------------------------------------


def test_labels_route_each_task_to_its_teacher(cartpole_teacher: Path, tmp_path: Path) -> None:
    acrobot_path = tmp_path / "acrobot.zip"
    DQN("MlpPolicy", "Acrobot-v1", policy_kwargs={"net_arch": [8]}, seed=0).save(acrobot_path)
    envs = [gym.make("CartPole-v1"), gym.make("Acrobot-v1")]
    common = common_spaces(
        ["cartpole", "acrobot"], [e.observation_space for e in envs], [e.action_space for e in envs]
    )
    teachers = [
        load_teacher(p, e.observation_space, e.action_space, device="cpu")
        for p, e in zip([cartpole_teacher, acrobot_path], envs, strict=True)
    ]
    raw = [_obs("CartPole-v1", 3), _obs("Acrobot-v1", 2)]
    rows = [TaskAdapter(envs[t], common, t).observation(o) for t in (0, 1) for o in raw[t]]
    order = [3, 0, 4, 1, 2]  # tasks interleaved in the batch: 1, 0, 1, 0, 0
    batch = {k: torch.as_tensor(np.stack([rows[i][k] for i in order])) for k in rows[0]}
    targets = Labeler(teachers, 0.5, torch.device("cpu"), common)(batch)
    assert targets.probs is not None and targets.probs.shape == (5, 3)
    own = [teachers[t].outputs(torch.as_tensor(raw[t]), 0.5).log_probs.exp() for t in (0, 1)]  # type: ignore[union-attr]
    expected = [_pad(own[0][i], 3) if i < 3 else own[1][i - 3] for i in order]
    assert torch.allclose(targets.probs, torch.stack(expected), atol=1e-6)
    assert (targets.probs[[1, 3, 4], 2] == 0).all()  # CartPole has no third action


def _pad(probs: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.pad(probs, (0, n - probs.shape[0]))


# ---- learning: the student comes to act as the teacher ------------------------------------------------


class _Agreement(BaseCallback):
    """Records ``distill/teacher_agreement`` at each rollout's end (after DistillCallback set it)."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[float] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.history.append(self.logger.name_to_value["distill/teacher_agreement"])


def test_pure_distillation_raises_agreement(cartpole_teacher: Path) -> None:
    env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
    teacher = load_teacher(cartpole_teacher, env.observation_space, env.action_space, device="cpu")
    entry = {
        "n_steps": 32,
        "batch_size": 256,
        "n_epochs": 10,
        "learning_rate": 1e-3,
        "policy_kwargs": {"preset": "nano"},
    }
    hp = parse_entry(PPO, entry, "test")
    labeler = Labeler([teacher], 1.0, torch.device("cpu"), None)
    model, callbacks, _ = build_student("pure", hp, env, labeler, 6144, seed=0, device="cpu")
    record = _Agreement()
    model.learn(6144, callback=[*callbacks, record])
    first, last = np.mean(record.history[:2]), np.mean(record.history[-4:])
    # disagreement with the teacher falls at least 3x (measured 0.25 -> 0.044 with NB2's
    # unit-scale tokens, whose features depend on the observation from the start)
    assert last > 0.85 and (1 - last) < (1 - first) / 3, record.history


# ---- end to end ---------------------------------------------------------------------------------------


def _scalars(run: Path) -> dict[str, list[float]]:
    acc = EventAccumulator(str(run))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_student_hyperparameters_by_mode_and_set_overrides(cartpole_teacher: Path, tmp_path: Path) -> None:
    plan = make_plan([cartpole_teacher], env="CartPole-v1", options=Options(overrides={"n_epochs": 3}))
    assert plan.hp.algo_kwargs["n_epochs"] == 3 and plan.config["hyperparams"]["n_epochs"] == 3
    assert plan.config["source"].startswith(str(PURE_HYPERPARAMS))  # pure: a supervised schedule
    kick = make_plan([cartpole_teacher], env="CartPole-v1", options=Options(mode="kickstart"))
    assert kick.config["source"].startswith(str(PURE_HYPERPARAMS.with_name("ppo.yaml")))  # RL's
    teachers = ["zoo:cartpole-ppo-mlp", "zoo:acrobot-dqn-mlp", "zoo:mountaincar-dqn-mlp"]
    plan = make_plan(teachers, curriculum="classic-control", options=Options(overrides={"n_steps": 64}))
    assert plan.hp.algo_kwargs["n_steps"] == 64
    with pytest.raises(UsageError, match=r"--set bogus: unknown key for PPO; valid keys: .*n_epochs"):
        distill(cartpole_teacher, env="CartPole-v1", overrides=["bogus=1"], runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_kickstart_anneals_lambda_and_logs(cartpole_teacher: Path, tmp_path: Path) -> None:
    result = distill(
        cartpole_teacher,
        env="CartPole-v1",
        steps=1024,
        mode="kickstart",
        kl_coef=2.0,
        eval_freq=0,
        final_episodes=2,
        runs_dir=tmp_path,
        progress=False,
        verbose=False,
    )
    scalars = _scalars(result.run_dir)
    lam = scalars["distill/lambda"]
    assert lam[0] == pytest.approx(2.0 * (1 - 256 / 1024)) and lam == sorted(lam, reverse=True)
    assert {"distill/kl", "distill/teacher_agreement", "train/value_loss"} <= set(scalars)
    report = json.loads((result.run_dir / "teachers.json").read_text())
    assert report["teachers"][0]["teacher"]["mean_return"] > 400  # the hand-made teacher balances


def test_multi_teacher_curriculum(cartpole_teacher: Path, tmp_path: Path) -> None:
    acrobot = tmp_path / "acrobot.zip"
    DQN("MlpPolicy", "Acrobot-v1", policy_kwargs={"net_arch": [8]}, seed=0).save(acrobot)
    normalisers = (("CartPole-v1", 22.69, 500), ("Acrobot-v1", -497.37, -80))
    tasks = [
        {
            "name": name,
            "env_id": name,
            "steps": 256,
            "eval_episodes": 1,
            "random_return": low,
            "reference_return": high,
        }
        for name, low, high in normalisers
    ]
    suite = tmp_path / "two.yaml"
    hyperparams = {"n_envs": 2, "n_steps": 32, "batch_size": 64, "n_epochs": 2}
    suite.write_text(
        yaml.safe_dump({"name": "two", "algo": "ppo", "hyperparams": hyperparams, "tasks": tasks})
    )
    result = distill(
        [cartpole_teacher, acrobot],
        curriculum=suite,
        steps=256,
        temperature=0.1,
        eval_freq=128,
        runs_dir=tmp_path / "runs",
        progress=False,
        verbose=False,
    )
    report = json.loads((result.run_dir / "teachers.json").read_text())
    assert [t["task"] for t in report["teachers"]] == ["CartPole-v1", "Acrobot-v1"]
    assert report["teachers"][0]["teacher"]["score"] == pytest.approx(1.0)
    assert 0 <= report["teachers"][1]["student"]["score"] <= 1
    scalars = _scalars(result.run_dir)
    assert {"curriculum/CartPole-v1/eval_score", "distill/teacher_agreement"} <= set(scalars)
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["suite"] == "two"


def test_cli_distill_end_to_end(cartpole_teacher: Path, tmp_path: Path) -> None:
    def nb2(*args: Any) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "nb2_agents.cli", *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=240)

    runs = tmp_path / "runs"
    done = nb2(
        "distill",
        "--teacher",
        cartpole_teacher,
        "--env",
        "CartPole-v1",
        "--steps",
        "512",
        "--eval-freq",
        0,
        "--final-episodes",
        2,
        "--runs-dir",
        runs,
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    (run,) = list(runs.iterdir())
    assert {"config.yaml", "model.zip", "eval.json", "teachers.json", "checkpoints"} <= {
        p.name for p in run.iterdir()
    }
    assert "CartPole-v1: teacher 500.00" in done.stdout
    evaluated = nb2("evaluate", run, "--json", "--episodes", 2)
    assert evaluated.returncode == 0, evaluated.stderr
    assert (
        json.loads(evaluated.stdout)["mean_return"]
        == json.loads((run / "eval.json").read_text())["mean_return"]
    )
    bad = nb2("distill", "--teacher", cartpole_teacher, "--env", "Acrobot-v1", "--runs-dir", runs)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Box((4,), float32)" in bad.stderr
    assert len(list(runs.iterdir())) == 1
