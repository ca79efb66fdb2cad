"""``nb2 curriculum`` end to end on tiny budgets: the run folder, TensorBoard, reference runs, the CLI,
and bad input refused before anything trains."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nb2_agents.curriculum import run_curriculum, run_references
from nb2_agents.curriculum import runner as runner_module
from nb2_agents.curriculum.adapter import TaskAdapter
from nb2_agents.curriculum.evaluator import CURVE_FIELDS
from nb2_agents.curriculum.metrics import METRIC_KEYS, read_matrix_csv
from nb2_agents.curriculum.spec import builtin_curricula, load_curriculum
from nb2_agents.evaluation import load_model

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HYPERPARAMS = {"n_envs": 2, "n_steps": 32, "batch_size": 32, "n_epochs": 1}
EVALS = 2
STEPS = 256


def _task(name: str, env_id: str, random_return: float = 20, reference_return: float = 500) -> dict[str, Any]:
    return {"name": name, "env_id": env_id, "steps": STEPS, "eval_episodes": 2,
            "random_return": random_return, "reference_return": reference_return}  # fmt: skip


def write_curriculum(path: Path, tasks: list[dict[str, Any]], name: str = "tiny", **top: Any) -> Path:
    data = {
        "name": name,
        "algo": "ppo",
        "preset": "nano",
        "hyperparams": dict(HYPERPARAMS),
        **top,
        "tasks": tasks,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """CartPole-v1 then its mirrored variant, 256 steps each."""
    tasks = [_task("CartPole-v1", "CartPole-v1"), _task("Mirrored", "nb2/CartPole-Mirrored-v0")]
    return write_curriculum(tmp_path / "tiny.yaml", tasks)


@pytest.fixture
def classic(tmp_path: Path) -> Path:
    """CartPole-v1 (Box(4), 2 actions) then Acrobot-v1 (Box(6), 3 actions)."""
    tasks = [_task("CartPole-v1", "CartPole-v1"), _task("Acrobot-v1", "Acrobot-v1", -500, -80)]
    return write_curriculum(tmp_path / "classic.yaml", tasks, name="classic")


def _scalars(seed_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(next(seed_dir.glob("events.out.tfevents.*"))))
    events.Reload()
    return events


def _check_metrics(metrics: dict[str, Any]) -> None:
    for key in METRIC_KEYS:
        entry = metrics[key]
        assert {"mean", "ci_low", "ci_high"} <= set(entry), key
        if entry["mean"] is not None:
            assert entry["ci_low"] <= entry["mean"] <= entry["ci_high"], key


def _curves(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "curves.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == CURVE_FIELDS
        return list(reader)


# ---- sequential run, two seeds -----------------------------------------------------------------


def test_two_task_curriculum_writes_the_run_folder(tiny: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = run_curriculum(tiny, seeds=[0, 1], evals_per_task=EVALS, runs_dir=runs, progress=False)
    run_dir = result.run_dir
    assert run_dir.parent == runs and run_dir.name.startswith("tiny__ppo__nano__sequential__none__")
    names = ["CartPole-v1", "Mirrored"]

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["suite"] == "tiny" and config["seeds"] == [0, 1] and config["mode"] == "sequential"
    assert config["task_steps"] == [STEPS, STEPS] and config["evals_per_task"] == EVALS
    assert config["hyperparams"]["n_envs"] == 2 and config["hyperparams"]["n_epochs"] == 1

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.metrics))
    _check_metrics(metrics)
    for key in ("average_performance", "forgetting", "backward_transfer"):
        assert isinstance(metrics[key]["mean"], float) and 0 <= abs(metrics[key]["mean"]) <= 1
    assert metrics["forward_transfer"]["mean"] is None  # no reference runs yet
    assert "--references" in metrics["forward_transfer_note"]
    assert metrics["tasks"] == names and metrics["seeds"] == [0, 1]
    assert metrics["task_end_steps"] == {"0": [STEPS, 2 * STEPS], "1": [STEPS, 2 * STEPS]}

    header, matrix = read_matrix_csv(run_dir / "matrix.csv")
    assert header == names and matrix.shape == (2, 2)
    assert np.all((matrix >= 0) & (matrix <= 1))
    np.testing.assert_allclose(matrix, metrics["matrix"], atol=1e-4)

    rows = _curves(run_dir)
    points = 1 + len(names) * EVALS  # the untrained agent, then EVALS per task window
    assert len(rows) == 2 * points * len(names)
    assert {(r["seed"], r["task"]) for r in rows} == {(s, t) for s in "01" for t in names}
    steps = sorted({int(r["step"]) for r in rows})
    assert steps == [0, STEPS // 2, STEPS, STEPS + STEPS // 2, 2 * STEPS]
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)

    for seed in (0, 1):
        seed_dir = run_dir / f"s{seed}"
        assert (seed_dir / "model.zip").is_file() and (seed_dir / "matrix.csv").is_file()
        assert (seed_dir / "checkpoints" / "after_0_CartPole-v1.zip").is_file()
        assert (seed_dir / "checkpoints" / "after_1_Mirrored.zip").is_file()
        assert sorted(p.name for p in (seed_dir / "monitor").iterdir()) == sorted(names)
        events = _scalars(seed_dir)
        tags = set(events.Tags()["scalars"])
        assert {"curriculum/CartPole-v1/eval_score", "curriculum/Mirrored/eval_score",
                "curriculum/current_task", "curriculum/average_score"} <= tags  # fmt: skip
        for name in names:
            assert [e.step for e in events.Scalars(f"curriculum/{name}/eval_score")] == steps
        assert [e.value for e in events.Scalars("curriculum/current_task")] == [0, 0, 0, 1, 1]

    summary = result.summary()
    assert str(run_dir) in summary and f"tensorboard --logdir {run_dir}" in summary


# ---- tasks with different spaces -----------------------------------------------------------------


def test_a_curriculum_model_is_evaluated_on_every_task_or_one_by_name(classic: Path, tmp_path: Path) -> None:
    """nb2 evaluate and nb2 info work on what nb2 curriculum saves: the run folder, a seed folder or its
    model.zip, in the curriculum's own spaces, with task ids and a normalised task's statistics."""
    from nb2_agents.curriculum.evaluate import evaluate_curriculum

    data = yaml.safe_load(classic.read_text())
    data["tasks"][1]["normalize"] = True
    classic.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_curriculum(classic, retention="nb2", seeds=[3], evals_per_task=1, runs_dir=tmp_path / "runs",
                            progress=False)  # fmt: skip
    run_dir = result.run_dir
    assert "average_performance" in result.summary() and "(one seed: no CI)" in result.summary()
    every = evaluate_curriculum(run_dir)
    assert [(r.task, r.episodes, r.seed, r.deterministic) for r in every] == [
        ("CartPole-v1", 2, 10003, True), ("Acrobot-v1", 2, 11003, True)
    ]  # fmt: skip
    assert all(0 <= r.score <= 1 and r.steps_trained == 2 * STEPS for r in every)
    (one,) = evaluate_curriculum(
        run_dir / "s3" / "model.zip", task="Acrobot-v1", episodes=3, deterministic=False
    )
    assert one.task == "Acrobot-v1" and one.episodes == len(one.returns) == 3 and not one.deterministic

    out = nb2("evaluate", run_dir / "s3", "--env", "CartPole-v1", "--json")
    assert out.returncode == 0, out.stderr
    (entry,) = json.loads(out.stdout)
    assert (
        entry["task"] == "CartPole-v1" and entry["returns"] == every[0].returns
    )  # same seeds, same episodes
    out = nb2("info", run_dir / "s3")
    assert out.returncode == 0 and "curriculum     classic: CartPole-v1, Acrobot-v1" in out.stdout, out.stderr
    out = nb2("evaluate", run_dir, "--env", "Pong-v5")
    assert out.returncode == 2 and "its tasks: CartPole-v1, Acrobot-v1" in out.stderr
    classic.unlink()  # a curriculum that is not built in must still be where it was
    out = nb2("evaluate", run_dir)
    assert out.returncode == 2 and "cannot find the curriculum it was trained on" in out.stderr
    assert str(classic.resolve()) in out.stderr


@pytest.mark.skipif(importlib.util.find_spec("minigrid") is None, reason="needs the minigrid extra")
def test_a_curriculum_model_on_images_is_evaluated_in_the_spaces_sb3_gave_it(tmp_path: Path) -> None:
    """SB3 transposes channels-last images for the model (VecTransposeImage), so a MiniGrid
    curriculum's model holds (3, 7, 7) where its tasks give (7, 7, 3): nb2 evaluate compares the
    two as SB3 does instead of refusing the model as a mismatch."""
    from nb2_agents.curriculum.evaluate import evaluate_curriculum

    path = write_curriculum(tmp_path / "grid.yaml", [_task("Empty", "MiniGrid-Empty-5x5-v0", 0.176, 0.955)],
                            name="grid")  # fmt: skip
    result = run_curriculum(path, retention="nb2", seeds=[0], evals_per_task=1, runs_dir=tmp_path / "runs",
                            progress=False)  # fmt: skip
    model = load_model(result.run_dir / "s0" / "model.zip").model
    assert model.observation_space["obs"].shape == (3, 7, 7)
    (entry,) = evaluate_curriculum(result.run_dir)
    assert entry.task == "Empty" and entry.episodes == 2 and not entry.deterministic  # as RL Zoo: sampled
    assert 0 <= entry.score <= 1


def test_classic_control_pair_trains_sequentially(classic: Path, tmp_path: Path) -> None:
    result = run_curriculum(
        classic, seeds=[0], evals_per_task=EVALS, runs_dir=tmp_path / "runs", progress=False
    )
    run_dir = result.run_dir
    _check_metrics(result.metrics)
    header, matrix = read_matrix_csv(run_dir / "matrix.csv")
    assert header == ["CartPole-v1", "Acrobot-v1"] and matrix.shape == (2, 2)
    assert len(_curves(run_dir)) == (1 + 2 * EVALS) * 2
    assert (run_dir / "s0" / "checkpoints" / "after_1_Acrobot-v1.zip").is_file()

    # the saved agent acts in the shared Discrete(3) and never picks Acrobot's third action on CartPole
    model = load_model(run_dir / "s0" / "model.zip").model
    assert model.action_space == gym.spaces.Discrete(3)
    common = runner_module.probe_spaces(load_curriculum(classic), "ppo")
    env = TaskAdapter(gym.make("CartPole-v1"), common, 0)
    obs, _ = env.reset(seed=0)
    batch = {key: np.stack([np.asarray(obs[key])] * 200) for key in obs}
    actions, _ = model.predict(batch, deterministic=False)
    assert set(actions.tolist()) <= {0, 1}
    env.close()


def test_classic_control_pair_trains_multitask(classic: Path, tmp_path: Path) -> None:
    result = run_curriculum(
        classic, mode="multitask", seeds=[0], evals_per_task=EVALS, runs_dir=tmp_path / "runs", progress=False
    )
    run_dir = result.run_dir
    assert "__multitask__" in run_dir.name
    metrics = result.metrics
    _check_metrics(metrics)
    assert isinstance(metrics["average_performance"]["mean"], float)
    assert metrics["forgetting"]["mean"] is None and metrics["backward_transfer"]["mean"] is None
    assert metrics["task_end_steps"] == {"0": [2 * STEPS]}  # one window over both budgets
    lines = (run_dir / "matrix.csv").read_text().splitlines()
    assert lines[0] == "after_task,CartPole-v1,Acrobot-v1" and lines[1].startswith("multitask,")
    assert len(lines) == 2
    # every task evaluated EVALS times per task in the one window, plus the untrained agent
    rows = _curves(run_dir)
    assert len(rows) == (1 + 2 * EVALS) * 2
    assert {r["current_task"] for r in rows if int(r["step"]) > 0} == {"-1"}  # all tasks at once
    seed_dir = run_dir / "s0"
    assert (seed_dir / "checkpoints" / "multitask.zip").is_file() and (seed_dir / "model.zip").is_file()
    # one vectorised env, a copy of each task: both tasks' Monitor files exist
    for name in ("CartPole-v1", "Acrobot-v1"):
        assert list((seed_dir / "monitor" / name).glob("*.monitor.csv"))
    tags = set(_scalars(seed_dir).Tags()["scalars"])
    assert {"curriculum/CartPole-v1/eval_score", "curriculum/Acrobot-v1/eval_score"} <= tags


# ---- reference runs ----------------------------------------------------------------------------


def test_references_are_cached_and_give_forward_transfer(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    paths = run_references(tiny, seeds=[0, 1], evals_per_task=EVALS, runs_dir=runs, progress=False)
    folder = runs / "references" / "tiny"
    assert len(paths) == 4 and all(p.parent == folder and p.is_file() for p in paths)
    assert sorted(p.name for p in folder.glob("*.json")) == sorted(p.name for p in paths)
    for path in paths:
        record = json.loads(path.read_text())
        assert record["task"] in ("CartPole-v1", "Mirrored") and record["seed"] in (0, 1)
        assert 0.0 <= record["auc"] <= 1.0 and 0.0 <= record["final_score"] <= 1.0
        # a single-task run from scratch: only its own task evaluated
        assert {row["task"] for row in record["curves"]} == {record["task"]}
    stamps = {p: p.stat().st_mtime_ns for p in paths}

    def no_training(job: Any) -> Any:
        raise AssertionError(f"reference for seed {job.seed} re-trained")

    monkeypatch.setattr(runner_module, "train_seed", no_training)
    start = time.perf_counter()
    again = run_references(tiny, seeds=[0, 1], evals_per_task=EVALS, runs_dir=runs, progress=False)
    assert again == paths and time.perf_counter() - start < 5
    assert {p: p.stat().st_mtime_ns for p in paths} == stamps
    monkeypatch.undo()

    result = run_curriculum(tiny, seeds=[0], evals_per_task=EVALS, runs_dir=runs, progress=False)
    ft = result.metrics["forward_transfer"]
    assert isinstance(ft["mean"], float) and ft["ci_low"] <= ft["mean"] <= ft["ci_high"]
    assert result.metrics["forward_transfer_note"] is None
    assert all(isinstance(r, float) for r in result.metrics["reference_auc"])
    assert json.loads((result.run_dir / "metrics.json").read_text())["forward_transfer"]["mean"] == ft["mean"]


# ---- the command line ---------------------------------------------------------------------------


def nb2(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2_agents.cli", *map(str, args)],
        capture_output=True, text=True, env=ENV, timeout=timeout,
    )  # fmt: skip


def test_cli_curriculum_then_plot(tiny: Path, tmp_path: Path) -> None:
    runs = tmp_path / "cli-runs"
    out = nb2(
        "curriculum", tiny, "--seeds", "0", "--evals-per-task", "2", "--runs-dir", runs, "--no-progress"
    )
    assert out.returncode == 0, out.stderr
    [run_dir] = list(runs.iterdir())
    for key in METRIC_KEYS:
        assert key in out.stdout
    assert "performance matrix" in out.stdout and "CartPole-v1" in out.stdout
    assert f"run folder: {run_dir}" in out.stdout
    assert f"tensorboard --logdir {run_dir}" in out.stdout
    assert (run_dir / "metrics.json").is_file() and (run_dir / "s0" / "model.zip").is_file()

    out = nb2("plot", run_dir)
    assert out.returncode == 0, out.stderr
    for name in ("curves.png", "heatmap.png"):
        png = run_dir / name
        assert f"wrote {png}" in out.stdout
        assert png.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    ("sig", "workers"), [(signal.SIGTERM, 2), (signal.SIGINT, 1)], ids=["sigterm", "ctrl-c"]
)
def test_a_stopped_curriculum_keeps_every_evaluation_and_the_model(
    tmp_path: Path, sig: signal.Signals, workers: int
) -> None:
    """SIGTERM (``timeout``, a scheduler) reaches the parent only: it stops each worker's seed as
    Ctrl-C would. Evaluations are on disk as they come, and each seed saves ``interrupted.zip``."""
    long = [
        dict(_task("CartPole-v1", "CartPole-v1"), steps=1_000_000),
        _task("LongPole", "nb2/CartPole-LongPole-v0"),
    ]
    yaml_path = write_curriculum(tmp_path / "long.yaml", long)
    seeds = [0, 1][:workers]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nb2_agents.cli", "curriculum", yaml_path, "--retention", "nb2",
         "--evals-per-task", "2000", "--seeds", ",".join(map(str, seeds)), "--workers", str(workers),
         "--runs-dir", tmp_path / "runs", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while sum(len(_rows(p)) >= 2 for p in (tmp_path / "runs").glob("*/s*/curves.csv")) < len(seeds):
            assert proc.poll() is None and time.monotonic() < deadline, "no evaluation after step 0"
            time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    (run,) = (tmp_path / "runs").iterdir()
    for seed in seeds:
        assert (run / f"s{seed}" / "interrupted.zip").is_file(), err
        rows = _rows(run / f"s{seed}" / "curves.csv")
        assert len(rows) >= 2 and rows[0]["step"] == "0"  # step 0 and at least one evaluation after it
    assert "Traceback" not in err


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_cli_list_names_the_builtins() -> None:
    out = nb2("curriculum", "--list")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == builtin_curricula()


# ---- bad input ---------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A runs dir holding an earlier run folder that no failing command may touch."""
    existing = tmp_path / "runs" / "tiny__ppo__nano__sequential__none__20250101-000000"
    existing.mkdir(parents=True)
    (existing / "config.yaml").write_text("suite: tiny\n")
    return tmp_path / "runs"


