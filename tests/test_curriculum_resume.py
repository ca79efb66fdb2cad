"""``nb2 curriculum --resume RUN``: a curriculum with ``--retention nb2`` killed with SIGKILL at a
random moment, or stopped with SIGTERM, and resumed ends exactly as an uninterrupted run with the
same seeds (metrics.json, curves.csv, every seed's Monitor CSVs and TensorBoard points); a worker
whose parent died stops; a damaged newest checkpoint, a finished run, a changed suite and options
given with ``--resume`` are handled.

Budgets are tiny (three CartPole tasks of 512 steps): the file takes about a minute on two cores.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from nb2_agents.checkpoint import STATE_DIR, listed
from nb2_agents.curriculum.runner import resume_curriculum, run_curriculum
from nb2_agents.errors import UsageError

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
FREQ = 200
"""--checkpoint-freq: checkpoints at 0, 256 (a rollout start after 200), 512 (task 1 starts) ..."""
VOLATILE = ("seconds", "phase_seconds")
"""metrics.json keys that differ between two runs of the same configuration (wall times)."""


def _task(name: str, env_id: str) -> dict[str, Any]:
    return {"name": name, "env_id": env_id, "steps": 512, "eval_episodes": 2, "random_return": 20,
            "reference_return": 500}  # fmt: skip


def write_suite(path: Path, steps: int = 512) -> Path:
    tasks = [_task("CartPole-v1", "CartPole-v1"), _task("Mirrored", "nb2/CartPole-Mirrored-v0"),
             _task("LongPole", "nb2/CartPole-LongPole-v0")]  # fmt: skip
    tasks[-1]["steps"] = steps
    data = {"name": "tiny", "algo": "ppo", "preset": "nano", "tasks": tasks,
            "hyperparams": {"n_envs": 2, "n_steps": 32, "batch_size": 32, "n_epochs": 1}}  # fmt: skip
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli_args(suite: Path, runs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nb2_agents.cli", "curriculum", str(suite), "--retention", "nb2",
            "--checkpoint-freq", str(FREQ), "--runs-dir", str(runs), "--no-progress", *extra]  # fmt: skip


def only_run(runs: Path) -> Path:
    found = [p for p in runs.iterdir() if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


def checkpoints(run: Path) -> list[Path]:
    return [p for seed in sorted(run.glob("s*")) for p in listed(seed / "checkpoints" / STATE_DIR)]


def stop_after(suite: Path, runs: Path, min_step: int, sig: int, *extra: str) -> tuple[Path, int]:
    """Start ``nb2 curriculum``, send ``sig`` once a checkpoint at ``min_step`` or later exists (and
    a seeded moment more); the run folder and the exit status."""
    runs.mkdir(parents=True)
    log = runs.parent / f"{runs.name}.log"
    delay = random.Random(min_step).uniform(0.0, 0.4)
    with log.open("w") as out:
        proc = subprocess.Popen(cli_args(suite, runs, *extra), stdout=out, stderr=subprocess.STDOUT, env=ENV)
        try:
            deadline = time.monotonic() + 180
            while not any(int(p.name) >= min_step for r in runs.iterdir() for p in checkpoints(r)):
                assert proc.poll() is None, f"finished before step {min_step}:\n{log.read_text()}"
                assert time.monotonic() < deadline, "no checkpoint in 180 s"
                time.sleep(0.02)
            time.sleep(delay)
            proc.send_signal(sig)
            proc.wait(timeout=60)
        finally:
            proc.kill()
    run = only_run(runs)
    assert not (run / "metrics.json").exists(), f"finished before the signal:\n{log.read_text()}"
    return run, proc.returncode


def metrics(run: Path) -> dict[str, Any]:
    data = json.loads((run / "metrics.json").read_text())
    return {k: v for k, v in data.items() if k not in VOLATILE}


def monitor_rows(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text().splitlines()
    return [(row["r"], row["l"]) for row in csv.DictReader(lines[1:])]


def scalars(seed_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(seed_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_same_run(run: Path, reference: Path) -> None:
    """The metrics, every evaluation, every training episode and every curriculum/ and rollout/
    TensorBoard point of ``reference``."""
    assert metrics(run) == metrics(reference)
    assert (run / "curves.csv").read_text() == (reference / "curves.csv").read_text()
    seeds = sorted(p.name for p in reference.glob("s*"))
    assert sorted(p.name for p in run.glob("s*")) == seeds
    for seed in seeds:
        want_files = sorted(p.relative_to(reference) for p in (reference / seed).rglob("*.monitor.csv"))
        assert sorted(p.relative_to(run) for p in (run / seed).rglob("*.monitor.csv")) == want_files
        for rel in want_files:
            assert monitor_rows(run / rel) == monitor_rows(reference / rel), rel
        got, want = scalars(run / seed), scalars(reference / seed)
        compared = [t for t in want if t.split("/")[0] in ("curriculum", "rollout", "retention")]
        assert "curriculum/average_score" in compared
        for tag in compared:
            assert got.get(tag) == want[tag], tag


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_suite(tmp_path_factory.mktemp("suite") / "tiny.yaml")


@pytest.fixture(scope="module")
def reference(suite: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run, seed 0, with the CLI's defaults."""
    runs = tmp_path_factory.mktemp("reference")
    proc = subprocess.run(cli_args(suite, runs), capture_output=True, text=True, env=ENV, timeout=240)
    assert proc.returncode == 0, proc.stderr
    return only_run(runs)


