"""The policy zoo: every entry loads and scores as its card says, ``zoo:NAME`` works wherever a model
path does, cards are checked, and a teacher rebuilds from its recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nb2_agents.cli import main
from nb2_agents.errors import UsageError
from nb2_agents.zoo import (
    MAX_BYTES,
    ZOO_DIR,
    StudentRecipe,
    TeacherRecipe,
    build,
    build_many,
    entries,
    expected_return,
    get,
    measure,
    read_card,
    resolve,
    tolerance,
)
from nb2_agents.zoo.registry import build_order, build_waves, resolve_any

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
CARDS = entries()
NAMES = sorted(CARDS)
TEACHER_ENVS = {"CartPole-v1", "Acrobot-v1", "MountainCar-v0", "MiniGrid-DoorKey-5x5-v0"}
EPISODES = 2  # the first 2 of each card's 20 evaluation episodes: fast, and compared exactly


def nb2(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2_agents.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )


def test_the_zoo_has_a_teacher_for_each_env() -> None:
    teachers = {c.env for c in CARDS.values() if c.kind == "teacher"}
    assert teachers >= TEACHER_ENVS
    assert ZOO_DIR.resolve() == (Path(__file__).parents[1] / "policies" / "zoo").resolve()


@pytest.mark.parametrize("name", NAMES)
def test_card_is_complete(name: str) -> None:
    card = CARDS[name]
    assert card.built is not None, f"{name} is not built: {card.command}"
    built, data = card.built, yaml.safe_load(card.path.read_text())
    for key in ("env", "algorithm", "steps", "seed", "score", "command", "recipe", "evaluation"):
        assert data.get(key) not in (None, ""), key
    assert data["command"] == f"nb2 zoo build {name}"
    assert built.steps > 0 and built.score.std_return >= 0
    assert len(built.score.returns) == card.evaluation.episodes
    assert built.score.mean_return == pytest.approx(
        sum(built.score.returns) / len(built.score.returns), abs=1e-3
    )
    assert {"stable-baselines3", "torch", "gymnasium"} <= set(built.built_with)
    if isinstance(card.recipe, TeacherRecipe):
        assert (built.algorithm, built.seed) == (card.recipe.algorithm, card.recipe.seed)
        assert built.steps >= card.recipe.steps and card.recipe.source
    else:
        assert card.recipe.command.startswith("nb2 distill ") and card.teachers
    assert read_card(card.path) == card  # what build writes reads back the same


@pytest.mark.parametrize("name", NAMES)
def test_model_file_within_one_megabyte(name: str) -> None:
    card = CARDS[name]
    size = card.model_path.stat().st_size
    assert size <= MAX_BYTES
    assert card.built is not None and card.built.size_bytes == size


@pytest.mark.parametrize("name", NAMES)
def test_entry_scores_as_its_card(name: str) -> None:
    card = get(name)
    result = measure(card, resolve(name), episodes=EPISODES)
    assert result.episodes == EPISODES and result.env == card.env
    assert abs(result.mean_return - expected_return(card, EPISODES)) <= tolerance(card)


def test_zoo_ref_in_nb2_evaluate_and_info() -> None:
    card = CARDS["cartpole-ppo-mlp"]
    out = nb2("evaluate", "zoo:cartpole-ppo-mlp", "--episodes", "2", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["env"] == "CartPole-v1" and result["seed"] == card.evaluation.seed
    assert result["mean_return"] == pytest.approx(expected_return(card, 2), abs=tolerance(card))
    out = nb2("info", "zoo:cartpole-ppo-mlp", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert (info["env"], info["algo"], info["model"]) == ("CartPole-v1", "ppo", str(card.model_path))


def test_unknown_entry_lists_the_valid_ones() -> None:
    out = nb2("evaluate", "zoo:no-such-entry")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "unknown zoo entry 'no-such-entry'" in out.stderr
    assert all(name in out.stderr for name in NAMES)
    with pytest.raises(UsageError, match="valid: " + ", ".join(NAMES)):
        resolve_any("zoo:no-such-entry")


def test_resolve_any_accepts_zoo_refs() -> None:
    assert resolve_any("zoo:cartpole-ppo-mlp") == (resolve("cartpole-ppo-mlp"), None)
    assert (
        resolve("zoo:cartpole-ppo-mlp")
        == resolve("cartpole-ppo-mlp")
        == ZOO_DIR / "cartpole-ppo-mlp" / "model.zip"
    )


def test_zoo_list_and_evaluate_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo", "list"]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in NAMES)
    assert main(["zoo", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in listed] == NAMES and all(Path(c["model"]).is_file() for c in listed)
    assert main(["zoo", "evaluate", "acrobot-dqn-mlp", "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["within_tolerance"] and result["episodes"] == 2
    assert main(["zoo", "evaluate", "no-such-entry"]) == 2
    assert "valid: " + ", ".join(NAMES) in capsys.readouterr().err


# ---- cards: what is checked, with the file and key named --------------------------------------

TEACHER_CARD = {
    "name": "tiny",
    "kind": "teacher",
    "env": "CartPole-v1",
    "description": "a 512-step CartPole teacher for the tests",
    "evaluation": {"episodes": 2, "seed": 10000, "deterministic": True},
    "recipe": {
        "algorithm": "ppo",
        "policy": "MlpPolicy",
        "steps": 512,
        "seed": 3,
        "n_envs": 2,
        "hyperparams": {"n_steps": 128, "batch_size": 64, "learning_rate": "lin_1e-3"},
        "source": "tests",
    },
}


def write_card(root: Path, data: dict[str, object], folder: str | None = None) -> Path:
    path = root / (folder or str(data["name"])) / "card.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def with_key(data: dict[str, object], dotted: str, value: object) -> dict[str, object]:
    out = json.loads(json.dumps(data))
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return out


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("colour", "red", r"card.yaml: \(top level\).colour: unknown key; valid keys"),
        ("kind", "mentor", r"kind: 'mentor' is not a kind; valid: \['teacher', 'student'\]"),
        ("name", "other", r"name: 'other' differs from its folder 'tiny'"),
        ("recipe.algorithm", "ppo2", r"recipe.algorithm: unknown algorithm 'ppo2'; valid: \['ppo'"),
        ("recipe.policy", "GPTPolicy", r"recipe.policy: 'GPTPolicy' is not an SB3 policy of ppo; valid"),
        ("recipe.hyperparams.n_step", 8, r"recipe.hyperparams.n_step: unknown argument of PPO; valid keys"),
        ("recipe.hyperparams.gamma", "lin_0.9", r"recipe.hyperparams.gamma: lin_X is accepted only for"),
        ("recipe.steps", "lots", r"recipe.steps must be a positive whole number"),
        ("evaluation.deterministic", "yes please", r"evaluation.deterministic: expected true or false"),
        ("score", {"mean_return": 1.0}, r"card.yaml: has score but not algorithm, policy, steps"),
    ],
)
def test_bad_cards_name_the_file_and_key(tmp_path: Path, key: str, value: object, message: str) -> None:
    path = write_card(tmp_path, with_key(TEACHER_CARD, key, value), folder="tiny")
    with pytest.raises(UsageError, match=message) as err:
        read_card(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_student_recipe_is_an_nb2_distill_command_line(tmp_path: Path) -> None:
    write_card(tmp_path, TEACHER_CARD)
    command = (
        "nb2 distill --teacher zoo:tiny --env CartPole-v1 --preset nano --mode pure --steps 512 --seed 0"
    )
    student = {**TEACHER_CARD, "name": "tiny-student", "kind": "student", "recipe": {"command": command}}
    card = read_card(write_card(tmp_path, student))
    assert isinstance(card.recipe, StudentRecipe)
    assert card.teachers == ["tiny"] and card.recipe.argv[:3] == ["distill", "--teacher", "zoo:tiny"]
    assert build_order(["tiny-student", "tiny"], entries(tmp_path)) == ["tiny", "tiny-student"]
    for bad, message in [
        (command.replace("zoo:tiny", "runs/x/model.zip"), "expected an `nb2 distill` command line"),
        (command + " --runs-dir /tmp/x", "drop --runs-dir"),
        (command.replace("CartPole-v1", "Acrobot-v1"), "expected --env CartPole-v1"),
    ]:
        path = write_card(tmp_path, {**student, "recipe": {"command": bad}})
        with pytest.raises(UsageError, match=message):
            read_card(path)
    write_card(tmp_path, {**student, "recipe": {"command": command.replace("zoo:tiny", "zoo:nobody")}})
    with pytest.raises(UsageError, match="names teacher zoo:nobody, not another zoo entry; valid: tiny"):
        entries(tmp_path)


def test_a_student_recipe_nb2_distill_refuses_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The recipe runs through nb2 distill's own parser (the zoo does not import the command line
    that lists it): an option nb2 distill does not take names the card."""
    write_card(tmp_path, TEACHER_CARD)
    command = "nb2 distill --teacher zoo:tiny --env CartPole-v1 --steps 512 --no-such-option 1"
    write_card(
        tmp_path, {**TEACHER_CARD, "name": "student", "kind": "student", "recipe": {"command": command}}
    )
    with pytest.raises(UsageError, match=r"recipe\.command is not a valid nb2 distill command"):
        build("student", root=tmp_path)
    assert "--no-such-option" in capsys.readouterr().err


