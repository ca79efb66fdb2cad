"""The speed-at-equal-return benchmark (``benchmarks/speed.py``): its data file, time to the
threshold read off Monitor files, the per-seed ratios and targets, and its plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import speed
from benchmarks.speed import Job, Outcome


def test_the_data_file_names_every_contender_and_its_source() -> None:
    assert set(speed.TASKS) == {"doorkey-cells", "doorkey-rgb-49", "doorkey-rgb-196"}
    for task in speed.TASKS.values():
        assert {"nb2", "flat"} <= set(task.policies)
        assert all(body["source"] for body in task.policies.values())
    assert speed.TASKS["doorkey-cells"].policies["mlp"]["overrides"]["policy"] == "MlpPolicy"
    assert speed.TASKS["doorkey-rgb-196"].policies["cnn"]["overrides"]["policy"] == "CnnPolicy"
    assert speed.TASKS["doorkey-rgb-196"].env_kwargs == {"minigrid_obs": "rgb"}
    assert "nb2-sampling" in speed.TASKS["doorkey-rgb-196"].policies


def test_a_malformed_task_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "speed.yaml"
    path.write_text("t:\n  env: CartPole-v1\n  steps: 10\n  policies:\n    nb2: {overrides: {}}\n")
    with pytest.raises(
        ValueError, match=r"speed.yaml \[t\].policies.nb2: needs exactly source and overrides"
    ):
        speed.load_tasks(path)


def test_time_to_threshold_is_the_first_moving_mean_at_it() -> None:
    episodes = [(float(i), 0.0) for i in range(5)] + [(5.0 + i, 1.0) for i in range(5)]
    assert speed.time_to_threshold(episodes, 0.9, window=4) == 8.0  # episodes 5..8 average 1
    assert speed.time_to_threshold(episodes, 0.5, window=4) == 6.0  # 3 of the last 4
    assert speed.time_to_threshold(episodes, 1.1, window=4) is None
    assert speed.time_to_threshold(episodes[:3], 0.0, window=4) is None  # too few episodes


def test_monitor_episodes_merge_envs_by_end_time(tmp_path: Path) -> None:
    for rank, (start, rows) in enumerate([(100.0, [(1.0, 0.5), (3.0, 0.9)]), (101.0, [(1.0, 0.2)])]):
        lines = ["#" + json.dumps({"t_start": start, "env_id": "x"}), "r,l,t"]
        lines += [f"{r},10,{t}" for t, r in rows]
        (tmp_path / f"{rank}.monitor.csv").write_text("\n".join(lines) + "\n")
    assert speed.monitor_episodes(tmp_path) == [(1.0, 0.5), (2.0, 0.2), (3.0, 0.9)]


def outcome(policy: str, seed: int, time_s: float | None, ret: float, task: str = "doorkey-cells") -> Outcome:
    job = Job(task, policy, seed, "MiniGrid-DoorKey-5x5-v0", 100, {}, {})
    return Outcome(job, train_s=50.0, steps=100, time_to_threshold=time_s, returns=[ret])


def test_figures_ratio_nb2_to_each_contender_seed_by_seed() -> None:
    runs = [
        outcome("nb2", 0, 30.0, 0.95),
        outcome("nb2", 1, None, 0.1),
        outcome("flat", 0, 60.0, 0.94),
        outcome("flat", 1, 80.0, 0.93),
    ]
    table = speed.figures(runs)
    flat, nb2 = table["doorkey-cells"]["flat"], table["doorkey-cells"]["nb2"]
    assert nb2.reached == 1 and flat.reached == 2
    assert flat.time_vs_nb2 == {0: 0.5, 1: None}  # NB2 never reached 0.9 on seed 1
    assert flat.median_time_vs_nb2 == 0.5 and flat.median_steps_per_s == 2.0
    [row] = speed.targets(table)
    assert row.goal == "<= 0.75" and row.met is False  # faster, but NB2's median return is lower
    assert row.value.startswith("0.50")
    assert "| doorkey-cells | flat | 60, 80 | 70 | 2/2 |" in speed.summary_table(table)


def test_target_met_at_equal_return_and_faster() -> None:
    runs = [outcome("nb2", 0, 30.0, 0.95), outcome("flat", 0, 90.0, 0.95)]
    [row] = speed.targets(speed.figures(runs))
    assert row.met is True and row.value.startswith("0.33")


def test_plan_interleaves_contenders_and_skips_those_a_task_lacks() -> None:
    base = Job("", "", 0, "", 0, {}, {})
    jobs = speed.plan_jobs(
        ["doorkey-cells", "doorkey-rgb-49"], ["nb2", "mlp", "cnn"], [0, 1], base, steps=500
    )
    labels = [j.label for j in jobs]
    assert labels[:4] == [
        "doorkey-cells nb2 s0",
        "doorkey-cells mlp s0",
        "doorkey-rgb-49 nb2 s0",
        "doorkey-rgb-49 cnn s0",
    ]
    assert len(jobs) == 8 and all(j.steps == 500 for j in jobs)
    pixels = [j for j in jobs if j.task == "doorkey-rgb-49"]
    assert all(j.env_kwargs == {"minigrid_obs": "rgb"} for j in pixels)


def test_sampling_is_scored_against_nb2_on_the_seeds_both_finished() -> None:
    runs = [
        outcome("nb2", 0, 30.0, 0.95),
        outcome("nb2", 1, 40.0, 0.93),
        outcome("nb2", 2, 40.0, 0.90),
        outcome("nb2-sampling", 0, 20.0, 0.94),
        outcome("nb2-sampling", 1, None, 0.0),  # never took off
    ]
    runs[3].train_s = 40.0  # 1.25x NB2's steps/s on seed 0
    ret, speed_row = speed.targets(speed.figures(runs))
    assert ret.metric == "doorkey-cells: mean return with / without token sampling"
    assert ret.met is False and ret.goal == ">= 0.98x without"
    assert ret.value.startswith("0.470 [") and "worst seed 0.000; seeds 0, 1)" in ret.value
    assert speed_row.value.startswith("1.12 (per seed 1.25, 1.00)") and speed_row.met is False
    equal = [outcome("nb2", 0, 30.0, 0.95), outcome("nb2-sampling", 0, 25.0, 0.935)]
    equal[1].train_s = 40.0
    ret, speed_row = speed.targets(speed.figures(equal))
    assert ret.met is True and speed_row.met is True  # 0.935 >= 0.98 * 0.95; 1.25x
