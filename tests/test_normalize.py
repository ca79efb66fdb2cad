"""Observation / reward normalisation (``normalize``): config, statistics, ``nb2 train`` and curricula."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecNormalize

import nb2_agents as nb
from nb2_agents import ExportedPolicy, export
from nb2_agents.curriculum.runner import run_curriculum
from nb2_agents.envs_util import EnvSpec
from nb2_agents.errors import UsageError
from nb2_agents.evaluation import run_episodes
from nb2_agents.hyperparams import parse_entry
from nb2_agents.info import info as model_info
from nb2_agents.normalize import (
    NORMALIZE_MEMBER,
    NormalizeConfig,
    NormalizeWrapper,
    RunningStats,
    parse_normalize,
    read_stats,
)

TINY = {"n_envs": 2, "n_steps": 32, "batch_size": 32, "n_epochs": 1}


# ---- the setting ----------------------------------------------------------------------------------


def test_normalize_accepts_true_false_and_a_mapping() -> None:
    assert parse_normalize(True, "x") == NormalizeConfig()
    assert parse_normalize(False, "x") is None and parse_normalize(None, "x") is None
    config = parse_normalize({"norm_reward": False, "clip_obs": 5}, "x")
    assert config == NormalizeConfig(norm_reward=False, clip_obs=5.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"norm_obs": True, "clip": 5}, r"where: unknown key\(s\) \['clip'\]; valid keys: \['norm_obs'"),
        ({"clip_obs": -1}, r"where: normalize.clip_obs: expected a number > 0, got -1"),
        ({"norm_obs": "yes"}, r"where: normalize.norm_obs: expected true or false"),
        ("{'norm_obs': True}", r"where: expected true, false or a mapping with keys"),
    ],
)
def test_bad_normalize_settings_name_the_key_and_what_is_accepted(value: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_normalize(value, "where")


def test_a_hyperparameter_entry_takes_normalize_and_names_its_file_when_wrong() -> None:
    hp = parse_entry(PPO, {"normalize": True, "gamma": 0.9}, "ppo.yaml [MountainCar-v0]")
    assert hp.normalize == NormalizeConfig() and hp.gamma == 0.9
    assert "normalize" not in hp.algo_kwargs  # a run setting, not PPO's
    with pytest.raises(UsageError, match=r"ppo.yaml \[MountainCar-v0\].normalize: unknown key"):
        parse_entry(PPO, {"normalize": {"bad": 1}}, "ppo.yaml [MountainCar-v0]")


def test_normalize_on_images_is_refused_before_a_run_folder_exists(tmp_path: Path) -> None:
    pytest.importorskip("minigrid")
    with pytest.raises(UsageError, match=r"normalize needs vector observations .* got Box\(0, 255"):
        nb.train("MiniGrid-Empty-5x5-v0", steps=64, overrides={"normalize": True}, runs_dir=tmp_path,
                 verbose=False)  # fmt: skip
    assert not list(tmp_path.iterdir())


# ---- statistics -----------------------------------------------------------------------------------


def _stats(seed: int = 0) -> RunningStats:
    stats = RunningStats(NormalizeConfig(clip_obs=2.0), (3,), 0.95)
    rng = np.random.default_rng(seed)
    stats.obs_rms.update(rng.normal(5.0, 3.0, (100, 3)))
    stats.ret_rms.update(rng.normal(0.0, 4.0, (100,)))
    return stats


def test_statistics_round_trip_through_plain_data() -> None:
    stats = _stats()
    back = RunningStats.from_dict(json.loads(json.dumps(stats.to_dict())), "where")
    assert back.config == stats.config and back.gamma == stats.gamma and back.shape == (3,)
    np.testing.assert_array_equal(back.obs_rms.mean, stats.obs_rms.mean)
    np.testing.assert_array_equal(back.obs_rms.var, stats.obs_rms.var)
    assert back.obs_rms.count == stats.obs_rms.count and back.ret_rms.var == stats.ret_rms.var


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["obs"].update(mean=[1.0, 2.0]), r"where.obs: expected mean and var of shape \(3,\)"),
        (lambda d: d["obs"].update(var=[1.0, -1.0, 1.0]), r"where.obs: mean must be finite, var >= 0"),
        (lambda d: d.pop("gamma"), r"where: missing or malformed config, shape or gamma"),
    ],
)
def test_malformed_statistics_name_the_entry(edit: Any, message: str) -> None:
    data = _stats().to_dict()
    edit(data)
    with pytest.raises(UsageError, match=message):
        RunningStats.from_dict(data, "where")


def test_the_wrapper_shares_statistics_between_copies_and_evaluation_reads_them_only() -> None:
    config = NormalizeConfig(clip_obs=100.0)
    stats = RunningStats(config, (4,), 0.99)
    copies = [NormalizeWrapper(gym.make("CartPole-v1"), stats, training=True) for _ in range(2)]
    seen = []
    for i, env in enumerate(copies):
        obs, _ = env.reset(seed=i)
        for _ in range(5):
            obs, reward, *_ = env.step(0)
            seen.append(reward)
    assert stats.obs_rms.count == pytest.approx(12, abs=0.01)  # 2 resets + 10 steps, both copies
    assert all(r != 1.0 for r in seen)  # training rewards are scaled by the return's spread
    before = stats.obs_rms.mean.copy()
    evaluation = NormalizeWrapper(gym.make("CartPole-v1"), stats, training=False)
    obs, _ = evaluation.reset(seed=7)
    raw = evaluation.unwrapped.state  # type: ignore[attr-defined]
    expected = (raw - stats.obs_rms.mean) / np.sqrt(stats.obs_rms.var + config.epsilon)
    np.testing.assert_allclose(obs, expected, rtol=1e-5, atol=1e-6)
    _, reward, *_ = evaluation.step(1)
    assert reward == 1.0 and np.array_equal(stats.obs_rms.mean, before)  # raw reward, no update
    assert evaluation.observation_space.dtype == np.float32 and obs.dtype == np.float32


# ---- nb2 train --------------------------------------------------------------------------------------


def test_a_trained_model_carries_its_statistics_and_evaluation_uses_them(tmp_path: Path) -> None:
    result = nb.train("Pendulum-v1", algo="ppo", steps=256, overrides={**TINY, "normalize": True},
                      runs_dir=tmp_path, verbose=False, progress=False, final_episodes=2)  # fmt: skip
    stats = read_stats(result.model_path)["Pendulum-v1"]
    assert stats.obs_rms.count > 256 and stats.config == NormalizeConfig()
    for ckpt in (result.run_dir / "checkpoints").glob("*.zip"):  # checkpoints too
        assert "Pendulum-v1" in read_stats(ckpt)
    # evaluate() normalises with the saved statistics: the same returns as SB3's own VecNormalize
    loaded = PPO.load(result.model_path, device="cpu")
    vec = VecNormalize(EnvSpec("Pendulum-v1", {}, "ppo").make_vec(1, 5), training=False, norm_reward=False)
    stats.into_vec_normalize(vec)
    set_random_seed(5)
    mine, _, _ = run_episodes(loaded, vec, 2, deterministic=True)
    theirs = nb.evaluate(result.model_path, episodes=2, seed=5, deterministic=True)
    assert theirs.returns == pytest.approx(mine)
    wrong_env = r"normalised observations for \['Pendulum-v1'\], not 'MountainCarContinuous-v0'"
    with pytest.raises(UsageError, match=wrong_env):
        nb.evaluate(result.model_path, env="MountainCarContinuous-v0", episodes=1)
    assert model_info(result.model_path).normalized == ["Pendulum-v1"]


def test_a_model_file_with_broken_statistics_is_refused_by_name(tmp_path: Path) -> None:
    result = nb.train("Pendulum-v1", algo="ppo", steps=64, overrides={**TINY, "normalize": True},
                      runs_dir=tmp_path, verbose=False, progress=False, final_episodes=1)  # fmt: skip
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(result.model_path) as src, zipfile.ZipFile(broken, "w") as dst:
        for name in src.namelist():
            data = src.read(name) if name != NORMALIZE_MEMBER else b'{"format": 1, "envs": []}'
            dst.writestr(name, data)
    with pytest.raises(UsageError, match=r"broken.zip \[normalize.json\]: expected"):
        nb.evaluate(broken, episodes=1)


# ---- curricula: one set of statistics per task ----------------------------------------------------


def _curriculum(path: Path, mode_norm: list[Any]) -> Path:
    tasks = [
        {"name": name, "env_id": env_id, "steps": 256, "eval_episodes": 2, "random_return": 20,
         "reference_return": 500, **({} if norm is None else {"normalize": norm})}
        for (name, env_id), norm in zip(
            [("CartPole-v1", "CartPole-v1"), ("LongPole", "nb2/CartPole-LongPole-v0"),
             ("Mirrored", "nb2/CartPole-Mirrored-v0")], mode_norm, strict=True)
    ]  # fmt: skip
    data = {"name": "norm", "algo": "ppo", "preset": "nano", "hyperparams": TINY, "tasks": tasks}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def normalized_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-task curriculum (nb2 retention: task ids shown): CartPole normalised, LongPole its
    observations only, Mirrored raw. Returns the run folder."""
    tmp = tmp_path_factory.mktemp("normalized")
    path = _curriculum(tmp / "norm.yaml", [True, {"norm_reward": False}, False])
    result = run_curriculum(path, retention="nb2", seeds=[0], evals_per_task=1, runs_dir=tmp / "runs",
                            progress=False)  # fmt: skip
    return result.run_dir


