"""Curriculum specs: the built-in suites load and their envs pass Gymnasium's checker; bad YAML
is refused with the file and the key named; the nb2/ CartPole variants are registered and differ."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import warnings
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.utils.env_checker import check_env

from nb2_agents.curriculum.available import check_available
from nb2_agents.curriculum.spec import (
    CurriculumSpec,
    TaskSpec,
    builtin_curricula,
    load_curriculum,
)
from nb2_agents.curriculum.variants import CARTPOLE_VARIANTS, MirrorActions, register_variants
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import ALGOS, DATA_DIR, parse_entry, read_yaml

HAS_MINIGRID = importlib.util.find_spec("minigrid") is not None
HAS_METAWORLD = importlib.util.find_spec("metaworld") is not None
BUILTINS = ["cartpole-mirrored", "cartpole-variants", "classic-control", "continual-world", "minigrid"]


def _trainable_tasks() -> list[tuple[str, TaskSpec]]:
    out: list[tuple[str, TaskSpec]] = []
    for name in BUILTINS:
        spec = load_curriculum(name)
        if spec.trainable_here:
            out.extend((name, task) for task in spec.tasks)
    return out


# ---- built-in suites ------------------------------------------------------------------------


def test_builtin_names() -> None:
    assert builtin_curricula() == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_suite_loads(name: str) -> None:
    spec = load_curriculum(name)
    assert spec.name == name and spec.source == DATA_DIR / "envs" / f"{name}.yaml"
    assert spec.tasks and len(set(spec.task_names())) == len(spec.tasks)
    for task in spec.tasks:
        assert task.steps > 0 and task.eval_episodes > 0
        assert task.success_key is not None or task.random_return != task.reference_return
    # the suite's hyperparameters are valid over policies/<algo>.yaml's `default` entry
    default = read_yaml(DATA_DIR / "policies" / f"{spec.algo}.yaml")["default"]
    hp = parse_entry(ALGOS[spec.algo], {**default, **spec.hyperparams}, f"{name} hyperparams")
    assert hp.n_envs >= 1


def test_builtin_suite_contents() -> None:
    cartpole = load_curriculum("cartpole-variants")
    assert "nb2/CartPole-Mirrored-v0" in [t.env_id for t in cartpole.tasks]
    assert all(t.steps <= 100_000 and t.reference_return == 500 for t in cartpole.tasks)
    assert cartpole.hyperparams["n_steps"] == 32 and cartpole.hyperparams["learning_rate"] == "lin_1e-3"
    assert load_curriculum("minigrid").requires == "minigrid"
    cw = load_curriculum("continual-world")
    assert (cw.algo, cw.requires, cw.trainable_here) == ("sac", "metaworld", False)
    assert len(cw.tasks) == 10 and all(t.steps == 1_000_000 and t.success_key == "success" for t in cw.tasks)
    assert cw.tasks[0].gym_id == "Meta-World/MT1" and cw.tasks[0].gym_kwargs["env_name"] == "hammer-v3"


@pytest.mark.parametrize(("suite", "task"), _trainable_tasks(), ids=lambda v: getattr(v, "name", v))
def test_trainable_env_passes_check_env(suite: str, task: TaskSpec) -> None:
    if suite == "minigrid" and not HAS_MINIGRID:
        pytest.skip("minigrid is not installed")
    spec = load_curriculum(suite)
    check_available(spec)
    env = task.make_env()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any finding of the checker fails the test, except:
            warnings.filterwarnings("ignore", message=".*different from the unwrapped version")
            warnings.filterwarnings(
                "ignore", message=".*Box observation space (min|max)imum value is -?infinity"
            )
            # the close check re-makes the env from its spec, which the MiniGrid wrappers cannot give
            check_env(env, skip_render_check=True, skip_close_check=True)
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        if suite == "minigrid":  # NB2's image-only grid, as envs_util builds it
            assert obs.shape == (7, 7, 3)
    finally:
        env.close()


@pytest.mark.skipif(not HAS_METAWORLD, reason="needs the metaworld extra")
def test_continual_world_tasks_are_made() -> None:
    spec = load_curriculum("continual-world")
    check_available(spec)
    for task in spec.tasks:
        env = task.make_env()
        try:  # MT1 sets a task on reset: the unwrapped env is not usable alone (no check_env there)
            obs, _ = env.reset(seed=0)
            assert obs.shape == env.observation_space.shape == (39,)
            obs, reward, *_, info = env.step(env.action_space.sample())
            assert "success" in info and np.isfinite(reward)
        finally:
            env.close()


def test_continual_world_without_metaworld(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "metaworld", None)  # as if not installed: importing it fails
    spec = load_curriculum("continual-world")
    with pytest.raises(UsageError, match=r"metaworld.*pip install 'nb2-agents\[metaworld\]'"):
        check_available(spec)


def test_check_available_unknown_env_suggests(tmp_path: Path) -> None:
    path = _write(tmp_path, {"tasks": [{"env_id": "CartPole-v9", "steps": 10, "success_key": "x"}]})
    with pytest.raises(UsageError, match=r"c\.yaml.*CartPole-v9.*did you mean.*CartPole-v1"):
        check_available(load_curriculum(path))
    path = _write(tmp_path, {"tasks": [{"env_id": "CartPole-v1", "steps": 10, "success_key": "x",
                                        "wrappers": ["nb2_agents.nope:Wrapper"]}]})  # fmt: skip
    with pytest.raises(UsageError, match=r"wrappers.*nb2_agents\.nope"):
        check_available(load_curriculum(path))


# ---- bad input --------------------------------------------------------------------------------

GOOD_TASK = {"env_id": "CartPole-v1", "steps": "1k", "random_return": 22, "reference_return": 500}


def _write(tmp_path: Path, data: Any, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_unknown_name_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(
        UsageError, match=r"unknown curriculum 'cartpole-variant'.*did you mean cartpole-variants"
    ):
        load_curriculum("cartpole-variant")
    with pytest.raises(
        UsageError, match="built-in curricula: cartpole-mirrored, cartpole-variants, classic-control"
    ):
        load_curriculum("nothing-like-it")
    with pytest.raises(UsageError, match=r"nope\.yaml does not exist"):
        load_curriculum(tmp_path / "nope.yaml")
    with pytest.raises(UsageError, match="does not exist"):
        load_curriculum(str(tmp_path / "sub" / "x"))


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "tasks:\n  - env_id: CartPole-v1\n    steps: [1, 2\n")
    with pytest.raises(UsageError, match=rf"{path}:\d+:\d+: malformed YAML"):
        load_curriculum(path)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ("- 1\n", r"expected a mapping"),
        (
            {"tasks": [GOOD_TASK], "algorithm": "ppo"},
            r"unknown top-level key 'algorithm'.*'algo'.*valid keys",
        ),
        ({"name": "x"}, r"missing required key 'tasks'"),
        ({"tasks": []}, r"tasks: the task list is empty"),
        ({"tasks": "CartPole-v1"}, r"tasks: expected a list"),
        (
            {"tasks": [{**GOOD_TASK, "step": 3}]},
            r"\[task 'CartPole-v1'\]: unknown task key 'step'.*valid keys",
        ),
        ({"tasks": [{"env_id": "CartPole-v1"}]}, r"\[task 'CartPole-v1'\]: missing required key 'steps'"),
        ({"tasks": [{"steps": 10}]}, r"tasks\[0\]: missing required key 'env_id'"),
        ({"tasks": [{**GOOD_TASK, "steps": 0}]}, r"\[task 'CartPole-v1'\]\.steps must be a positive"),
        ({"tasks": [{**GOOD_TASK, "steps": -5}]}, r"\.steps must be a positive"),
        ({"tasks": [{**GOOD_TASK, "eval_episodes": 0}]}, r"\.eval_episodes: expected a whole number > 0"),
        ({"tasks": [GOOD_TASK, GOOD_TASK]}, r"duplicate task name 'CartPole-v1'"),
        ({"tasks": [{"env_id": "CartPole-v1", "steps": 5}]}, r"no way to score it.*success_key"),
        (
            {"tasks": [{**GOOD_TASK, "reference_return": None}]},
            r"random_return and reference_return go together",
        ),
        ({"tasks": [{**GOOD_TASK, "reference_return": 22}]}, r"reference_return equals random_return"),
        ({"tasks": [{**GOOD_TASK, "random_return": "low"}]}, r"\.random_return: expected a finite number"),
        ({"tasks": [{**GOOD_TASK, "env_kwargs": [1]}]}, r"\.env_kwargs: expected a mapping"),
        ({"tasks": [{**GOOD_TASK, "wrappers": ["NoColon"]}]}, r"wrappers: 'NoColon' is not a dotted path"),
        ({"tasks": [GOOD_TASK], "hyperparams": [1]}, r"hyperparams: expected a mapping"),
        (
            {"tasks": [GOOD_TASK], "hyperparams": {"n_step": 3}},
            r"hyperparams\.n_step: unknown key.*valid keys",
        ),
        ({"tasks": [GOOD_TASK], "algo": "trpo"}, r"algo: unknown algorithm 'trpo'.*valid"),
        ({"tasks": [GOOD_TASK], "preset": "huge"}, r"preset: unknown NB2 preset 'huge'"),
        ({"tasks": [GOOD_TASK], "trainable_here": "yes please"}, r"trainable_here: expected true or false"),
    ],
)
def test_bad_input_names_file_and_key(tmp_path: Path, data: Any, pattern: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(UsageError, match=pattern) as info:
        load_curriculum(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_good_file_and_defaults(tmp_path: Path) -> None:
    first = {**GOOD_TASK, "steps": "1e3", "wrappers": ["gymnasium.wrappers:RecordEpisodeStatistics"]}
    second = {"name": "b", "env_id": "CartPole-v1", "steps": 200, "success_key": "ok"}
    path = _write(tmp_path, {"tasks": [first, second]}, "my-suite.yaml")
    spec = load_curriculum(str(path))
    assert spec.name == "my-suite" and spec.algo == "ppo" and spec.preset == "nano" and spec.trainable_here
    assert spec.task_names() == ["CartPole-v1", "b"] and spec.tasks[0].steps == 1000
    env = spec.tasks[0].make_env()
    assert isinstance(env, gym.wrappers.RecordEpisodeStatistics)
    env.close()


# ---- scores and scaling -----------------------------------------------------------------------


def test_score() -> None:
    task = TaskSpec("t", "CartPole-v1", 10, random_return=20.0, reference_return=500.0)
    assert task.score(260.0, None) == pytest.approx(0.5)
    assert task.score(0.0, None) == 0.0 and task.score(900.0, 0.1) == 1.0  # clipped; no success key
    neg = TaskSpec("a", "Acrobot-v1", 10, random_return=-500.0, reference_return=-80.0)
    assert neg.score(-290.0, None) == pytest.approx(0.5)
    success = TaskSpec("s", "CartPole-v1", 10, success_key="is_success")
    assert success.score(-3.0, 0.7) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="success rate"):
        success.score(1.0, None)
    both = TaskSpec("b", "CartPole-v1", 10, random_return=0.0, reference_return=1.0, success_key="is_success")
    assert both.score(0.2, 0.9) == pytest.approx(0.9) and both.score(0.2, None) == pytest.approx(0.2)


def test_scaled() -> None:
    spec = load_curriculum("cartpole-variants")
    half = spec.scaled(0.5)
    assert [t.steps for t in half.tasks] == [t.steps // 2 for t in spec.tasks]
    assert half.task_names() == spec.task_names() and half.hyperparams == spec.hyperparams
    assert all(t.steps == 1 for t in spec.scaled(1e-9).tasks)
    assert spec.scaled(1.0) == spec
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(UsageError, match="factor"):
            spec.scaled(bad)


def test_direct_construction_is_checked() -> None:
    with pytest.raises(UsageError, match="steps"):
        TaskSpec("t", "CartPole-v1", 0, success_key="x")
    task = TaskSpec("t", "CartPole-v1", 5, success_key="x")
    with pytest.raises(UsageError, match="duplicate"):
        CurriculumSpec("c", (task, task))
    with pytest.raises(UsageError, match="empty"):
        CurriculumSpec("c", ())
    assert hash(CurriculumSpec("c", (task,))) == hash(CurriculumSpec("c", (task,)))


# ---- nb2/ CartPole variants --------------------------------------------------------------------


def test_variants_registered_idempotently() -> None:
    ids = register_variants()
    assert register_variants() == ids and set(ids) == set(CARTPOLE_VARIANTS)
    for env_id in ids:
        spec = gym.spec(env_id)
        assert spec.max_episode_steps == 500 and spec.reward_threshold == 475.0
        assert isinstance(spec.entry_point, str) and spec.entry_point.endswith("variants:make_cartpole")
    env = gym.make("nb2_agents.curriculum.variants:nb2/CartPole-LongPole-v0")
    assert cast(CartPoleEnv, env.unwrapped).length == 1.0
    env.close()


@pytest.mark.parametrize(
    ("env_id", "attr", "value"),
    [("nb2/CartPole-LongPole-v0", "length", 1.0), ("nb2/CartPole-HeavyPole-v0", "masspole", 0.5),
     ("nb2/CartPole-HighGravity-v0", "gravity", 20.0), ("nb2/CartPole-WeakForce-v0", "force_mag", 5.0)],
)  # fmt: skip
def test_variant_physics_differ(env_id: str, attr: str, value: float) -> None:
    base, variant = gym.make("CartPole-v1"), gym.make(env_id)
    b, v = cast(CartPoleEnv, base.unwrapped), cast(CartPoleEnv, variant.unwrapped)
    assert getattr(v, attr) == value != getattr(b, attr)
    assert v.total_mass == pytest.approx(v.masspole + v.masscart)
    assert v.polemass_length == pytest.approx(v.masspole * v.length)
    obs_b, _ = base.reset(seed=3)
    obs_v, _ = variant.reset(seed=3)
    np.testing.assert_array_equal(obs_b, obs_v)
    for _ in range(3):
        obs_b, *_ = base.step(1)
        obs_v, *_ = variant.step(1)
    assert not np.allclose(obs_b, obs_v)
    base.close()
    variant.close()


def test_mirrored_swaps_actions() -> None:
    base, mirrored = gym.make("CartPole-v1"), gym.make("nb2/CartPole-Mirrored-v0")
    assert isinstance(mirrored.unwrapped, type(base.unwrapped))
    obs_b, _ = base.reset(seed=7)
    obs_m, _ = mirrored.reset(seed=7)
    np.testing.assert_array_equal(obs_b, obs_m)
    for action in [0, 0, 1, 0, 1, 1, 0]:
        obs_b, r_b, term_b, *_ = base.step(1 - action)
        obs_m, r_m, term_m, *_ = mirrored.step(action)
        np.testing.assert_array_equal(obs_b, obs_m)
        assert (r_b, term_b) == (r_m, term_m)
    base.close()
    mirrored.close()
    with pytest.raises(ValueError, match="Discrete"):
        MirrorActions(gym.make("Pendulum-v1"))


@pytest.mark.parametrize("env_id", ["CartPole-v1", *CARTPOLE_VARIANTS])
def test_variants_are_solvable_by_a_linear_policy(env_id: str) -> None:
    """A fixed linear controller balances every variant for 500 steps: each one can be solved."""
    env = gym.make(env_id)
    mirrored = "Mirrored" in env_id
    for seed in range(2):
        obs, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            x, x_dot, theta, theta_dot = obs
            push_right = int(theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0)
            obs, reward, terminated, truncated, _ = env.step(1 - push_right if mirrored else push_right)
            total += float(reward)
            done = terminated or truncated
        assert total == 500.0
    env.close()


def test_cartpole_mirrored_repeats_cartpole_variants_settings_and_tasks() -> None:
    """make run's quick suite is cartpole-variants' first and last task: its settings and the
    tasks' normalisers must stay those measured there (only the mirror's budget differs)."""
    quick, full = load_curriculum("cartpole-mirrored"), load_curriculum("cartpole-variants")
    assert (quick.algo, quick.preset, quick.hyperparams) == (full.algo, full.preset, full.hyperparams)
    assert quick.tasks[0] == full.tasks[0]
    assert quick.tasks[1] == dataclasses.replace(full.tasks[-1], steps=quick.tasks[1].steps)


@pytest.mark.skipif(not HAS_MINIGRID, reason="needs the minigrid extra")
def test_minigrid_cells_are_not_scaled_as_pixels() -> None:
    """As ``nb2 train`` does: SB3 would divide MiniGrid's cell ids (0-10, uint8) by 255, and NB2
    learned none of the minigrid suite's tasks from those (single-task references included)."""
    from nb2_agents.curriculum.resolve import CurriculumOptions, resolve

    cfg, _, hp = resolve(CurriculumOptions("minigrid"))
    assert cfg.hyperparams["policy_kwargs"]["normalize_images"] is False
    assert hp.algo_kwargs["policy_kwargs"]["normalize_images"] is False
    cfg, _, _ = resolve(CurriculumOptions("minigrid", overrides=["policy_kwargs.normalize_images=true"]))
    assert cfg.hyperparams["policy_kwargs"]["normalize_images"] is True  # --set wins
    cfg, _, _ = resolve(CurriculumOptions("cartpole-variants"))
    assert "normalize_images" not in cfg.hyperparams["policy_kwargs"]
