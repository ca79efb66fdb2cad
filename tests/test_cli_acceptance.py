"""The issue's acceptance runs, through the CLI (slow: `make test-all`; minutes each on 2 cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def nb2(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2_agents.cli", *map(str, args)], capture_output=True, text=True, env=ENV
    )


def train_and_evaluate(tmp_path: Path, *args: str) -> tuple[Path, dict]:
    out = nb2("train", *args, "--runs-dir", tmp_path, "--no-progress")
    assert out.returncode == 0, out.stderr
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    out = nb2("evaluate", run, "--json")
    assert out.returncode == 0, out.stderr
    return run, json.loads(out.stdout)


@pytest.mark.slow
def test_cartpole_100k_is_solved(tmp_path: Path) -> None:
    run, result = train_and_evaluate(tmp_path, "--env", "CartPole-v1", "--steps", "100000", "--seed", "0")
    assert result["mean_return"] >= 475
    events = EventAccumulator(str(next(run.glob("events.out.tfevents.*"))))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"rollout/ep_rew_mean", "eval/mean_reward", "nb2/kept_fraction", "nb2/grad_norm"} <= scalars


@pytest.mark.slow
def test_doorkey_150k(tmp_path: Path) -> None:
    _, result = train_and_evaluate(
        tmp_path, "--env", "MiniGrid-DoorKey-5x5-v0", "--steps", "150000", "--seed", "0"
    )
    assert result["mean_return"] >= 0.9
