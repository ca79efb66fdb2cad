"""Bad input: one line that says what would be accepted, exit code 2, no traceback, no run folder touched.

Most cases call ``nb2_agents.cli.main`` in-process (the same code, without paying for a Python
start each); the subprocess cases check the real exit status and stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def nb2(*args: str | Path, code: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["-c", code] if code else ["-m", "nb2_agents.cli"]
    return subprocess.run(
        [sys.executable, *prefix, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=120
    )


def main(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    from nb2_agents.cli import main as cli_main

    code = cli_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A runs dir holding an existing run folder that no failing command may touch."""
    existing = tmp_path / "runs" / "CartPole-v1__ppo__nano__s0__20250101-000000"
    existing.mkdir(parents=True)
    (existing / "config.yaml").write_text("env: CartPole-v1\n")
    return tmp_path / "runs"


BAD_TRAIN = [
    (["--env", "CartPol-v1"], "did you mean CartPole-v1"),
    (["--env", "MiniGrid-DoorKy-5x5-v0"], "did you mean MiniGrid-DoorKey-5x5-v0"),
    (["--env", "CartPole-v1", "--algo", "ppx"], "valid: ppo, a2c, dqn, sac, td3, maskable_ppo"),
    (["--env", "CartPole-v1", "--preset", "huge"], "valid presets: nano, small, base"),
    (
        ["--env", "CartPole-v1", "--set", "learning_rat=1e-3"],
        "--set learning_rat: unknown key for PPO; valid keys:",
    ),
    (
        ["--env", "CartPole-v1", "--set", "policy_kwargs.nb2_kwargs.dmodel=48"],
        "valid keys: ['attention', 'chunk_size', 'd_model'",
    ),
    (
        ["--env", "CartPole-v1", "--set", "policy_kwargs.preset=huge"],
        "valid presets: ['base', 'nano', 'nano-flat', 'small', 'small-flat']",
    ),
    (["--env", "CartPole-v1", "--set", "n_steps"], "expected key=value"),
    (["--env", "Pendulum-v1", "--algo", "dqn"], "algorithms for it: ppo, a2c, sac, td3 (valid pairs:"),
    (["--env", "CartPole-v1", "--algo", "sac"], "algorithms for it: ppo, a2c, dqn, maskable_ppo"),
    (["--env", "CartPole-v1", "--steps", "10x"], "such as 100000, 1e5 or 100k"),
    (["--env", "CartPole-v1", "--env-kwargs", "{bad"], "--env-kwargs is not JSON"),
    (["--env", "CartPole-v1", "--device", "tpu"], "valid: auto, cpu, cuda"),
    (["--algo", "ppo"], "pass --env ENV_ID"),
    # values SB3, numpy or torch would refuse mid-setup, refused where they are read
    (
        ["--env", "CartPole-v1", "--set", "learning_rate=notanumber"],
        "learning_rate: expected a number > 0",
    ),
    (["--env", "CartPole-v1", "--set", "learning_rate=lin_-1"], "or lin_<number>, got lin_-1"),
    (["--env", "CartPole-v1", "--set", "gamma=abc"], "--set gamma: expected a number in (0, 1], got 'abc'"),
    (["--env", "CartPole-v1", "--set", "batch_size=-1"], "--set batch_size: expected a whole number >= 2"),
    (["--env", "CartPole-v1", "--seed", "-1"], "argument --seed: expected a whole number >= 0"),
    (["--env", "CartPole-v1", "--threads", "-1"], "argument --threads: expected a whole number >= 0"),
]


