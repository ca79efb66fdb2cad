"""The retention benchmark resumes: a finished run's figures are kept and reused, and the
targets are checked on whichever runs were made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks import retention as bench
from nb2_agents.curriculum.spec import load_curriculum
from nb2_agents.hyperparams import plain


def _measured(run: str, forgetting: float, perf: float, wall: float) -> bench.Measured:
    metrics = {
        "average_performance": {"mean": perf, "ci_low": perf, "ci_high": perf},
        "forgetting": {"mean": forgetting, "ci_low": forgetting, "ci_high": forgetting},
        "forward_transfer": {"mean": 0.1, "ci_low": 0.0, "ci_high": 0.2},
        "auc_gap": {"mean": 0.05, "ci_low": 0.0, "ci_high": 0.1},
    }
    usage = bench.Usage(wall_s=wall, self_mb=300.0, children_mb=400.0, baseline_mb=250.0)
    return bench.Measured("classic-control", run, f"/runs/{run}", metrics, usage, [(64.0, 1.5)], ["a.png"])


def test_measured_run_is_saved_and_reused_only_for_the_same_settings(tmp_path: Path) -> None:
    m = _measured("nb2", 0.01, 0.8, 100.0)
    path = bench.measured_path(tmp_path, "classic-control", "nb2")
    bench.save_measured(path, m, [0, 1, 2], 1.0)
    assert bench.load_measured(path, [0, 1, 2], 1.0) == m
    assert bench.load_measured(path, [0], 1.0) is None
    assert bench.load_measured(path, [0, 1, 2], 0.5) is None
    assert bench.load_measured(tmp_path / "missing.json", [0, 1, 2], 1.0) is None


def test_a_run_measured_on_an_earlier_suite_yaml_is_measured_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    m = _measured("nb2", 0.01, 0.8, 100.0)
    path = bench.measured_path(tmp_path, "classic-control", "nb2")
    bench.save_measured(path, m, [0, 1, 2], 1.0)
    monkeypatch.setattr(bench, "suite_key", lambda suite: "another-yaml")
    assert bench.load_measured(path, [0, 1, 2], 1.0) is None
    assert "measured on an earlier classic-control YAML" in capsys.readouterr().out


def test_the_suite_key_follows_what_runs_not_where_the_yaml_lies(tmp_path: Path) -> None:
    """A copy of the suite's YAML elsewhere (a second checkout, a worktree) keeps its figures; a
    changed budget does not."""
    source = load_curriculum("classic-control").source
    assert source is not None
    text = source.read_text()
    copy = tmp_path / "elsewhere" / "classic-control.yaml"
    copy.parent.mkdir()
    copy.write_text(text.replace("description:", "description: reworded,"))
    assert bench.suite_key(str(copy)) == bench.suite_key("classic-control")
    copy.write_text(text.replace("steps: 100k", "steps: 90k", 1))
    assert bench.suite_key(str(copy)) != bench.suite_key("classic-control")


def test_a_run_measured_with_other_strategy_defaults_is_measured_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    m = _measured("nb2", 0.01, 0.8, 100.0)
    path = bench.measured_path(tmp_path, "classic-control", "nb2")
    bench.save_measured(path, m, [0, 1, 2], 1.0)
    assert json.loads(path.read_text())["strategy"]["distill_every"] >= 1
    now = bench.strategy_settings("nb2")
    monkeypatch.setattr(bench, "strategy_settings", lambda run: {**now, "distill_coef": 9.0})
    assert bench.load_measured(path, [0, 1, 2], 1.0) is None
    assert "measured with other nb2 defaults" in capsys.readouterr().out
    data = json.loads(path.read_text())  # kept before the settings were recorded: distill_every 1 then
    del data["strategy"]
    path.write_text(json.dumps(data))
    monkeypatch.setattr(bench, "strategy_settings", lambda run: {**now, "distill_every": 1})
    assert bench.load_measured(path, [0, 1, 2], 1.0) == m
    monkeypatch.setattr(bench, "strategy_settings", lambda run: {**now, "distill_every": 2})
    assert bench.load_measured(path, [0, 1, 2], 1.0) is None


def test_figures_kept_before_the_suite_key_are_checked_on_their_run_config(tmp_path: Path) -> None:
    """Older files have no suite key: the run's config.yaml must hold the suite's hyperparameters."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    m = _measured("nb2", 0.01, 0.8, 100.0)
    m.run_dir = str(run_dir)
    path = bench.measured_path(tmp_path, "classic-control", "nb2")
    bench.save_measured(path, m, [0, 1, 2], 1.0)
    data = json.loads(path.read_text())
    del data["suite_key"]
    path.write_text(json.dumps(data))
    hyperparams = plain(load_curriculum("classic-control").hyperparams)
    kwargs = {**hyperparams["policy_kwargs"], "preset": "nano"}
    config = {"hyperparams": {**hyperparams, "policy": "NB2Policy", "policy_kwargs": kwargs}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    assert bench.load_measured(path, [0, 1, 2], 1.0) is not None  # resolved extras do not matter
    config["hyperparams"]["gamma"] = 0.5
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    assert bench.load_measured(path, [0, 1, 2], 1.0) is None


def test_a_run_measured_before_the_auc_gap_gets_it_from_its_aucs(tmp_path: Path) -> None:
    m = _measured("nb2", 0.01, 0.8, 100.0)
    del m.metrics["auc_gap"]
    m.metrics.update(seeds=[0, 1], auc={"0": [1.0, 0.5], "1": [0.8, None]}, reference_auc=[0.9, 0.25])
    path = bench.measured_path(tmp_path, "classic-control", "nb2")
    bench.save_measured(path, m, [0, 1], 1.0)
    gap = bench.load_measured(path, [0, 1], 1.0).metrics["auc_gap"]  # type: ignore[union-attr]
    # seed 0: (0.1 + 0.25) / 2; seed 1: (-0.1 - 0.25) / 2, a task never evaluated scoring 0
    assert [s["value"] for s in gap["per_seed"]] == pytest.approx([0.175, -0.175])
    assert gap["mean"] == pytest.approx(0.0) and gap["n"] == 2
    assert "AUC gap" in bench.table([bench.load_measured(path, [0, 1], 1.0)])  # type: ignore[list-item]


def _cartpole(run: str, forgetting: float, perf: float, wall: float, mirrored: float) -> bench.Measured:
    """A cartpole-variants run whose last row scores ``mirrored`` on CartPole-Mirrored."""
    m = _measured(run, forgetting, perf, wall)
    tasks = ["CartPole-v1", "CartPole-LongPole", "CartPole-Mirrored"]
    per_seed = {"0": {"per_task_forward_transfer": [None, 0.3, -0.1]}}
    m.metrics.update(tasks=tasks, matrix=[[1.0, 0.5, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, mirrored]],
                     per_seed_metrics=per_seed)  # fmt: skip
    return bench.Measured("cartpole-variants", *[getattr(m, f) for f in ("run", "run_dir", "metrics", "usage",
                          "replay_mb", "plots")])  # fmt: skip


def test_targets_cover_the_runs_that_were_made() -> None:
    none, nb2 = _cartpole("none", 0.8, 0.0, 100.0, 1.0), _cartpole("nb2", 0.01, 0.86, 125.0, 0.9)
    rows = {
        r.metric.removeprefix("cartpole-variants: "): r
        for r in bench.suite_checks([none, nb2], "cartpole-variants")
    }
    assert rows["forgetting nb2"].met is True  # 0.01 <= 0.02
    assert rows["avg perf nb2"].met is True  # 0.86 >= 0.85
    assert rows["nb2 CartPole-Mirrored at the end"].met is True  # 0.9 >= 0.8
    assert rows["forward transfer nb2, CI low end"].met is False  # 0.0 is not above 0
    assert rows["wall nb2 / none"].met is True  # 1.25 <= 1.3
    assert rows["nb2 replay memory allocated (MB)"].met is True
    per_task = rows["nb2 parameters per task"]
    assert per_task.met is True and per_task.value.startswith("160 of ")  # nano: embedding + adapters, 5 x 32
    assert "avg perf nb2 / multitask" not in rows  # multitask not run
    multi = _cartpole("multitask", 0.0, 0.95, 90.0, 1.0)
    rows = {r.metric: r for r in bench.suite_checks([none, nb2, multi], "cartpole-variants")}
    assert rows["cartpole-variants: avg perf nb2 / multitask"].met is False  # 0.86 < 0.95 x 0.95


def test_minigrid_targets_ask_the_later_tasks_to_learn_faster() -> None:
    nb2 = _measured("nb2", 0.0, 0.8, 100.0)
    tasks = [
        "MiniGrid-Empty-5x5-v0",
        "MiniGrid-DoorKey-5x5-v0",
        "MiniGrid-Unlock-v0",
        "MiniGrid-KeyCorridorS3R1-v0",
    ]
    seeds = {"0": {"per_task_forward_transfer": [None, 0.1, 0.2, -0.3]},
             "1": {"per_task_forward_transfer": [None, 0.1, 0.4, None]}}  # fmt: skip
    nb2.metrics.update(tasks=tasks, matrix=[[1.0] * 4] * 4, per_seed_metrics=seeds)
    nb2 = bench.Measured("minigrid", nb2.run, nb2.run_dir, nb2.metrics, nb2.usage, nb2.replay_mb, nb2.plots)
    rows = {r.metric.removeprefix("minigrid: "): r for r in bench.suite_checks([nb2], "minigrid")}
    assert rows["forward transfer nb2, MiniGrid-Unlock-v0"].value == "0.300"  # mean over seeds that have one
    assert rows["forward transfer nb2, MiniGrid-Unlock-v0"].met is True
    assert rows["forward transfer nb2, MiniGrid-KeyCorridorS3R1-v0"].met is False
    assert rows["avg perf nb2"].met is True and rows["forward transfer nb2"].met is True
