"""Multi-run work on Ray (``executor.py``): the same results as one process, a killed worker's job
retried from its checkpoint, and bad addresses refused before anything runs."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nb2_agents.counts import parse_steps
from nb2_agents.curriculum.runner import run_curriculum
from nb2_agents.errors import UsageError
from nb2_agents.executor import check_address, run_jobs
from tests.test_curriculum_resume import ENV, FREQ, checkpoints, cli_args, metrics, only_run, write_suite

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_suite(tmp_path_factory.mktemp("suite") / "tiny.yaml")


@pytest.fixture(scope="module")
def one_process(suite: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seeds, one after the other in this process (``--workers 1``)."""
    runs = tmp_path_factory.mktemp("one")
    result = run_curriculum(suite, retention="nb2", seeds=[0, 1], checkpoint_freq=FREQ, workers=1,
                            runs_dir=runs, progress=False, verbose=0)  # fmt: skip
    return result.run_dir


def test_a_jobs_own_error_reaches_the_caller_as_itself() -> None:
    # Ray workers import the function by name: one of the package's (a test module's would not be found)
    assert run_jobs(parse_steps, ["2k", "5"], workers=2) == [2000, 5]
    with pytest.raises(UsageError, match=r"^steps must be a positive whole number .*got 'lots'$"):
        run_jobs(parse_steps, ["2k", "lots"], workers=2)


def _checkpointed(runs: Path, seed: str, step: int) -> bool:
    """Whether ``seed`` of the one run under ``runs`` has a checkpoint at ``step`` or later."""
    run = next(runs.iterdir(), None)
    return run is not None and any(int(p.name) >= step for p in checkpoints(run) if p.parents[2].name == seed)


def test_a_killed_worker_is_retried_from_its_checkpoint(
    suite: Path, one_process: Path, tmp_path: Path
) -> None:
    """kill -9 of the Ray worker that trains seed 0, once it has a checkpoint: Ray runs the job
    again, the seed continues from that checkpoint, and metrics.json is the one-process run's."""
    runs = tmp_path / "runs"
    runs.mkdir()
    log = tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.Popen(cli_args(suite, runs, "--seeds", "0,1", "--workers", "2"),
                                stdout=out, stderr=subprocess.STDOUT, env=ENV)  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while not _checkpointed(runs, "s0", 256):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            (events,) = (only_run(runs) / "s0").glob("events.out.tfevents.*")
            worker = int(events.name.split(".")[-2])  # TensorBoard names its file after the writer's pid
            assert worker != proc.pid
            subprocess.run(["kill", "-9", str(worker)], check=True)
            assert proc.wait(timeout=600) == 0, log.read_text()
        finally:
            proc.kill()
    text = log.read_text()
    assert "retried" in text or "retry" in text, text  # Ray ran the job again
    assert metrics(only_run(runs)) == metrics(one_process)


def test_local_ray_gives_the_one_process_results(suite: Path, one_process: Path, tmp_path: Path) -> None:
    result = run_curriculum(suite, retention="nb2", seeds=[0, 1], checkpoint_freq=FREQ, workers=2,
                            runs_dir=tmp_path, progress=False, verbose=0)  # fmt: skip
    assert metrics(result.run_dir) == metrics(one_process)


@pytest.mark.parametrize(
    ("address", "message"),
    [("127.0.0.1:9", "no Ray cluster answers there"), ("nowhere", "expected auto or HOST:PORT")],
)
def test_a_bad_address_is_one_line_before_anything_runs(address: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=message):
        check_address(address)
    out = subprocess.run(
        [sys.executable, "-m", "nb2_agents.cli", "curriculum", "cartpole-variants", "--address", address,
         "--seeds", "0,1", "--workers", "2", "--runs-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, env=ENV, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_curriculum_joins_a_running_cluster(suite: Path, one_process: Path, tmp_path: Path) -> None:
    """``ray start --head`` (its own process, stopped by its signal: never `ray stop`, which ends
    every Ray on the machine), then ``--address`` to it, with the token it wants; and a local Ray
    started beside it (``--workers 2``) is a Ray of its own, not that cluster."""
    port = _free_port()
    ray_cli = Path(sys.executable).parent / "ray"
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        time.sleep(3)  # the head's raylet after its GCS
        runs = tmp_path / "runs"
        args = cli_args(suite, runs, "--seeds", "0,1", "--address", f"127.0.0.1:{port}", "-q")
        out = subprocess.run(args, capture_output=True, text=True, env={**ENV, "RAY_AUTH_MODE": "token"},
                             timeout=600)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        assert metrics(only_run(runs)) == metrics(one_process)
        local = run_curriculum(suite, retention="nb2", seeds=[0, 1], checkpoint_freq=FREQ, workers=2,
                               runs_dir=tmp_path / "local", progress=False, verbose=0)  # fmt: skip
        assert metrics(local.run_dir) == metrics(one_process)
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait(timeout=60)