@pytest.mark.parametrize(("args", "message"), BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_bad_train_input(
    runs: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(runs)
    try:
        code, out, err = main(capsys, "train", *args, "--runs-dir", runs, "--steps", "64")
    except SystemExit as exit_:  # argparse's own checks exit
        code, (out, err) = int(exit_.code or 0), capsys.readouterr()
    assert code == 2, err
    assert message in err
    assert err.startswith("nb2 train: error:") and err.count("\n") == 1
    assert "Traceback" not in err and out == ""
    assert snapshot(runs) == before  # nothing created, nothing touched


def test_bad_input_in_a_subprocess(runs: Path) -> None:
    """The real exit status and stderr of a process, for two of the cases above."""
    before = snapshot(runs)
    for args, message in BAD_TRAIN[0], BAD_TRAIN[3]:
        out = nb2("train", *args, "--runs-dir", runs)
        assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1
        assert "Traceback" not in out.stderr
    assert snapshot(runs) == before


def test_missing_extra_names_the_install(runs: Path) -> None:
    """Without minigrid installed, a MiniGrid id says which extra to install."""
    code = (
        "import sys; sys.modules['minigrid'] = None; from nb2_agents.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    out = nb2("train", "--env", "MiniGrid-DoorKey-5x5-v0", "--runs-dir", runs, code=code)
    assert out.returncode == 2
    assert "pip install 'nb2-agents[minigrid]'" in out.stderr and out.stderr.count("\n") == 1


def test_malformed_yaml_gives_file_and_line(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("CartPole-v1:\n  n_steps: 32\n  gamma: [0.9\n")
    code, _, err = main(capsys, "train", "--env", "CartPole-v1", "--hyperparams", bad, "--runs-dir", runs)
    assert code == 2 and f"{bad}:4:" in err and "malformed YAML" in err and err.count("\n") == 1
    code, _, err = main(capsys, "train", "--config", bad, "--runs-dir", runs)
    assert code == 2 and f"{bad}:4:" in err


def _model_files(tmp_path: Path) -> dict[str, Path]:
    import zipfile

    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(os.urandom(3000))
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("hello.txt", "not a model")
    return {"missing": tmp_path / "missing.zip", "corrupt": corrupt, "other zip": other_zip,
            "empty folder": tmp_path}  # fmt: skip


@pytest.mark.parametrize("command", ["evaluate", "info"])
@pytest.mark.parametrize("kind", ["missing", "corrupt", "other zip", "empty folder"])
def test_bad_model_file(tmp_path: Path, command: str, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _model_files(tmp_path)[kind]
    code, _, err = main(capsys, command, path)
    assert code == 2, err
    assert err.startswith(f"nb2 {command}: error:") and err.count("\n") == 1
    assert "expected a" in err and "Traceback" not in err


def test_truncated_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stable_baselines3 import PPO

    import nb2_agents  # noqa: F401  (registers "NB2Policy")

    model = PPO("NB2Policy", "CartPole-v1", n_steps=32, batch_size=32)
    model.save(tmp_path / "model.zip")
    data = (tmp_path / "model.zip").read_bytes()
    (tmp_path / "model.zip").write_bytes(data[: len(data) // 2])
    for args in (["evaluate", "--env", "CartPole-v1"], ["info"]):
        code, _, err = main(capsys, *args, tmp_path / "model.zip")
        assert code == 2 and "truncated" in err and err.count("\n") == 1, err


def test_debug_shows_the_traceback(runs: Path) -> None:
    out = nb2("train", "--env", "CartPol-v1", "--runs-dir", runs, "--debug")
    assert out.returncode == 2 and "Traceback" in out.stderr and "UsageError" in out.stderr


def test_plot_without_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = main(capsys, "plot", tmp_path / "nothing")
    assert code == 2 and "not a run folder" in err
    code, _, err = main(capsys, "plot", tmp_path, "--out", tmp_path / "x.jpg")
    assert code == 2 and ".png" in err


def test_a_bad_value_in_a_file_or_a_runs_dir_that_is_a_file(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hyperparams = tmp_path / "mine.yaml"
    hyperparams.write_text("CartPole-v1:\n  learning_rate: fast\n")
    code, _, err = main(
        capsys, "train", "--env", "CartPole-v1", "--hyperparams", hyperparams, "--runs-dir", runs
    )
    assert code == 2 and f"{hyperparams} [CartPole-v1].learning_rate: expected a number > 0" in err, err
    a_file = tmp_path / "file"
    a_file.write_text("")
    code, _, err = main(capsys, "train", "--env", "CartPole-v1", "--steps", "64", "--runs-dir", a_file)
    assert code == 2 and f"--runs-dir {a_file}: is a file; expected a folder that can be written to" in err
