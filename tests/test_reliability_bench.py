"""The reliability benchmark (``benchmarks/reliability.py``): its figures and targets on synthetic
per-seed results, its plan, and one quick job (CartPole PPO, one seed, NB2 and MLP) that resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import reliability as bench
from benchmarks import reliability_figures as figs
from nb2_agents.config import resolve_config
from nb2_agents.errors import UsageError
from nb2_agents.evaluation import EVAL_SEED_OFFSET


def _outcomes(row: str, policy: str, means: list[float], curves: list[list[float]] | None = None) -> list:
    spec = figs.ROWS[row]
    out = []
    for seed, mean in enumerate(means):
        job = figs.Job(row, policy, seed, spec.env, spec.algo, 1000, {}, 2)
        curve = [(100 * (i + 1), r) for i, r in enumerate(curves[seed])] if curves else []
        out.append(figs.Outcome(job, f"/runs/{seed}", wall_s=10.0, returns=[mean, mean], curve=curve))
    return out


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    values = np.array([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 100.0]])
    assert figs.iqm(values)[0] == pytest.approx(np.mean([2, 3, 4, 5, 6, 7]))  # 2 cut from each end
    assert figs.iqm(np.array([[3.0, 1.0, 2.0]]))[0] == pytest.approx(2.0)  # n < 4: the mean
    assert figs.iqm(np.array([[1.0, 2.0], [3.0, 5.0]])).tolist() == [1.5, 4.0]


def test_eval_seeds_are_disjoint_from_training_and_training_time_evaluation() -> None:
    held_out = {figs.eval_seed(s, e) for s in range(10) for e in range(figs.EPISODES)}
    assert len(held_out) == 10 * figs.EPISODES
    tuned_on = {s + EVAL_SEED_OFFSET for s in range(10)} | set(range(10 + 16))  # eval.json; n_envs <= 16
    assert not held_out & tuned_on
    with pytest.raises(ValueError):
        figs.eval_seed(0, figs.EVAL_SEED_STRIDE)


def test_figures_per_seed_iqm_ci_threshold_and_worst() -> None:
    means = [500.0] * 8 + [480.0, 120.0]
    fig = figs.figures("cartpole-ppo", "nb2", _outcomes("cartpole-ppo", "nb2", means))
    assert fig.per_seed == dict(enumerate(means))
    assert fig.iqm == pytest.approx(500.0)  # 120 and 480 are cut
    assert fig.iqm is not None and fig.ci_low is not None and fig.ci_high is not None
    assert fig.ci_low <= fig.iqm <= fig.ci_high
    assert (fig.at_threshold, fig.worst, fig.worst_seed) == (9, 120.0, 9)
    assert fig.complete and fig.wall_s == 10.0


def test_targets_met_and_missed() -> None:
    nb2 = figs.figures("cartpole-ppo", "nb2", _outcomes("cartpole-ppo", "nb2", [500.0] * 9 + [400.0]))
    mlp = figs.figures("cartpole-ppo", "mlp", _outcomes("cartpole-ppo", "mlp", [500.0] * 10))
    rows = {r.metric: r for r in figs.checks("cartpole-ppo", nb2, mlp)}
    assert rows["cartpole-ppo: IQM nb2 / mlp"].met is True  # within 2% of 0..500
    assert rows["cartpole-ppo: nb2 seeds >= 475"].met is True  # 9/10
    assert rows["cartpole-ppo: nb2 seeds >= 475"].value == "9/10"

    nb2 = figs.figures("acrobot-ppo", "nb2", _outcomes("acrobot-ppo", "nb2", [-120.0] * 10))
    mlp = figs.figures("acrobot-ppo", "mlp", _outcomes("acrobot-ppo", "mlp", [-80.0] * 10))
    rows = {r.metric: r for r in figs.checks("acrobot-ppo", nb2, mlp)}
    assert rows["acrobot-ppo: IQM nb2 / mlp"].met is False  # 40 behind, the margin is 10
    assert rows["acrobot-ppo: nb2 seeds >= -100"].met is False
    assert figs.checks("acrobot-ppo", None, mlp) == []


def test_a_failed_seed_or_a_missing_policy_makes_a_target_n_a() -> None:
    outcomes = _outcomes("cartpole-ppo", "nb2", [500.0] * 3)
    outcomes[1].error = "RuntimeError: boom"
    nb2 = figs.figures("cartpole-ppo", "nb2", outcomes)
    assert nb2.per_seed[1] is None and not nb2.complete and nb2.iqm == 500.0
    rows = figs.checks("cartpole-ppo", nb2, None)
    assert [r.metric for r in rows] == ["cartpole-ppo: nb2 seeds >= 475"]  # no MLP: no IQM target
    assert rows[0].met is None


def test_doorkey_late_collapse_per_seed() -> None:
    assert figs.late_collapse([(1, 0.5), (2, 0.93), (3, 0.91)]) is False  # within 0.05 of the best
    assert figs.late_collapse([(1, 0.5), (2, 0.93), (3, 0.11)]) is True
    assert figs.late_collapse([]) is False
    curves = [[0.5, 0.93, 0.92], [0.5, 0.93, 0.11], [0.9, 0.95, 0.95]]
    nb2 = figs.figures("doorkey-ppo", "nb2", _outcomes("doorkey-ppo", "nb2", [0.93, 0.1, 0.95], curves))
    assert nb2.collapsed == [1] and nb2.curves == 3
    rows = {r.metric: r for r in figs.checks("doorkey-ppo", nb2, None)}
    assert rows["doorkey-ppo: nb2 seeds without a late collapse"].met is False
    assert rows["doorkey-ppo: nb2 seeds >= 0.9"].value == "2/3"


def test_report_writes_summary_md_and_json(tmp_path: Path) -> None:
    outcomes = _outcomes("cartpole-ppo", "nb2", [500.0, 490.0]) + _outcomes(
        "cartpole-ppo", "mlp", [500.0, 10.0]
    )
    jobs = [o.job for o in outcomes]
    config = {"rows": ["cartpole-ppo"], "policies": ["nb2", "mlp"], "seeds": [0, 1]}
    targets = bench.report(outcomes, jobs, {"doorkey-ppo": "MiniGrid not installed"}, config, tmp_path)
    assert all(r.benchmark == "reliability" for r in targets)
    text = (tmp_path / "summary.md").read_text()
    assert "| cartpole-ppo | CartPole-v1 | ppo |" in text and "Skipped doorkey-ppo" in text
    data = json.loads((tmp_path / "summary.json").read_text())
    assert set(data) == {"config", "measures", "scores", "rows", "skipped", "checks", "runs"}
    mlp = data["rows"]["cartpole-ppo"]["policies"]["mlp"]
    assert mlp["per_seed"] == {"0": 500.0, "1": 10.0} and mlp["worst_seed"] == 1
    assert data["scores"]["CartPole-v1"] == {"threshold": 475.0, "low": 0.0, "high": 500.0}
    assert len(data["runs"]) == 4


def test_plan_mlp_drops_nb2_options_and_keeps_the_rest(tmp_path: Path) -> None:
    base = figs.Job("", "", 0, "", "", 0, {}, runs_dir=str(tmp_path))
    jobs, skipped = bench.plan_jobs(list(figs.ROWS), list(figs.POLICIES), [0, 1], base, quick=True)
    planned = {j.row for j in jobs} | set(skipped)
    assert planned == set(figs.ROWS)
    assert len(jobs) == 2 * 2 * (len(figs.ROWS) - len(skipped))
    assert all(j.steps == bench.QUICK_STEPS for j in jobs)
    by = {(j.row, j.policy, j.seed): j for j in jobs}
    assert by[("cartpole-ppo", "nb2", 0)].overrides == {}
    assert by[("cartpole-ppo", "mlp", 0)].overrides == {"policy": "MlpPolicy", "policy_kwargs": {}}
    assert by[("cartpole-ppo-const", "mlp", 1)].overrides["clip_range"] == 0.2
    if "doorkey-ppo" not in skipped:  # preset and sampling go (nb2 sets normalize_images)
        assert by[("doorkey-ppo", "mlp", 0)].overrides["policy_kwargs"] == {}
    full, _ = bench.plan_jobs(["cartpole-a2c", "acrobot-ppo"], ["nb2"], [0], base)
    assert [(j.row, j.steps) for j in full] == [("cartpole-a2c", 500_000), ("acrobot-ppo", 200_000)]
    scaled, _ = bench.plan_jobs(["cartpole-a2c"], ["nb2"], [0], base, steps_scale=0.01, quick=True)
    assert scaled[0].steps == 5_000


def test_the_config_layer_takes_sb3_policies_and_rejects_nb2_options_for_them() -> None:
    job = bench.plan_jobs(["pendulum-sac"], ["mlp"], [0], figs.Job("", "", 0, "", "", 0, {}))[0][0]
    cfg = resolve_config(env=job.env, algo=job.algo, overrides=job.overrides)
    assert cfg.hyperparams["policy"] == "MlpPolicy" and cfg.preset == "mlp" and cfg.architecture == {}
    with pytest.raises(UsageError, match=r"\['preset'\] are NB2Policy options"):
        resolve_config(env="CartPole-v1", overrides={"policy": "MlpPolicy"})
    with pytest.raises(UsageError, match="not a policy for PPO"):
        resolve_config(env="CartPole-v1", overrides={"policy": "NoSuchPolicy"})


def test_cli_parses_seed_ranges_and_names() -> None:
    assert bench.parse_seeds("0-9") == list(range(10))
    assert bench.parse_seeds("0-2,7,1") == [0, 1, 2, 7]
    with pytest.raises(SystemExit):
        bench.main(["--rows", "no-such-row"])
    with pytest.raises(SystemExit):
        bench.main(["--seeds", "a-b"])


def test_quick_job_cartpole_ppo_both_policies_then_resumes(tmp_path: Path) -> None:
    kwargs = dict(rows=["cartpole-ppo"], steps_scale=0.004, workers=1, runs_dir=tmp_path)  # 400 steps
    targets = bench.run(True, **kwargs)  # type: ignore[arg-type]
    assert {r.metric for r in targets} == {"cartpole-ppo: IQM nb2 / mlp", "cartpole-ppo: nb2 seeds >= 475"}
    data = json.loads((tmp_path / "summary.json").read_text())
    runs = {r["job"]["policy"]: r for r in data["runs"]}
    assert set(runs) == {"nb2", "mlp"} and all(r["error"] is None for r in runs.values())
    for run in runs.values():
        assert len(run["returns"]) == bench.QUICK_EPISODES and run["steps"] >= 400 and run["wall_s"] > 0
        assert run["eval_seeds"] == [figs.eval_seed(0, e) for e in range(bench.QUICK_EPISODES)]
        assert run["curve"] and run["deterministic"] is True
    assert "__mlp__s0__" in runs["mlp"]["run_dir"] and "__nano__s0__" in runs["nb2"]["run_dir"]
    assert len(list((tmp_path / bench.MEASURED_DIR).glob("*.json"))) == 2

    folders = {p.name for p in tmp_path.iterdir()}
    assert bench.run(True, **kwargs) == targets  # type: ignore[arg-type]  # both kept: nothing trains
    assert {p.name for p in tmp_path.iterdir()} == folders