@pytest.mark.parametrize("min_step", [256, 512, 832], ids=["task-0", "task-1-start", "task-1"])
def test_killed_curriculum_resumes_to_the_same_result(
    suite: Path, reference: Path, tmp_path: Path, min_step: int
) -> None:
    run, status = stop_after(suite, tmp_path / "runs", min_step, signal.SIGKILL)
    assert status == -signal.SIGKILL
    command = [sys.executable, "-m", "nb2_agents.cli", "curriculum", "--resume", str(run), "--no-progress"]
    proc = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "resuming at" in proc.stdout
    assert_same_run(run, reference)


def test_a_normalised_task_resumes_exactly_without_a_replay_warning(tmp_path: Path) -> None:
    """MountainCar with its own normalisation (as in classic-control): the statistics come back
    from the checkpoint, and the replayed episodes are checked on the env's own observations."""
    suite = tmp_path / "mc.yaml"
    task = {"name": "MountainCar-v0", "env_id": "MountainCar-v0", "steps": 768, "normalize": True,
            "eval_episodes": 2, "random_return": -200, "reference_return": -110}  # fmt: skip
    tasks = [task, _task("CartPole-v1", "CartPole-v1")]
    data = {"name": "mc", "algo": "ppo", "preset": "nano", "tasks": tasks,
            "hyperparams": {"n_envs": 2, "n_steps": 32, "batch_size": 32, "n_epochs": 1}}  # fmt: skip
    suite.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = subprocess.run(
        cli_args(suite, tmp_path / "ref"), capture_output=True, text=True, env=ENV, timeout=240
    )
    assert proc.returncode == 0, proc.stderr
    run, _ = stop_after(suite, tmp_path / "runs", 400, signal.SIGKILL)
    command = [sys.executable, "-m", "nb2_agents.cli", "curriculum", "--resume", str(run), "--no-progress"]
    proc = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "did not replay" not in proc.stderr
    reference = only_run(tmp_path / "ref")
    assert metrics(run) == metrics(reference)
    assert (run / "curves.csv").read_text() == (reference / "curves.csv").read_text()


def test_sigterm_keeps_evaluations_and_resumes(suite: Path, reference: Path, tmp_path: Path) -> None:
    run, status = stop_after(suite, tmp_path / "runs", 640, signal.SIGTERM)
    assert status == 130  # saved, as on Ctrl-C
    seed = run / "s0"
    assert (seed / "interrupted.zip").is_file() and checkpoints(run)
    with (seed / "curves.csv").open() as f:
        kept = list(csv.DictReader(f))
    with (reference / "s0" / "curves.csv").open() as f:
        want = list(csv.DictReader(f))
    assert kept and kept == want[: len(kept)]  # every evaluation made before the signal
    assert max(int(r["step"]) for r in kept) >= 512
    resume_curriculum(run, progress=False, verbose=0)
    assert_same_run(run, reference)