def test_each_task_keeps_its_own_statistics_across_the_sequence(normalized_run: Path) -> None:
    ckpts = normalized_run / "s0" / "checkpoints"
    names = ["CartPole-v1", "LongPole", "Mirrored"]
    after = [read_stats(ckpts / f"after_{i}_{n}.zip") for i, n in enumerate(names)]
    final = read_stats(normalized_run / "s0" / "model.zip")
    assert set(final) == {"CartPole-v1", "LongPole"}  # Mirrored is not normalised
    assert final["LongPole"].config == NormalizeConfig(norm_reward=False)
    first = after[0]["CartPole-v1"]
    assert first.obs_rms.count > 256  # updated while CartPole trained ...
    for later in (after[1], after[2], final):  # ... then frozen: later tasks leave it alone
        np.testing.assert_array_equal(later["CartPole-v1"].obs_rms.mean, first.obs_rms.mean)
        assert later["CartPole-v1"].obs_rms.count == first.obs_rms.count
    assert after[0]["LongPole"].obs_rms.count < 1  # untouched until LongPole trains
    assert after[1]["LongPole"].obs_rms.count > 256
    assert final["LongPole"].obs_rms.count == after[1]["LongPole"].obs_rms.count


def test_a_suite_wide_normalize_applies_to_tasks_that_do_not_say_otherwise(tmp_path: Path) -> None:
    from nb2_agents.curriculum.runner import resolve

    path = _curriculum(tmp_path / "norm.yaml", [None, False, {"clip_obs": 5}])
    _, spec, _ = resolve(path, overrides={"normalize": True})
    configs = [t.normalize_config for t in spec.tasks]
    assert configs == [NormalizeConfig(), None, NormalizeConfig(clip_obs=5.0)]
    with pytest.raises(UsageError, match=r"norm.yaml \[task 'LongPole'\].normalize: expected true, false"):
        resolve(_curriculum(tmp_path / "norm.yaml", [None, "yes", None]))


