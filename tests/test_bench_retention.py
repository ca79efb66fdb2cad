"""The retention benchmark resumes: a finished run's figures are kept and reused, and the
targets are checked on whichever runs were made."""

from __future__ import annotations

from pathlib import Path

from benchmarks import retention as bench


def _measured(run: str, forgetting: float, perf: float, wall: float) -> bench.Measured:
    metrics = {
        "average_performance": {"mean": perf, "ci_low": perf, "ci_high": perf},
        "forgetting": {"mean": forgetting, "ci_low": forgetting, "ci_high": forgetting},
        "forward_transfer": {"mean": 0.1, "ci_low": 0.0, "ci_high": 0.2},
    }
    usage = bench.Usage(wall_s=wall, self_mb=300.0, children_mb=400.0, baseline_mb=250.0)
    return bench.Measured("suite", run, f"/runs/{run}", metrics, usage, [(64.0, 1.5)], ["a.png"])


def test_measured_run_is_saved_and_reused_only_for_the_same_settings(tmp_path: Path) -> None:
    m = _measured("nb2", 0.01, 0.8, 100.0)
    path = bench.measured_path(tmp_path, "suite", "nb2")
    bench.save_measured(path, m, [0, 1, 2], 1.0)
    assert bench.load_measured(path, [0, 1, 2], 1.0) == m
    assert bench.load_measured(path, [0], 1.0) is None
    assert bench.load_measured(path, [0, 1, 2], 0.5) is None
    assert bench.load_measured(tmp_path / "missing.json", [0, 1, 2], 1.0) is None


def test_targets_cover_the_runs_that_were_made() -> None:
    none, nb2 = _measured("none", 0.8, 0.0, 100.0), _measured("nb2", 0.01, 0.7, 140.0)
    rows = {r.metric: r for r in bench.suite_checks([none, nb2], "suite")}
    assert rows["suite: forgetting nb2 / none"].met is True
    assert rows["suite: wall nb2 / none"].met is True
    assert "suite: avg perf nb2 / multitask / ewc" not in rows  # multitask and ewc not run
    multi, ewc = _measured("multitask", 0.0, 0.9, 90.0), _measured("ewc", 0.5, 0.3, 110.0)
    rows = {r.metric: r for r in bench.suite_checks([none, nb2, multi, ewc], "suite")}
    assert rows["suite: avg perf nb2 / multitask / ewc"].met is False  # 0.7 < 0.9 x 0.9
