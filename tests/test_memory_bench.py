"""The memory-over-time benchmark (``benchmarks/memory.py``): ``--set`` variants of an entry, the
training curve each run keeps, and a bad ``--set`` named before any run starts."""

from __future__ import annotations

import pytest

from benchmarks import memory as bench


def test_a_set_changes_k_and_the_hyperparameters_and_the_run_keeps_its_curve() -> None:
    overrides = (("policy_kwargs.memory", 2), ("n_epochs", 1), ("n_steps", 16), ("batch_size", 64))
    assert bench._entry("nb2/CartPoleNoVel-v1", overrides).memory == 2
    job = bench.Job("cartpole-novel", "nb2/CartPoleNoVel-v1", "nb2-memory", 0, 512, 1, "cpu", 1, overrides)
    outcome = bench.run_job(job)
    assert outcome.k == 2 and outcome.error is None and len(outcome.returns) == 1
    steps = [step for step, _ in outcome.curve]
    assert steps == sorted(steps) and steps[-1] == 512  # 8 envs x 16 steps per rollout
    assert all(ret > 0 for _, ret in outcome.curve)  # CartPole's returns: steps survived


def test_a_bad_set_names_the_key_before_any_run(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--rows", "cartpole-novel", "--set", "n_epoch=3", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "--set n_epoch: unknown key for PPO" in err and "n_epochs" in err
    assert not (tmp_path / "measured").exists()
