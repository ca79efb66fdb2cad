"""``nb2 train --resume RUN``: a run killed with SIGKILL at a random moment and resumed ends exactly
as an uninterrupted run with the same seed (eval.json, evaluations.npz, Monitor CSVs); damaged
checkpoints, finished runs, changed options and runs without a checkpoint are handled; and the
pieces (:class:`~nb2_agents.checkpoint.EpisodeRecorder`, :mod:`nb2_agents.checkpoint.store`).

Budgets are tiny: the whole file takes about a minute and a half on two busy cores.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from nb2_agents.checkpoint import STATE_DIR, Checkpoint, EpisodeRecorder, latest, listed, read, write
from nb2_agents.errors import UsageError
from nb2_agents.training import train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SEED = 3
VOLATILE = ("train_seconds", "model")
"""eval.json keys that differ between two runs of the same configuration."""


@dataclass(frozen=True)
class Budget:
    env: str
    steps: int
    freq: int
    """--save-freq and --eval-freq"""
    overrides: tuple[str, ...]
    algo: str | None = None
    """--algo, when the case's name is not the algorithm's"""

    def cli(self, algo: str) -> list[str]:
        sets = [arg for item in self.overrides for arg in ("--set", item)]
        return ["train", "--env", self.env, "--algo", self.algo or algo, "--steps", str(self.steps),
                "--save-freq", str(self.freq), "--eval-freq", str(self.freq), "--eval-episodes", "2",
                "--final-episodes", "3", "--seed", str(SEED), *sets]  # fmt: skip

    def api(self, algo: str) -> dict[str, Any]:
        return {"env": self.env, "algo": self.algo or algo, "steps": self.steps, "save_freq": self.freq,
                "eval_freq": self.freq, "eval_episodes": 2, "final_episodes": 3, "seed": SEED,
                "overrides": list(self.overrides)}  # fmt: skip


BUDGETS = {
    # 8 envs x 64 steps a rollout; checkpoints at 1024, 2048, 3072
    "ppo": Budget("CartPole-v1", 4096, 1024, ("n_steps=64",)),
    # rollouts of 256 steps (train_freq), 128 gradient steps after each; checkpoints at 512, 1024, 1536
    "dqn": Budget("CartPole-v1", 2048, 512, ("learning_starts=500",)),
    # a rollout and a gradient step per env step; checkpoints at 200, 400
    "sac": Budget("Pendulum-v1", 500, 200, ("learning_starts=100",)),
    # memory over time: each env's window of past steps is restored with the episode it belongs to
    "ppo-memory": Budget("nb2/CartPoleNoVel-v1", 4096, 1024, ("n_steps=64", "n_epochs=2"), "ppo"),
}


def nb2(*args: str | Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nb2_agents.cli", *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=timeout)  # fmt: skip


def only_run(runs_dir: Path) -> Path:
    runs = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def states(run: Path) -> list[Path]:
    return listed(run / "checkpoints" / STATE_DIR)


def kill_after(runs_dir: Path, algo: str, n_checkpoints: int, delay: float) -> Path:
    """Start ``nb2 train`` in ``runs_dir``, SIGKILL it ``delay`` s after its ``n_checkpoints``-th
    checkpoint folder appears; the run folder. Fails unless the kill landed before the run ended."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    log = runs_dir.parent / f"{runs_dir.name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nb2_agents.cli", *BUDGETS[algo].cli(algo), "-q",
                                 "--no-progress", "--runs-dir", str(runs_dir)],
                                stdout=out, stderr=subprocess.STDOUT, env=ENV)  # fmt: skip
        try:
            deadline = time.monotonic() + 180
            while not [r for r in runs_dir.iterdir() if len(states(r)) >= n_checkpoints]:
                assert proc.poll() is None, f"finished before {n_checkpoints} checkpoints:\n{log.read_text()}"
                assert time.monotonic() < deadline, "no checkpoint in 180 s"
                time.sleep(0.02)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"not killed (exit {proc.returncode}):\n{log.read_text()}"
    run = only_run(runs_dir)
    assert not (run / "eval.json").exists()
    return run


def eval_json(run: Path) -> dict[str, Any]:
    data = json.loads((run / "eval.json").read_text())
    return {k: v for k, v in data.items() if k not in VOLATILE}