def test_build_retrains_a_teacher_and_rewrites_model_and_card(tmp_path: Path) -> None:
    path = write_card(tmp_path, TEACHER_CARD)
    card = build("tiny", root=tmp_path)
    assert card.built is not None and card.model_path.is_file()
    assert card.built.steps == 512 and card.built.seed == 3 and card.built.algorithm == "ppo"
    assert card.built.size_bytes == card.model_path.stat().st_size <= MAX_BYTES
    assert read_card(path) == card and len(card.built.score.returns) == 2
    again = build("tiny", root=tmp_path)  # one thread, CPU, same seed: the same policy
    assert again.built is not None and again.built.score == card.built.score
    assert sorted(p.name for p in path.parent.iterdir()) == ["card.yaml", "model.zip"]  # no temp files left


def test_build_waves_put_students_after_their_teachers() -> None:
    cards = entries()
    waves = build_waves(list(cards), cards)
    wave_of = {name: i for i, wave in enumerate(waves) for name in wave}
    assert sorted(wave_of) == sorted(cards) and len(waves) >= 2
    for name, card in cards.items():
        assert all(wave_of[t] < wave_of[name] for t in card.teachers)
    assert all(not cards[n].teachers for n in waves[0])


def test_entries_of_a_wave_build_side_by_side_on_ray(tmp_path: Path) -> None:
    """Two teachers, one wave, two Ray workers: each card is what a build alone writes."""
    pytest.importorskip("ray")
    for name in ("tiny", "tiny2"):
        write_card(tmp_path / "alone", {**TEACHER_CARD, "name": name})
        write_card(tmp_path / "ray", {**TEACHER_CARD, "name": name})
    alone = build_many([], root=tmp_path / "alone", log=lambda _: None)
    side_by_side = build_many([], root=tmp_path / "ray", log=lambda _: None, workers=2)
    assert [c.name for c in side_by_side] == ["tiny", "tiny2"]
    for a, b in zip(alone, side_by_side, strict=True):
        assert a.built is not None and b.built is not None
        assert a.built.score == b.built.score and a.built.steps == b.built.steps == 512


def test_a_student_saved_before_task_adapters_loads_in_plain_sb3_and_trains_on() -> None:
    """The zoo's NB2 students were saved with ``decoder.task_gain`` (tasks, queries) and Adam's state
    for it; ``decoder.task_film`` stands in its place now. Plain ``PPO.load`` converts the weights
    and drops the reshaped optimizer state, and training goes on."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO

    path = ZOO_DIR / "cartpole-nb2-nano" / "model.zip"
    model = PPO.load(path, env=gym.make("CartPole-v1"), device="cpu", n_steps=64, batch_size=64)
    nets = model.policy.nb2_networks()  # the student's actor and critic
    state = model.policy.optimizer.state
    for net in nets:
        film = net.decoder.task_film
        assert film.shape == (net.cfg.max_tasks, 2, 2, net.cfg.d_model)
        assert film not in state  # restarts: its saved shape was (32, 2)
    assert len(state) == len(list(model.policy.parameters())) - len(nets)  # every other one kept
    model.learn(64)  # no task ids on CartPole: the adapters get no gradient, the rest steps
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())
    assert all(s["exp_avg"].shape == p.shape for p, s in state.items())
