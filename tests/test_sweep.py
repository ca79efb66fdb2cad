"""``nb2 sweep``: the search space as data, bad input refused before anything runs, a sweep in
this process and on a local Ray (the best trial as an entry that ``nb2 train --hyperparams``
runs unchanged), resuming a sweep, and a trial whose process died continuing from its checkpoint.

Budgets are tiny (CartPole, 2 envs, a few hundred steps per trial): the file takes about a
minute on two cores.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from nb2_agents.cli import main
from nb2_agents.config import TrainOptions, resolve_config
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import ALGOS
from nb2_agents.sweep import SweepOptions, sweep
from nb2_agents.sweep.run import _check_space
from nb2_agents.sweep.space import cap, load_space, parse_param
from nb2_agents.sweep.study import abandoned, open_storage, open_study
from nb2_agents.sweep.trial import TrialJob, run_trial

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = ["n_envs=2", "batch_size=32"]
"""Fixed in every trial: two envs, small batches."""
SEARCH = [
    "n_steps=[16, 32]", "learning_rate=loguniform(1e-4, 3e-3)", "n_epochs=[1, 2]",
    "policy_kwargs.preset=nano",
    *(f"{key}=none" for key in ("gamma", "gae_lambda", "ent_coef", "clip_range", "max_grad_norm", "vf_coef",
                                "batch_size", "policy_kwargs.nb2_kwargs.keep_ratio")),
]  # fmt: skip
"""A small space: three keys searched, the preset fixed, the others left to the entry."""


def _options(**fields: object) -> SweepOptions:
    base = dict(env="CartPole-v1", algo="ppo", trials=2, steps=256, evals=2, eval_episodes=2, overrides=TINY,
                search=SEARCH)  # fmt: skip
    return SweepOptions(**{**base, **fields})  # type: ignore[arg-type]


# --- the search space -------------------------------------------------------------------------


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_every_algorithms_shipped_space_is_valid(algo: str) -> None:
    space = load_space(algo)
    assert space.params, algo
    _check_space(space, algo, "NB2Policy")  # each key at each of its values, as the entry checks it


def test_the_space_forms() -> None:
    assert parse_param("n", [1, 2], "x").choices == (1, 2)  # type: ignore[union-attr]
    p = parse_param("lr", "loguniform(1e-5, 1e-2)", "x")
    assert p is not None and (p.kind, p.low, p.high, p.log) == ("loguniform", 1e-5, 1e-2, True)
    p = parse_param("n", "logint(8, 2048)", "x")
    assert p is not None and p.samples() == [8, 2048]
    assert parse_param("n", 64, "x") is None  # a fixed value
    space = load_space("ppo", search=["n_epochs=[3, 4]", "gamma=none", "clip_range=0.25"])
    assert space.params["n_epochs"].choices == (3, 4)
    assert "gamma" not in space.params and space.fixed["clip_range"] == 0.25


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([], "an empty list"),
        ("uniform(1, 1)", "LOW must be below HIGH"),
        ("loguniform(0, 1)", "a log scale needs LOW > 0"),
        ("int(1.5, 3)", "takes whole numbers"),
        ("uniform(a, 1)", "is not a number"),
        ("normal(0, 1)", "is not a range"),
        ([1, 1], "listed twice"),
    ],
)
def test_a_bad_spec_names_the_key(spec: object, message: str) -> None:
    with pytest.raises(UsageError, match=message) as err:
        parse_param("learning_rate", spec, "sweeps.yaml [ppo] learning_rate")
    assert "learning_rate" in str(err.value)


def test_rollouts_longer_than_the_budget_are_left_out() -> None:
    space = load_space("ppo", search=["n_steps=[16, 64, 1024]"])
    capped, note = cap(space, "n_steps", 100, "why")
    assert capped.params["n_steps"].choices == (16, 64) and note is not None and "why" in note
    capped, _ = cap(load_space("ppo", search=["n_steps=logint(8, 2048)"]), "n_steps", 100, "why")
    assert capped.params["n_steps"].high == 100
    assert cap(space, "n_steps", 4096, "why") == (space, None)


# --- bad input: one line, exit 2, nothing started ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "0"], "--trials"),
        (["--search", "n_step=[1, 2]"], "n_step: unknown key for PPO"),
        (["--search", "policy_kwargs.nb2_kwargs.depth=[1, 2]"], "unknown NB2Config field"),
        (["--address", "127.0.0.1:1"], "no Ray cluster answers there"),
        (["--storage", "nosuch://x"], "--storage nosuch://x: cannot open it"),
        (["--pruner", "median"], "--pruner 'median'"),
        (["--algo", "ppo", "--space", "missing.yaml"], "--space missing.yaml: no such file"),
    ],
)
def test_bad_input_is_one_line_before_anything_runs(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["sweep", "CartPole-v1", "--steps", "256", "--runs-dir", str(tmp_path), *args])
    except SystemExit as stop:  # argparse's own errors
        code = stop.code  # type: ignore[assignment]
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.iterdir())  # no sweep folder


def test_a_shared_study_of_another_problem_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    open_study(open_storage(url), "s", {"env": "CartPole-v1", "algo": "ppo", "steps": 256}, url)
    with pytest.raises(UsageError, match="was made for"):
        open_study(open_storage(url), "s", {"env": "CartPole-v1", "algo": "a2c", "steps": 256}, url)


# --- sweeps ----------------------------------------------------------------------------------------


def _trained_entry(best: Path, tmp_path: Path) -> None:
    """``nb2 train --hyperparams BEST`` takes the entry unchanged, and trains."""
    entry = yaml.safe_load(best.read_text())["CartPole-v1"]
    cfg = resolve_config(TrainOptions(env="CartPole-v1", hyperparams=best))
    assert cfg.steps == entry["n_timesteps"] and cfg.hyperparams["n_steps"] == entry["n_steps"]
    runs = tmp_path / "train"
    assert main(["train", "--env", "CartPole-v1", "--hyperparams", str(best), "--runs-dir", str(runs), "-q",
                 "--final-episodes", "2", "--no-progress"]) == 0  # fmt: skip
    assert len(list(runs.glob("*/eval.json"))) == 1


def test_a_sweep_here_writes_its_table_plot_and_best_entry_and_resumes(tmp_path: Path) -> None:
    result = sweep(_options(), runs_dir=tmp_path, verbose=0)
    assert len(result.rows) == 2 and {r.state for r in result.rows} <= {"complete", "pruned"}
    folder = result.sweep_dir
    for name in ("sweep.yaml", "study.db", "trials.csv", "trials.png", "ppo.yaml"):
        assert (folder / name).is_file(), name
    with open(folder / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["trial"] for r in rows] == ["0", "1"]
    assert set(rows[0]) >= {"n_steps", "learning_rate", "n_epochs"}
    assert all((folder / "trials" / f"trial_000{i}" / "config.yaml").is_file() for i in range(2))
    assert result.best_file == folder / "ppo.yaml" and result.best_params is not None
    _trained_entry(folder / "ppo.yaml", tmp_path)

    again = sweep(resume=folder, verbose=0)  # nothing left to run: finished trials are never redone
    assert [r.number for r in again.rows] == [0, 1]
    more = sweep(resume=folder, trials=3, verbose=0)
    assert [r.number for r in more.rows] == [0, 1, 2]
    assert more.rows[2].params != more.rows[0].params  # the sampler does not start over
    with pytest.raises(UsageError, match="only --trials, --workers and --address"):
        sweep(resume=folder, algo="a2c")


def test_a_sweep_on_a_local_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--trials", "3", "--steps", "256", "--evals", "2", "--eval-episodes", "2", "--workers", "2",
            "--runs-dir", str(tmp_path), *(a for s in TINY for a in ("--set", s)),
            *(a for s in SEARCH for a in ("--search", s))]  # fmt: skip
    assert main(["sweep", "CartPole-v1", *args]) == 0
    out = capsys.readouterr().out
    assert "on a local Ray, 2 at a time" in out and "train it: nb2 train --env CartPole-v1" in out
    (folder,) = tmp_path.iterdir()
    study = optuna.load_study(study_name="CartPole-v1__ppo__256", storage=f"sqlite:///{folder / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert len(states) == 3 and "COMPLETE" in states and set(states) <= {"COMPLETE", "PRUNED"}, states
    for t in study.trials:  # where each ran, and every evaluation it reached
        assert Path(t.user_attrs["run_dir"]).is_dir() and t.intermediate_values
    _trained_entry(folder / "ppo.yaml", tmp_path)


def test_trials_a_killed_sweep_left_running_run_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(open_storage(url), "s", {"env": "CartPole-v1", "algo": "ppo", "steps": 256}, url)
    trial = study.ask({"n_steps": optuna.distributions.CategoricalDistribution([16, 32])})
    trial.set_user_attr("sweep", "here")
    other = study.ask()
    other.set_user_attr("sweep", "elsewhere")  # another invocation's, still running: left alone
    assert abandoned(study, "here") == [{"n_steps": trial.params["n_steps"]}]
    assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING"]


_KILLED = """
import sys
from pathlib import Path
from nb2_agents.sweep.trial import TrialJob, run_trial
from nb2_agents.config import TrainOptions
job = TrialJob(TrainOptions(env="CartPole-v1", steps=1024, eval_freq=256, save_freq=256, eval_episodes=2,
                            final_episodes=2, overrides={"n_envs": 2, "n_steps": 64, "batch_size": 32}),
               trials_dir=Path(sys.argv[1]), evals=4)