def assert_same_result(run: Path, reference: Path) -> None:
    """The same final evaluation and evaluation history as ``reference``."""
    assert eval_json(run) == eval_json(reference)
    with np.load(run / "eval/evaluations.npz") as got, np.load(reference / "eval/evaluations.npz") as want:
        assert sorted(got.files) == sorted(want.files)
        for key in want.files:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def monitor_rows(path: Path) -> list[tuple[str, str]]:
    """(r, l) of each episode in a Monitor CSV (``t``, the wall time, differs between runs)."""
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#"), path
    return [(row["r"], row["l"]) for row in csv.DictReader(lines[1:])]


@dataclass
class Reference:
    """The uninterrupted run."""

    run_dir: Path
    steps: int
    seconds: float
    """Its training time."""


@dataclass
class Killed:
    reference: Reference
    killed: Path
    """A copy of the run folder as the kill left it (never resumed)."""
    checkpoints: list[str]
    """Its checkpoint folders, newest first."""
    delay: float


@dataclass
class Resumed:
    killed: Killed
    run: Path
    """A copy of ``killed.killed`` continued by ``nb2 train --resume``."""
    stdout: str
    stderr: str


class Lab:
    """Runs shared by the tests of this module, each made once. Under pytest-xdist the workers share
    them through ``root`` (the session's temp folder), one worker making each while the others wait."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _shared(self, name: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        done = self.root / f"{name}.json"
        with (self.root / f"{name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.is_file():  # else made by this or another worker; a failed try made nothing
                done.write_text(json.dumps(make()))
            return json.loads(done.read_text())  # type: ignore[no-any-return]

    def reference(self, algo: str) -> Reference:
        """The uninterrupted run, trained in-process."""

        def make() -> dict[str, Any]:
            ref = train(**BUDGETS[algo].api(algo), runs_dir=self.root / f"{algo}-ref", progress=False,
                        verbose=0)  # fmt: skip
            assert not ref.interrupted and ref.steps >= BUDGETS[algo].steps
            return {"run_dir": str(ref.run_dir), "steps": ref.steps, "seconds": ref.seconds}

        saved = self._shared(f"{algo}-ref", make)
        return Reference(Path(saved["run_dir"]), saved["steps"], saved["seconds"])

    def killed(self, algo: str) -> Killed:
        """A CLI run of the same configuration, SIGKILLed at a random moment after its first
        checkpoint, while it is still training."""
        ref, budget = self.reference(algo), BUDGETS[algo]

        def make() -> dict[str, Any]:
            # the training time left after the first checkpoint, by the reference's speed: the
            # kill lands in its first 30 %, so before the end on a machine up to 3 times as fast
            # (the final evaluation and model.zip add to the margin)
            left = ref.seconds * (1 - budget.freq / budget.steps)
            delay = random.Random(f"resume-{algo}").uniform(0.0, min(1.5, 0.3 * left))
            shutil.rmtree(self.root / f"{algo}-killed", ignore_errors=True)  # a failed try's
            run = kill_after(self.root / f"{algo}-killed", algo, 1, delay)
            names = [p.name for p in states(run)]
            assert names, "the checkpoint seen before the kill is gone"
            copy = self.root / f"{algo}-pristine" / run.name
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(run, copy)
            return {"killed": str(copy), "checkpoints": names, "delay": delay}

        saved = self._shared(f"{algo}-killed", make)
        return Killed(ref, Path(saved["killed"]), saved["checkpoints"], saved["delay"])

    def resumed(self, algo: str) -> Resumed:
        """The killed run, a copy of it continued by ``nb2 train --resume``, and that command's output."""
        k = self.killed(algo)

        def make() -> dict[str, Any]:
            run = self.root / f"{algo}-resumed" / k.killed.name
            shutil.rmtree(run, ignore_errors=True)  # left by a failed try
            shutil.copytree(k.killed, run)
            out = nb2("train", "--resume", run, "--no-progress")
            assert out.returncode == 0, out.stdout + out.stderr
            return {"run": str(run), "stdout": out.stdout, "stderr": out.stderr}

        saved = self._shared(f"{algo}-resumed", make)
        return Resumed(k, Path(saved["run"]), saved["stdout"], saved["stderr"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the session's folder, above each worker's
        root = tmp_path_factory.getbasetemp().parent / "test_resume"
        root.mkdir(exist_ok=True)
        return Lab(root)
    return Lab(tmp_path_factory.mktemp("test_resume"))


# -- fault injection -----------------------------------------------------------------------------


@pytest.mark.parametrize("algo", list(BUDGETS))
def test_killed_run_resumes_to_the_same_result(lab: Lab, algo: str) -> None:
    r = lab.resumed(algo)
    k, run = r.killed, r.run
    assert f"resuming {run}" in r.stdout and f"{k.checkpoints[0]})" in r.stdout, r.stdout
    assert "Traceback" not in r.stderr
    assert_same_result(run, k.reference.run_dir)
    assert json.loads((run / "eval.json").read_text())["steps_trained"] == k.reference.steps
    assert not (run / "failed.txt").exists()
    assert not list(run.rglob("*.tmp")), "a temp folder was left behind"


@pytest.mark.parametrize("algo", list(BUDGETS))
def test_resumed_monitor_csvs_match(lab: Lab, algo: str) -> None:
    """Rows the killed run wrote after its checkpoint are cut, none is written twice or lost."""
    r = lab.resumed(algo)
    run, ref = r.run, r.killed.reference.run_dir
    for folder in ("", "eval"):
        names = sorted(p.name for p in (ref / folder).glob("*.monitor.csv"))
        assert names and names == sorted(p.name for p in (run / folder).glob("*.monitor.csv"))
        for name in names:
            got, want = monitor_rows(run / folder / name), monitor_rows(ref / folder / name)
            assert got == want, f"{folder}/{name}: {len(got)} rows, {len(want)} uninterrupted"


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard's view of a run folder (every events file, restarts purged): (step, value) per tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.parametrize("algo", list(BUDGETS))
def test_resumed_tensorboard_has_each_point_once(lab: Lab, algo: str) -> None:
    """The crashed run's events after its checkpoint are hidden, none before it is lost: every
    evaluation, rollout and update statistic appears as often as in the uninterrupted run (SB3's
    off-policy algorithms log twice at a step where two episodes end), at its steps and values."""
    r = lab.resumed(algo)
    got, want = scalars(r.run), scalars(r.killed.reference.run_dir)
    compared = [t for t in want if t.split("/")[0] in ("eval", "rollout", "train")]
    assert "eval/mean_reward" in compared
    for tag in compared:
        assert got.get(tag) == want[tag], tag


def test_damaged_newest_checkpoint_falls_back(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = lab.reference("ppo")
    run = kill_after(tmp_path / "runs", "ppo", 2, 0.0)
    found = states(run)
    assert len(found) >= 2, found
    newest, before = found[:2]
    params = newest / "params.pt"
    params.write_bytes(params.read_bytes()[: params.stat().st_size // 2])
    result = train(resume=run, progress=False, verbose=1)
    out, err = capsys.readouterr()
    assert f"checkpoint {newest} cannot be read" in err and "trying the checkpoint before it" in err, err
    assert f"(checkpoint {before})" in out, out
    assert result.eval is not None and result.steps == ref.steps
    assert_same_result(run, ref.run_dir)


# -- refusals --------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_finished_run_is_refused(lab: Lab) -> None:
    run = lab.reference("ppo").run_dir
    before = snapshot(run)
    with pytest.raises(UsageError, match="has finished"):
        train(resume=run, progress=False, verbose=0)
    out = nb2("train", "--resume", run)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "has finished" in out.stderr and "nothing to resume" in out.stderr
    assert "Traceback" not in out.stderr
    assert snapshot(run) == before


def test_changed_option_needs_force(lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nb2_agents.cli import main

    k = lab.killed("ppo")
    run = tmp_path / k.killed.name
    shutil.copytree(k.killed, run)
    before = snapshot(run)
    with pytest.raises(UsageError, match=r"steps: 4096 -> 5120.*--force"):
        train(resume=run, steps=5120, progress=False, verbose=0)
    assert main(["train", "--resume", str(run), "--eval-episodes", "4"]) == 2
    err = capsys.readouterr().err
    assert "eval_episodes: 2 -> 4" in err and "--force" in err, err
    assert snapshot(run) == before

    result = train(resume=run, steps=5120, force=True, progress=False, verbose=1)
    out = capsys.readouterr().out
    assert "resuming with a changed configuration (--force): steps: 4096 -> 5120" in out, out
    assert result.eval is not None and result.steps == 5120
    assert json.loads((run / "eval.json").read_text())["steps_trained"] == 5120
    assert "steps: 5120" in (run / "config.yaml").read_text()


def test_run_without_checkpoint_is_refused(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k = lab.killed("ppo")
    bare = tmp_path / "bare" / k.killed.name
    shutil.copytree(k.killed, bare)
    shutil.rmtree(bare / "checkpoints" / STATE_DIR)
    with pytest.raises(UsageError, match=r"no readable checkpoint in .*save_freq = 1,024") as err:
        train(resume=bare, progress=False, verbose=0)
    assert "nb2 train --config" in str(err.value)

    damaged = tmp_path / "damaged" / k.killed.name  # every checkpoint unreadable: each named
    shutil.copytree(k.killed, damaged)
    folders = states(damaged)
    for folder in folders:
        (folder / "arrays.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="no readable checkpoint"):
        train(resume=damaged, progress=False, verbose=0)
    err_text = capsys.readouterr().err
    for folder in folders:
        assert f"checkpoint {folder} cannot be read" in err_text, err_text


def test_resume_of_a_folder_that_is_no_run(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"config\.yaml: No such file"):
        train(resume=tmp_path, progress=False, verbose=0)


# -- EpisodeRecorder ------------------------------------------------------------------------------------


def _step(env: gym.Env, action: int) -> tuple[np.ndarray, float, bool, bool]:  # type: ignore[type-arg]
    obs, reward, terminated, truncated, _ = env.step(action)
    return np.asarray(obs), float(reward), bool(terminated), bool(truncated)


@pytest.mark.parametrize("seeded_last_reset", [False, True], ids=["unseeded-reset", "seeded-reset"])
def test_episode_recorder_replays_the_episode(seeded_last_reset: bool) -> None:
    env = EpisodeRecorder(gym.make("CartPole-v1"))
    env.reset(seed=11)
    for _ in range(5):
        env.step(env.action_space.sample())
    env.reset(seed=12 if seeded_last_reset else None)
    actions = [0, 1, 1, 0, 1, 0, 0]
    for a in actions:
        env.step(a)
    info, recorded = env.state()
    info = json.loads(json.dumps(info))  # as stored in state.json
    assert info["steps"] == len(actions) and recorded is not None and recorded.tolist() == actions
    assert (info["rng"] is None) == seeded_last_reset

    fresh = EpisodeRecorder(gym.make("CartPole-v1"))
    fresh.reset(seed=999)  # a fresh env seeded otherwise: the replay must not depend on it
    assert fresh.replay(info, recorded)
    np.testing.assert_array_equal(fresh.last_obs, env.last_obs)
    assert fresh.get_wrapper_attr("_elapsed_steps") == env.get_wrapper_attr("_elapsed_steps") == len(actions)
    for a in (1, 0):
        got, want = _step(fresh, a), _step(env, a)
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1:] == want[1:]
    # the next unseeded reset draws from the same generator state too
    np.testing.assert_array_equal(fresh.reset()[0], env.reset()[0])


def test_episode_recorder_detects_a_different_ending() -> None:
    env = EpisodeRecorder(gym.make("CartPole-v1"))
    env.reset(seed=1)
    env.step(0)
    env.step(0)
    info, recorded = env.state()
    assert recorded is not None
    assert not EpisodeRecorder(gym.make("CartPole-v1")).replay(info, recorded[::-1] ^ 1)
    never = EpisodeRecorder(gym.make("CartPole-v1"))
    assert never.state() == ({"started": False, "seed": None, "options": None, "rng": None, "steps": 0,
                              "obs": None}, None)  # fmt: skip
    assert EpisodeRecorder(gym.make("CartPole-v1")).replay(*never.state())


# -- store -----------------------------------------------------------------------------------------


def _ckpt(steps: int) -> Checkpoint:
    return Checkpoint({"num_timesteps": steps, "note": f"at {steps}"},
                      {"obs": np.arange(6, dtype=np.float32).reshape(2, 3) + steps},
                      {"params": {"policy": {"w": torch.full((2,), float(steps))}}})  # fmt: skip


def test_store_round_trip_and_keep(tmp_path: Path) -> None:
    folder = tmp_path / STATE_DIR
    for steps in (100, 200, 300):
        path = write(folder, _ckpt(steps), keep=2)
        assert path == folder / f"{steps:012d}"
    assert [p.name for p in listed(folder)] == ["000000000300", "000000000200"]
    assert sorted(p.name for p in folder.iterdir()) == ["000000000200", "000000000300"]
    got = read(folder / "000000000300")
    assert got.info == {"num_timesteps": 300, "note": "at 300"} and got.steps == 300
    np.testing.assert_array_equal(got.arrays["obs"], _ckpt(300).arrays["obs"])
    assert torch.equal(got.torch_part["params"]["policy"]["w"], torch.full((2,), 300.0))
    write(folder, _ckpt(400), keep=1)
    assert [p.name for p in listed(folder)] == ["000000000400"]
    assert listed(tmp_path / "missing") == [] and latest(tmp_path / "missing") == (None, [])


def test_store_ignores_a_half_written_folder(tmp_path: Path) -> None:
    folder = tmp_path / STATE_DIR
    write(folder, _ckpt(100), keep=2)
    tmp = folder / ".000000000200.tmp"  # as a crash while writing leaves it
    tmp.mkdir()
    (tmp / "state.json").write_text(json.dumps({"num_timesteps": 200}))
    (folder / "notes").mkdir()
    assert [p.name for p in listed(folder)] == ["000000000100"]
    ckpt, skipped = latest(folder)
    assert ckpt is not None and ckpt.steps == 100 and skipped == []
    write(folder, _ckpt(200), keep=2)  # the next write of that step replaces the leftover
    assert not tmp.exists() and [p.name for p in listed(folder)] == ["000000000200", "000000000100"]


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("params.pt", "truncate"),
        ("arrays.npz", "truncate"),
        ("state.json", "truncate"),
        ("params.pt", "delete"),
        ("state.json", "garbage"),
    ],
)
def test_latest_skips_an_unreadable_checkpoint(tmp_path: Path, name: str, damage: str) -> None:
    folder = tmp_path / STATE_DIR
    for steps in (100, 200):
        write(folder, _ckpt(steps), keep=2)
    path = folder / "000000000200" / name
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "delete":
        path.unlink()
    else:
        path.write_text('["no", "training", "state"]')
    ckpt, skipped = latest(folder)
    assert ckpt is not None and ckpt.steps == 100 and ckpt.path == folder / "000000000100"
    assert len(skipped) == 1 and str(folder / "000000000200") in skipped[0], skipped
    with pytest.raises(ValueError, match="000000000200"):
        read(folder / "000000000200")


# -- nb2 distill ---------------------------------------------------------------------------------


def test_killed_distill_resumes_to_the_same_result(tmp_path: Path) -> None:
    """``nb2 distill`` (pure, one teacher) killed after its first checkpoint, then ``--resume``: the
    student's eval.json and the teacher report equal an uninterrupted run's."""
    from stable_baselines3 import PPO

    teacher = tmp_path / "teacher.zip"
    PPO("MlpPolicy", "CartPole-v1", policy_kwargs={"net_arch": [8]}, seed=0).save(teacher)
    args = ["distill", "--teacher", teacher, "--env", "CartPole-v1", "--steps", "2048", "--eval-freq", "512",
            "--final-episodes", "3", "--set", "n_steps=64", "-q", "--no-progress"]  # fmt: skip
    assert nb2(*args, "--runs-dir", tmp_path / "a").returncode == 0
    reference = only_run(tmp_path / "a")
    runs = tmp_path / "b"
    runs.mkdir()
    with (tmp_path / "b.log").open("w") as out:
        cmd = [sys.executable, "-m", "nb2_agents.cli", *map(str, args), "--runs-dir", str(runs)]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=ENV)
        try:
            deadline = time.monotonic() + 180
            while not [r for r in runs.iterdir() if states(r)]:
                assert proc.poll() is None, (tmp_path / "b.log").read_text()
                assert time.monotonic() < deadline, "no checkpoint in 180 s"
                time.sleep(0.02)
            time.sleep(random.Random("resume-distill").uniform(0.0, 0.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "b.log").read_text()
    run = only_run(runs)
    out = nb2("distill", "--resume", run, "--no-progress")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"resuming {run}" in out.stdout
    assert eval_json(run) == eval_json(reference)
    assert json.loads((run / "teachers.json").read_text()) == json.loads(
        (reference / "teachers.json").read_text()
    )
    again = nb2("distill", "--resume", run)
    assert again.returncode == 2 and "has finished" in again.stderr
    mixed = nb2("distill", "--resume", run, "--steps", "8192")
    assert mixed.returncode == 2 and "--steps cannot be given with it" in mixed.stderr


def test_resume_removes_what_a_killed_write_left(tmp_path: Path) -> None:
    """A kill during an atomic write leaves its temp file (or the store's temp folder); resuming
    the run removes them and nothing else."""
    from nb2_agents.runs import remove_stale_temps

    ckpts = tmp_path / "checkpoints"
    (ckpts / "state" / ".000000000256.tmp").mkdir(parents=True)
    (ckpts / "state" / ".000000000256.tmp" / "state.json").write_text("{}")
    (ckpts / ".best_model.zip.lpawk8a2.tmp").write_bytes(b"half")
    (ckpts / "best_model.zip").write_bytes(b"whole")
    removed = remove_stale_temps(tmp_path)
    assert len(removed) == 2 and not list(tmp_path.rglob("*.tmp"))
    assert (ckpts / "best_model.zip").read_bytes() == b"whole"