# ---- export: the graph takes raw observations -------------------------------------------------------


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_exported_model_normalises_raw_observations_itself(fmt: str, tmp_path: Path) -> None:
    result = nb.train("Pendulum-v1", algo="ppo", steps=128, overrides={**TINY, "normalize": True},
                      runs_dir=tmp_path, verbose=False, progress=False, final_episodes=1)  # fmt: skip
    out = export(result.model_path, format=fmt, out=tmp_path / "export")
    model = PPO.load(result.model_path, device="cpu")
    stats = read_stats(result.model_path)["Pendulum-v1"]
    raw = np.random.default_rng(0).uniform(-1, 1, (32, 3)).astype(np.float32) * [1, 1, 8]
    expected, _ = model.predict(stats.normalize_obs(raw), deterministic=True)
    actions, _ = ExportedPolicy(out.path).predict(raw.astype(np.float32))
    np.testing.assert_allclose(actions, expected, atol=1e-4)
    assert json.loads(out.sidecar.read_text())["normalized"] == ["Pendulum-v1"]


def test_an_exported_curriculum_model_normalises_each_task_by_its_id(
    normalized_run: Path, tmp_path: Path
) -> None:
    path = normalized_run / "s0" / "model.zip"
    out = export(path, format="torchscript", out=tmp_path / "curriculum.pt")
    model = PPO.load(path, device="cpu")
    stats = read_stats(path)
    space = model.observation_space
    assert isinstance(space, gym.spaces.Dict)
    rng = np.random.default_rng(1)
    for task, name in enumerate(["CartPole-v1", "LongPole", "Mirrored"]):
        raw = rng.normal(0, [1, 2, 0.2, 2], (16, 4)).astype(np.float32)
        seen = stats[name].normalize_obs(raw) if name in stats else raw
        obs = {key: np.stack([space[key].sample() for _ in range(16)]) for key in space.spaces}
        obs["task_id"] = np.full(16, task)
        if "obs_mask" in obs:
            obs["obs_mask"] = np.ones_like(obs["obs_mask"])
        expected, _ = model.predict({**obs, "obs": seen}, deterministic=True)
        actions, _ = ExportedPolicy(out.path).predict({**obs, "obs": raw})
        np.testing.assert_array_equal(actions, expected)
    tasks = json.loads(out.sidecar.read_text())["tasks"]
    assert tasks == {"0": "CartPole-v1", "1": "LongPole", "2": "Mirrored"}


