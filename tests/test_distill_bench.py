"""The distillation benchmark (``benchmarks/distill.py``): its figures and targets on synthetic
results, its plan, and its cheapest run (pure distillation on CartPole) with a tiny budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import distill as bench
from benchmarks.distill_figures import (
    KICKSTART,
    MULTI,
    PURE,
    SCRATCH,
    Job,
    Outcome,
    kept_share,
    kickstart_line,
    kickstart_ratio,
    mean_ratio,
    multi_lines,
    pure_line,
    random_returns,
    steps_to_threshold,
    table,
    threshold,
)
from nb2_agents import zoo


def _built(name: str) -> bool:
    try:
        zoo.resolve(name)
    except Exception:
        return False
    return True


def test_steps_to_threshold_is_the_first_evaluation_reaching_it() -> None:
    curve = [(5_000, 20.0), (10_000, 480.0), (15_000, 300.0), (20_000, 500.0)]
    assert steps_to_threshold(curve, 476.1) == 10_000
    assert steps_to_threshold(curve, 501.0) is None
    assert steps_to_threshold([], 0.0) is None


def test_threshold_is_95_percent_of_the_card_above_random() -> None:
    assert threshold(500.0, 22.69) == pytest.approx(476.13, abs=0.01)
    assert threshold(-80.0, -497.37) == pytest.approx(-100.87, abs=0.01)  # negative returns: below -80


def test_kickstart_ratio_and_its_bounds() -> None:
    assert kickstart_ratio(10_000, 60_000, 100_000) == (pytest.approx(1 / 6), "=")
    assert kickstart_ratio(10_000, None, 100_000) == (0.1, "<=")  # scratch never: its budget counts
    assert kickstart_ratio(None, 50_000, 100_000) == (2.0, ">=")
    assert kickstart_ratio(None, None, 100_000) == (None, "?")


@pytest.mark.parametrize(
    ("ratios", "expected"),
    [
        ([(0.2, "="), (0.3, "=")], (0.25, "=", True)),
        ([(0.5, "="), (0.4, "=")], (0.45, "=", False)),
        ([(0.2, "="), (0.1, "<=")], (0.15, "<=", True)),  # an upper bound under the goal decides
        ([(0.5, "="), (0.4, "<=")], (0.45, "<=", None)),  # ... above it does not
        ([(0.5, "="), (2.0, ">=")], (1.25, ">=", False)),
        ([(0.1, "="), (0.2, ">=")], (0.15, ">=", None)),
        ([(0.1, "<="), (2.0, ">=")], (None, "?", None)),
        ([(0.1, "="), (None, "?")], (None, "?", None)),
    ],
)
def test_mean_ratio_meets_the_goal_only_where_bounds_decide(
    ratios: list[tuple[float | None, str]], expected: tuple[float | None, str, bool | None]
) -> None:
    mean, kind, met = mean_ratio(ratios, 1 / 3)
    assert (kind, met) == expected[1:]
    assert mean == (None if expected[0] is None else pytest.approx(expected[0]))


def _run(kind: str, target: str, seed: int, **fields: object) -> Outcome:
    return Outcome(Job(kind, target, seed), run_dir=f"runs/{kind}{seed}", wall_s=10.0, **fields)  # type: ignore[arg-type]


def test_kickstart_line_per_seed_mean_and_target() -> None:
    scratch = [(s, 20.0 if s < 60_000 else 500.0) for s in range(5_000, 100_001, 5_000)]
    kick = [(s, 20.0 if s < 15_000 else 500.0) for s in range(5_000, 100_001, 5_000)]
    outcomes = [
        _run(KICKSTART, "CartPole-v1", 0, curve=kick),
        _run(SCRATCH, "CartPole-v1", 0, curve=scratch),
        _run(KICKSTART, "CartPole-v1", 1, curve=kick),
        _run(SCRATCH, "CartPole-v1", 1, curve=[(s, 20.0) for s, _ in scratch]),  # never reaches it
    ]
    line = kickstart_line("CartPole-v1", outcomes, 500.0, 22.69, 100_000)
    assert line.cells == {0: "0.25 (15.0k / 60.0k)", 1: "<= 0.15 (15.0k / >100k)"}
    assert line.mean == "<= 0.20" and line.met is True
    assert line.data["0"] == {"kickstart_steps": 15_000, "scratch_steps": 60_000, "ratio": 0.25, "kind": "="}

    failed = [*outcomes[:3], Outcome(Job(SCRATCH, "CartPole-v1", 1), error="RuntimeError: boom")]
    line = kickstart_line("CartPole-v1", failed, 500.0, 22.69, 100_000)
    assert line.cells[1] == "failed" and line.mean == "n/a" and line.met is None


def _pure_report(student: float, teacher: float) -> dict[str, object]:
    return {"teachers": [{"student": {"mean_return": student}, "teacher": {"mean_return": teacher}}]}


def test_pure_line_normalises_negative_returns_by_the_random_return() -> None:
    assert kept_share(-90.0, -80.0, -497.37) == pytest.approx((-90 + 497.37) / (-80 + 497.37))
    assert kept_share(10.0, 5.0, 20.0) is None  # a teacher below random has nothing to keep
    outcomes = [
        _run(PURE, "Acrobot-v1", 0, report=_pure_report(-85.0, -80.0)),
        _run(PURE, "Acrobot-v1", 1, report=_pure_report(-120.0, -80.0)),
    ]
    line = pure_line("Acrobot-v1", outcomes, random_returns()["Acrobot-v1"])
    assert line.cells[0].startswith("0.988 (-85 / -80)")
    assert line.mean == "0.946" and line.met is False and line.target == ">= 0.95"


def test_multi_lines_one_per_task_of_the_suite() -> None:
    def report(kept: list[float]) -> dict[str, object]:
        return {"teachers": [{"kept": k, "student": {"score": k}, "teacher": {"score": 1.0}} for k in kept]}

    outcomes = [
        _run(MULTI, "classic-control", 0, report=report([1.0, 0.96, 0.7])),
        _run(MULTI, "classic-control", 1, report=report([1.0, 0.86, 0.9])),
    ]
    lines = multi_lines(outcomes)
    assert [line.where for line in lines] == ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"]
    assert [line.met for line in lines] == [True, True, False]
    assert lines[2].cells == {0: "0.700 (0.70 / 1.00)", 1: "0.900 (0.90 / 1.00)"}
    text = table(lines, [0, 1])
    assert "| seed 0 | seed 1 | mean | target | met |" in text
    assert "| MountainCar-v0 | 0.700 (0.70 / 1.00) | 0.900 (0.90 / 1.00) | 0.800 | >= 0.9 | NOT met |" in text


def test_report_writes_summary_md_and_json(tmp_path: Path) -> None:
    outcomes = [_run(PURE, "CartPole-v1", 0, report=_pure_report(490.0, 500.0), steps=50_000)]
    lines = [pure_line("CartPole-v1", outcomes, 22.69)]
    rows = bench.report(lines, outcomes, {"seeds": [0]}, tmp_path)
    assert rows[0].benchmark == "distill" and rows[0].met is True
    assert (
        "| pure: kept share of the teacher's return | CartPole-v1 | 0.979 (490 / 500)"
        in (tmp_path / "summary.md").read_text()
    )
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["lines"][0]["data"]["0"]["kept"] == pytest.approx(467.31 / 477.31)
    assert data["runs"][0]["job"]["kind"] == PURE


def test_quick_plan_covers_every_measure_or_says_why_not(tmp_path: Path) -> None:
    base = Job("", "", 0, runs_dir=str(tmp_path))
    plan = bench.plan_jobs(bench.MEASURES, [0], True, base)
    planned = {f"{job.kind} {job.target}" for job in plan.jobs}
    for env_id in bench.KICKSTART_ENVS:
        assert {
            f"kickstart {env_id}",
            f"scratch {env_id}",
        } <= planned or f"kickstart {env_id}" in plan.skipped
    for env_id in bench.TEACHERS:
        assert f"pure {env_id}" in planned or f"pure {env_id}" in plan.skipped
    assert "multi classic-control" in planned or "multi classic-control" in plan.skipped
    assert all(job.steps == bench.QUICK_STEPS and job.seed == 0 for job in plan.jobs)
    assert [j.temperature for j in plan.jobs if j.target == "MountainCar-v0"] in ([], [0.01])


@pytest.mark.skipif(not _built("cartpole-ppo-mlp"), reason="zoo:cartpole-ppo-mlp not built")
def test_cheapest_run_pure_cartpole_with_a_tiny_budget(tmp_path: Path) -> None:
    job = Job(PURE, "CartPole-v1", 0, ("zoo:cartpole-ppo-mlp",), 256, 0, 1.0, 2, str(tmp_path))
    outcome = bench.run_job(job)
    assert outcome.error is None and outcome.steps >= 256
    assert outcome.peak_mb >= outcome.baseline_mb > 0
    line = pure_line("CartPole-v1", [outcome], 22.69)
    assert line.met is not None and line.cells[0] != "failed"
    assert (Path(outcome.run_dir) / "teachers.json").is_file()


def test_a_finished_job_is_kept_and_reused_only_for_the_same_job(tmp_path: Path) -> None:
    job = Job(PURE, "CartPole-v1", 0, ("zoo:cartpole-ppo-mlp",), 256, 0, 1.0, 2, str(tmp_path))
    outcome = _run(PURE, "CartPole-v1", 0, report=_pure_report(490.0, 500.0), steps=256)
    outcome.job, outcome.curve = job, [(128, 20.5), (256, 31.0)]
    bench.save_measured(outcome)
    assert bench.load_measured(job) == outcome
    assert (
        bench.load_measured(
            Job(PURE, "CartPole-v1", 0, ("zoo:cartpole-ppo-mlp",), 512, 0, 1.0, 2, str(tmp_path))
        )
        is None
    )
    assert bench.load_measured(Job(PURE, "CartPole-v1", 1, runs_dir=str(tmp_path))) is None
    bench.measured_path(job).write_text("{not json")
    assert bench.load_measured(job) is None
    bench.save_measured(outcome)
    assert bench.run_jobs([job], workers=1) == [outcome]  # nothing runs: it was measured
