"""Curriculum plots from synthetic run folders (no training): PNGs, naming, errors, dispatch."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nb2_agents.curriculum.metrics import matrix_to_csv
from nb2_agents.curriculum.plot import is_curriculum_run, plot_curriculum
from nb2_agents.errors import UsageError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASKS = ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"]
HEADER = ["seed", "step", "current_task", "task", "mean_return", "std_return", "success_rate", "score"]


def _metric(mean: float | None) -> dict[str, Any]:
    ci = None if mean is None else (mean - 0.1, mean + 0.1)
    return {"mean": mean, "ci_low": ci and ci[0], "ci_high": ci and ci[1], "per_seed": [], "n": 2}


def make_run(root: Path, mode: str = "sequential", name: str = "run") -> Path:
    """A run folder: 2 seeds, 3 tasks, 3 evaluations per task window (steps differ by seed)."""
    run = root / name
    (run / "s0").mkdir(parents=True)
    (run / "s1").mkdir()
    seeds = [0, 1]
    per_task, n_points = 1000, 3 * len(TASKS)
    ends = {str(s): [per_task * (i + 1) + 7 * s for i in range(len(TASKS))] for s in seeds}
    if mode == "multitask":
        ends = {str(s): [per_task * len(TASKS) + 7 * s] for s in seeds}
    metrics = {
        "suite": "classic-control",
        "mode": mode,
        "retention": "none",
        "algo": "ppo",
        "preset": "nano",
        "seeds": seeds,
        "tasks": TASKS,
        "task_end_steps": ends,
        "average_performance": _metric(0.61),
        "forgetting": _metric(None if mode == "multitask" else 0.2),
        "forward_transfer": _metric(None),
        "backward_transfer": _metric(None if mode == "multitask" else -0.15),
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    rng = np.random.default_rng(0)
    with (run / "curves.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for seed in seeds:
            for k in range(n_points):
                step = (k + 1) * per_task // 3 + 5 * seed
                for task in TASKS:
                    score = float(np.clip(rng.uniform(0, 1), 0, 1))
                    writer.writerow([seed, step, k // 3, task, 100 * score, 5.0, "", f"{score:.4f}"])
    if mode == "multitask":
        with (run / "matrix.csv").open("w", newline="") as f:
            csv.writer(f).writerows([["after_task", *TASKS], ["multitask", "0.5", "0.75", "1.0"]])
    else:
        matrix_to_csv(rng.uniform(0, 1, (3, 3)), TASKS, run / "matrix.csv")
    return run


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.is_file() and path.read_bytes().startswith(PNG_MAGIC)
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.shape[2] in (3, 4)


@pytest.mark.parametrize("mode", ["sequential", "multitask"])
def test_plot_curriculum_default_paths(tmp_path: Path, mode: str) -> None:
    run = make_run(tmp_path, mode)
    assert is_curriculum_run(run)
    paths = plot_curriculum(run)
    assert paths == [run / "curves.png", run / "heatmap.png"]
    for path in paths:
        assert_png(path)
    assert not list(run.glob(".*tmp*"))  # no temp file left behind


def test_plot_curriculum_out_naming(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    out = tmp_path / "figs" / "x.png"
    paths = plot_curriculum(run, out)
    assert paths == [out, tmp_path / "figs" / "x-heatmap.png"]
    for path in paths:
        assert_png(path)
    assert not (run / "curves.png").exists()
    with pytest.raises(UsageError, match=r"\.png"):
        plot_curriculum(run, tmp_path / "x.jpg")


def test_is_curriculum_run(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    assert not is_curriculum_run(tmp_path) and not is_curriculum_run(tmp_path / "nothing")
    (run / "curves.csv").unlink()
    assert not is_curriculum_run(run)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("metrics.json", None, "missing"),
        ("metrics.json", "{not json", "not valid JSON"),
        ("metrics.json", json.dumps({"tasks": []}), "tasks"),
        ("metrics.json", json.dumps({"tasks": TASKS, "task_end_steps": {"0": "x"}}), "task_end_steps"),
        ("curves.csv", None, "missing"),
        ("curves.csv", "seed,step,task\n", "score"),
        ("curves.csv", ",".join(HEADER) + "\n", "no evaluation rows"),
        ("curves.csv", ",".join(HEADER) + "\n0,10,0,CartPole-v1,1,1,,oops\n", "line 2"),
        ("curves.csv", ",".join(HEADER) + "\n0,10,0,Pong,1,1,,0.5\n", "Pong"),
        ("matrix.csv", None, "missing"),
        ("matrix.csv", "garbage\n", "not a performance-matrix"),
        ("matrix.csv", "after_task,a,b,c\na,0.1,0.2,0.3\n", "do not match"),
    ],
)
def test_bad_files_name_the_file(tmp_path: Path, name: str, content: str | None, match: str) -> None:
    run = make_run(tmp_path)
    if content is None:
        (run / name).unlink()
    else:
        (run / name).write_text(content)
    with pytest.raises(UsageError, match=match) as info:
        plot_curriculum(run)
    assert name in str(info.value)
    assert not (run / "curves.png").exists()  # nothing written before the inputs are checked


def test_dispatch_through_nb2_plot(tmp_path: Path) -> None:
    from nb2_agents.plot import plot, plot_all

    a, b = make_run(tmp_path, name="a"), make_run(tmp_path, "multitask", name="b")
    assert plot_all([a]) == [a / "curves.png", a / "heatmap.png"]
    assert plot([a], tmp_path / "one.png") == tmp_path / "one.png"
    assert (tmp_path / "one-heatmap.png").is_file()
    paths = plot_all([a, b], tmp_path / "all.png")  # several runs and --out: suffixed by run name
    assert [p.name for p in paths] == ["all-a.png", "all-a-heatmap.png", "all-b.png", "all-b-heatmap.png"]
    for path in paths:
        assert_png(path)


def test_a_broken_curriculum_run_is_named_with_its_missing_file(tmp_path: Path) -> None:
    from nb2_agents.plot import plot_all

    broken = make_run(tmp_path, name="broken")
    (broken / "curves.csv").unlink()  # still recognised by its metrics.json: a clear error, not "no runs"
    with pytest.raises(UsageError, match=r"curves\.csv is missing"):
        plot_all([broken])


def test_duplicate_run_names_with_out(tmp_path: Path) -> None:
    from nb2_agents.plot import plot_all

    a, b = make_run(tmp_path / "x"), make_run(tmp_path / "y")
    with pytest.raises(UsageError, match="repeat"):
        plot_all([a, b], tmp_path / "all.png")


def _train_run(root: Path, name: str, seed: int, episodes: int) -> Path:
    """An ``nb2 train`` run folder: its config and one Monitor CSV of ``episodes`` episodes."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"env: CartPole-v1\nalgo: ppo\nseed: {seed}\n")
    lines = ['#{"t_start": 0.0, "env_id": "CartPole-v1"}', "r,l,t"]
    lines += [f"{10.0 + i},{10 + i},{0.1 * (i + 1)}" for i in range(episodes)]
    (run / "0.monitor.csv").write_text("\n".join(lines) + "\n")
    return run