def test_workers_stop_when_their_parent_dies(suite: Path, tmp_path: Path) -> None:
    """kill -9 of the run's process: its seeds' Ray workers stop with it (none trains on unseen, which
    a ``--resume`` beside it would repeat), and the run resumes to the result of two uninterrupted
    seeds."""
    runs = tmp_path / "runs"
    run, _ = stop_after(suite, runs, 256, signal.SIGKILL, "--seeds", "0,1", "--workers", "2")

    def progress() -> list[tuple[str, int]]:
        return sorted((str(p), p.stat().st_size) for p in run.glob("s*/**/*") if p.is_file())

    time.sleep(5)  # a worker still training would write its Monitor rows, evaluations, checkpoints
    before = progress()
    time.sleep(10)
    assert progress() == before, "a seed trained on after its run's process died"
    assert not list(run.glob("s*/result.json"))
    resumed = resume_curriculum(run, workers=2, progress=False, verbose=0)
    again = run_curriculum(suite, retention="nb2", seeds=[0, 1], checkpoint_freq=FREQ, workers=2,
                           runs_dir=tmp_path / "again", progress=False, verbose=0)  # fmt: skip
    assert metrics(resumed.run_dir) == metrics(again.run_dir)


def test_damaged_newest_checkpoint_falls_back(
    suite: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = stop_after(suite, tmp_path / "runs", 832, signal.SIGKILL)
    newest = checkpoints(run)[0]
    (newest / "params.pt").write_bytes(b"truncated")
    (run / "s0" / ".curves.csv.k3j9x0aa.tmp").write_text("step,half")  # a write the kill cut short
    resume_curriculum(run, progress=False, verbose=0)
    assert not list(run.rglob(".*.tmp"))
    assert f"checkpoint {newest} cannot be read" in capsys.readouterr().err
    assert_same_run(run, reference)


def test_no_readable_checkpoint_is_refused_and_the_seed_kept(suite: Path, tmp_path: Path) -> None:
    run, _ = stop_after(suite, tmp_path / "runs", 256, signal.SIGKILL)
    for ckpt in checkpoints(run):
        (ckpt / "params.pt").write_bytes(b"truncated")
    with pytest.raises(UsageError, match=r"no checkpoint in .* can be read"):
        resume_curriculum(run, progress=False, verbose=0)
    assert (run / "s0" / "curves.csv").is_file() and checkpoints(run)  # nothing deleted


def test_finished_run_and_changes_are_refused(suite: Path, reference: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="has finished"):
        resume_curriculum(reference, progress=False, verbose=0)
    changed = write_suite(tmp_path / "tiny.yaml", steps=1024)
    runs = tmp_path / "runs"
    run, _ = stop_after(changed, runs, 256, signal.SIGKILL)
    write_suite(changed, steps=768)  # the suite's file changed since the run started
    with pytest.raises(UsageError, match=r"task_steps: \[512, 512, 1024\] -> \[512, 512, 768\].*--force"):
        resume_curriculum(run, progress=False, verbose=0)


def test_resume_takes_no_other_options(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "nb2_agents.cli", "curriculum", "--resume", str(tmp_path),
               "--seeds", "1", "--retention", "ewc"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2
    assert "--retention, --seeds cannot be given with it" in proc.stderr
    with pytest.raises(UsageError, match="not a run folder of nb2 curriculum"):
        resume_curriculum(tmp_path)


def test_run_without_checkpoint_is_refused(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"  # stopped before its first checkpoint: only its configuration
    (run / "s0").mkdir(parents=True)
    (run / "config.yaml").write_text((reference / "config.yaml").read_text())
    with pytest.raises(UsageError, match="no seed has a checkpoint yet"):
        resume_curriculum(run, progress=False, verbose=0)