def _bad_files(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """Each case: the command's arguments after ``curriculum`` and what the error must say."""
    good = [_task("CartPole-v1", "CartPole-v1"), _task("Mirrored", "nb2/CartPole-Mirrored-v0")]
    unknown_key = write_curriculum(tmp_path / "unknown_key.yaml", good, epochs=3)
    steps0 = write_curriculum(tmp_path / "steps0.yaml", [{**good[0], "steps": 0}, good[1]])
    dup = write_curriculum(tmp_path / "dup.yaml", [good[0], {**good[1], "name": "CartPole-v1"}])
    mixed = write_curriculum(
        tmp_path / "mixed.yaml", [good[0], _task("Pendulum-v1", "Pendulum-v1", -1200, -150)]
    )
    counts = write_curriculum(
        tmp_path / "counts.yaml", [good[0], _task("Acrobot-v1", "Acrobot-v1", -500, -80)]
    )
    tiny = write_curriculum(tmp_path / "ok.yaml", good)
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("name: bad\ntasks:\n  - {env_id: CartPole-v1, steps: 256\n  - other: [\n")
    names = ", ".join(builtin_curricula())
    return {
        "unknown suite": (["cartpole-variantz"], f"built-in curricula: {names}"),
        "unknown key": ([str(unknown_key)], f"{unknown_key}: unknown top-level key 'epochs'"),
        "steps 0": ([str(steps0)], f"{steps0} [task 'CartPole-v1'].steps"),
        "duplicate names": ([str(dup)], "duplicate task name 'CartPole-v1'"),
        "discrete and continuous": (
            [str(mixed)], "mixes discrete actions (CartPole-v1) and continuous actions (Pendulum-v1)"
        ),
        "dqn with masked actions": (
            [str(counts), "--algo", "dqn"],
            "different numbers of actions, which are masked per task; --algo dqn cannot mask actions",
        ),
        "sac on discrete": (
            [str(tiny), "--algo", "sac"], "--algo sac cannot act in curriculum tiny's Discrete action space"
        ),
        "unknown retention": ([str(tiny), "--retention", "bogus"], "unknown retention strategy 'bogus'"),
        "malformed yaml": ([str(malformed)], f"{malformed}:4:"),
    }  # fmt: skip


BAD = [
    "unknown suite", "unknown key", "steps 0", "duplicate names", "discrete and continuous",
    "dqn with masked actions", "sac on discrete", "unknown retention", "malformed yaml",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_curriculum_input(
    case: str, runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nb2_agents.cli import main

    args, message = _bad_files(tmp_path)[case]
    before = snapshot(runs)
    code = main(["curriculum", *args, "--seeds", "0", "--runs-dir", str(runs), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith("nb2 curriculum: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert "Traceback" not in err and out == ""
    assert snapshot(runs) == before  # no run folder, nothing touched


def test_bad_curriculum_input_in_a_subprocess(runs: Path, tmp_path: Path) -> None:
    """The real exit status and stderr of the process, for two of the cases above."""
    before = snapshot(runs)
    cases = _bad_files(tmp_path)
    for case in ("unknown suite", "malformed yaml"):
        args, message = cases[case]
        out = nb2("curriculum", *args, "--runs-dir", runs, "--no-progress")
        assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1, out.stderr
        assert "Traceback" not in out.stderr and out.stdout == ""
    assert snapshot(runs) == before