def test_plot_of_a_whole_runs_folder_draws_what_it_can(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """nb2 plot runs/*: a README, a run killed before its first episode ended and a folder of no runs
    are skipped with a line each; the train runs and the curriculum run are drawn, side by side."""
    from nb2_agents.plot import plot_all

    runs = tmp_path / "runs"
    good = [_train_run(runs, f"cartpole-s{s}", s, 30) for s in (0, 1)]
    orphan = _train_run(runs, "killed", 2, 0)
    curriculum = make_run(runs, name="curriculum")
    (runs / "README.md").write_text("# runs\n")
    (runs / "empty").mkdir()
    paths = plot_all(sorted(runs.iterdir()), tmp_path / "all.png")
    assert sorted(p.name for p in paths) == ["all-curriculum-heatmap.png", "all-curriculum.png", "all.png"]
    err = capsys.readouterr().err
    for skipped in (orphan, runs / "README.md", runs / "empty"):
        assert f"nb2 plot: skipped {skipped}" in err
    assert "no finished episode" in err and str(good[0]) not in err and str(curriculum) not in err
    with pytest.raises(UsageError, match="nothing to plot"):
        plot_all([orphan, runs / "README.md"], tmp_path / "none.png")


def test_band_labels_count_seeds_and_say_when_runs_repeat_one(tmp_path: Path) -> None:
    from nb2_agents.plot import _count, group_runs

    (three,) = group_runs([_train_run(tmp_path, f"a{s}", s, 1) for s in (0, 1, 2)])
    (repeated,) = group_runs([_train_run(tmp_path, f"b{i}", 0, 1) for i in (0, 1)])
    assert _count(three) == "3 seeds"
    assert _count(repeated) == "2 runs of seed 0"


def test_one_seed_gets_no_interval_in_titles() -> None:
    from nb2_agents.curriculum.plot import _fmt_metric

    assert _fmt_metric({**_metric(0.5), "n": 1}) == "0.50"
    assert _fmt_metric(_metric(0.5)) == "0.50 [0.40, 0.60]"


def test_a_run_that_fails_says_so_in_its_folder_and_plot_skips_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stable_baselines3 import PPO

    from nb2_agents.plot import plot_all
    from nb2_agents.training import train

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the env crashed")

    monkeypatch.setattr(PPO, "learn", boom)
    with pytest.raises(RuntimeError, match="the env crashed"):
        train(env="CartPole-v1", steps="64", runs_dir=tmp_path / "runs", progress=False, verbose=False)
    (failed,) = (tmp_path / "runs").iterdir()
    assert (failed / "failed.txt").read_text() == "RuntimeError: the env crashed\n"
    good = _train_run(tmp_path / "runs", "good", 0, 20)
    assert plot_all([failed, good], tmp_path / "x.png") == [tmp_path / "x.png"]
    assert f"skipped {failed}: the run failed (RuntimeError: the env crashed)" in capsys.readouterr().err