run_trial(job, {"n_epochs": 1}, "trial_x", lambda step, value: True)
"""


def test_a_trial_whose_process_died_continues_from_its_checkpoint(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(tmp_path)], env=ENV)
    states = tmp_path / "trial_x" / "checkpoints" / "state"  # resumable checkpoints, <steps>/state.json
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(p.parent.name.isdigit() and int(p.parent.name) > 0 for p in states.glob("*/state.json")):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "trial_x" / "eval.json").exists(), "finished before it was killed"
    options = TrainOptions(
        env="CartPole-v1", steps=1024, eval_freq=256, save_freq=256, eval_episodes=2, final_episodes=2,
        overrides={"n_envs": 2, "n_steps": 64, "batch_size": 32},
    )  # fmt: skip
    job = TrialJob(options, trials_dir=tmp_path, evals=4)
    seen: list[int] = []
    outcome = run_trial(job, {"n_epochs": 1}, "trial_x", lambda step, value: seen.append(step) is None)
    assert outcome.finished and outcome.steps >= 1024 and outcome.value is not None
    assert seen and seen[0] > 256, seen  # continued past its first evaluation: not from scratch


def test_a_suite_sweep_scores_curricula(tmp_path: Path) -> None:
    from nb2_agents.curriculum.resolve import CurriculumOptions, resolve
    from tests.test_curriculum_resume import write_suite

    suite = write_suite(tmp_path / "tiny.yaml")  # three CartPole tasks
    space = [s for s in SEARCH if not s.startswith("policy_kwargs.preset")]  # the suite's preset stays
    result = sweep(
        str(suite), trials=2, steps=768, retention="nb2", search=space, runs_dir=tmp_path, verbose=0
    )
    assert [r.state for r in result.rows] == ["complete", "complete"]
    assert all(r.value is not None and 0.0 <= r.value <= 1.0 for r in result.rows)  # average performance
    assert result.best_file is not None and result.best_file.name == "best.yaml"
    block = yaml.safe_load(result.best_file.read_text())["hyperparams"]
    assert set(block) >= {"n_steps", "learning_rate", "n_epochs"}
    assert result.command.startswith(f"nb2 curriculum {suite} --retention nb2 --set")
    cfg, *_ = resolve(CurriculumOptions(suite, retention="nb2", overrides=block))
    assert cfg.hyperparams["n_steps"] == block["n_steps"]
    (trial,) = list((result.sweep_dir / "trials" / "trial_0000").iterdir())
    assert json.loads((trial / "metrics.json").read_text())["task_end_steps"]["0"][-1] == 768
    with pytest.raises(UsageError, match="curriculum suite"):
        sweep(str(suite), hyperparams="policies/ppo.yaml", runs_dir=tmp_path)