def test_export_refuses_per_task_statistics_it_could_not_choose_between(tmp_path: Path) -> None:
    path = _curriculum(tmp_path / "norm.yaml", [True, None, None])
    result = run_curriculum(path, retention="none", seeds=[0], steps_scale=0.25, evals_per_task=1,
                            runs_dir=tmp_path / "runs", progress=False)  # fmt: skip
    refused = r"model.zip: its tasks' observations were normalised.*\(--task-ids\)"
    with pytest.raises(UsageError, match=refused):
        export(result.run_dir / "s0" / "model.zip", format="torchscript", out=tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


# ---- distillation: a teacher trained with normalize -------------------------------------------------


def test_a_normalised_teacher_normalises_what_it_is_shown(tmp_path: Path) -> None:
    from nb2_agents.distill.teachers import load_teacher

    result = nb.train("Pendulum-v1", algo="ppo", steps=128, overrides={**TINY, "normalize": True},
                      runs_dir=tmp_path, verbose=False, progress=False, final_episodes=1)  # fmt: skip
    env = gym.make("Pendulum-v1")
    teacher = load_teacher(result.run_dir, env.observation_space, env.action_space, device="cpu")
    model = PPO.load(result.model_path, device="cpu")
    stats = read_stats(result.model_path)["Pendulum-v1"]
    raw = np.random.default_rng(0).uniform(-1, 1, (16, 3)).astype(np.float32) * [1, 1, 8]
    expected, _ = model.predict(stats.normalize_obs(raw), deterministic=True)
    actions, _ = teacher.predict(raw, deterministic=True)
    np.testing.assert_allclose(actions, expected, atol=1e-5)
    mean = teacher.outputs(torch.as_tensor(raw, dtype=torch.float32)).mean
    assert mean is not None
    seen = torch.as_tensor(stats.normalize_obs(raw))
    reference = model.policy.get_distribution(seen).distribution.mean.detach()
    np.testing.assert_allclose(mean.numpy(), reference.numpy(), atol=1e-5)
    assert teacher.describe()["normalized"] is True


def test_distillation_into_a_curriculum_student_leaves_its_observations_raw() -> None:
    from nb2_agents.curriculum.runner import resolve

    _, spec, _ = resolve("classic-control")
    assert spec.tasks[2].normalize_config == NormalizeConfig()  # MountainCar, as RL Zoo
    assert all(t.normalize_config is None for t in spec.raw().tasks)


def test_a_distilled_student_drops_the_entrys_normalize(tmp_path: Path) -> None:
    from nb2_agents.distill.plan import Options, make_plan

    teacher = nb.train("MountainCar-v0", algo="ppo", steps=64, overrides=TINY, runs_dir=tmp_path,
                       verbose=False, progress=False, final_episodes=1)  # fmt: skip
    assert "MountainCar-v0" in read_stats(teacher.model_path)  # ppo.yaml's entry normalises, as RL Zoo
    plan = make_plan(env="MountainCar-v0", teachers=[str(teacher.run_dir)], options=Options(mode="kickstart"))
    assert plan.hp.normalize is None and plan.teachers[0].stats is not None
