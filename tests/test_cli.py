"""The ``nb2`` command run as a user runs it: in a subprocess, on tiny budgets, writing into tmp_path."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# 2 PPO iterations of 8 envs x 32 steps; two evaluations; checkpoints every 256 steps
TINY = ["--steps", "512", "--set", "n_steps=32", "--eval-freq", "256", "--save-freq", "256", "--seed", "3"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def nb2(*args: str | Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2_agents.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def only_run(runs_dir: Path) -> Path:
    runs = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    out = nb2("train", "--env", "CartPole-v1", *TINY, "--runs-dir", runs)
    assert out.returncode == 0, out.stderr
    run = only_run(runs)
    assert f"run folder: {run}" in out.stdout and "tensorboard --logdir" in out.stdout
    assert "env: CartPole-v1" in out.stdout  # the resolved configuration, printed first
    assert "train: 512/512 steps (100 %)" in out.stderr  # off a terminal: progress lines, the last at the end
    return run


def test_run_folder_layout(run_dir: Path) -> None:
    name = run_dir.name.split("__")
    assert name[:4] == ["CartPole-v1", "ppo", "nano", "s3"] and len(name) == 5
    for path in (
        "config.yaml",
        "model.zip",
        "eval.json",
        "checkpoints/best_model.zip",
        "eval/evaluations.npz",
    ):
        assert (run_dir / path).is_file(), path
    assert sorted(p.name for p in run_dir.glob("*.monitor.csv")) == [f"{i}.monitor.csv" for i in range(8)]
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert {p.name for p in (run_dir / "checkpoints").glob("ckpt_*_steps.zip")} == {
        "ckpt_256_steps.zip",
        "ckpt_512_steps.zip",
    }
    assert not list(run_dir.rglob("*.tmp")), "a temp file was left behind"
    plain = (run_dir / "0.monitor.csv").stat().st_mode & 0o777  # written by SB3 with open()
    for name in ("config.yaml", "eval.json", "model.zip"):  # written atomically: the same mode, not 0600
        assert (run_dir / name).stat().st_mode & 0o777 == plain, name
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["env"] == "CartPole-v1" and config["seed"] == 3 and config["steps"] == 512
    assert config["hyperparams"]["n_steps"] == 32 and config["hyperparams"]["learning_rate"] == "lin_1e-3"
    assert config["architecture"]["d_model"] == 32
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["episodes"] == 20 and result["steps_trained"] == 512 and result["success_rate"] is None


def test_tensorboard_keys(run_dir: Path) -> None:
    events = EventAccumulator(str(next(run_dir.glob("events.out.tfevents.*"))))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {
        "rollout/ep_rew_mean",
        "train/loss",
        "train/approx_kl",
        "eval/mean_reward",
        "nb2/attention_entropy/global",
        "nb2/attention_entropy/decoder",
        "nb2/kept_fraction",
        "nb2/head_gate_mean",
        "nb2/grad_norm",
        "nb2/fps",
    }
    assert expected <= scalars, expected - scalars
    assert "_hparams_/experiment" in events.PluginTagToContent("hparams")
    assert all(e.value > 0 for e in events.Scalars("nb2/grad_norm"))


def test_evaluate_json_agrees_with_eval_json(run_dir: Path) -> None:
    out = nb2("evaluate", run_dir, "--json")
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    saved = json.loads((run_dir / "eval.json").read_text())
    for key in ("mean_return", "std_return", "episodes", "success_rate", "seed", "mean_length", "returns"):
        assert printed[key] == saved[key], key
    # a model file works too, and --episodes / --seed / --stochastic are honoured
    out = nb2(
        "evaluate",
        run_dir / "checkpoints" / "best_model.zip",
        "--episodes",
        "3",
        "--seed",
        "5",
        "--json",
        "--stochastic",
    )
    assert out.returncode == 0, out.stderr
    other = json.loads(out.stdout)
    assert (other["episodes"], other["seed"], other["deterministic"], other["env"]) == (
        3,
        5,
        False,
        "CartPole-v1",
    )


def test_config_yaml_reruns(run_dir: Path, tmp_path: Path) -> None:
    out = nb2("train", "--config", run_dir / "config.yaml", "--runs-dir", tmp_path)
    assert out.returncode == 0, out.stderr
    rerun = only_run(tmp_path)
    first, second = (yaml.safe_load((d / "config.yaml").read_text()) for d in (run_dir, rerun))
    first.pop("source"), second.pop("source")
    assert first == second
    a, b = (json.loads((d / "eval.json").read_text()) for d in (run_dir, rerun))
    assert a["returns"] == b["returns"]  # same seed, same configuration: the same agent


def test_plot_writes_png(run_dir: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "curves.png"
    out = nb2("plot", run_dir, "--out", out_file)
    assert out.returncode == 0, out.stderr
    data = out_file.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000


def test_info(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = nb2("info", run_dir / "model.zip", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert (info["algo"], info["env"], info["preset"], info["steps"]) == ("ppo", "CartPole-v1", "nano", 512)
    assert 10_000 < info["parameters"] < 30_000
    from nb2_agents.cli import main

    assert main(["info", str(run_dir)]) == 0
    text = capsys.readouterr().out
    assert "algorithm" in text and "parameters" in text and "steps trained" in text


def test_minigrid_run(tmp_path: Path) -> None:
    out = nb2(
        "train", "--env", "MiniGrid-Empty-5x5-v0", "--steps", "256", "--set", "n_steps=16",
        "--eval-freq", "0", "--final-episodes", "2", "--runs-dir", tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    run = only_run(tmp_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["hyperparams"]["policy_kwargs"]["normalize_images"] is False
    assert config["deterministic_eval"] is False  # RL Zoo samples MiniGrid actions
    result = json.loads((run / "eval.json").read_text())
    assert result["success_rate"] is not None and result["deterministic"] is False
    events = EventAccumulator(str(next(run.glob("events.out.tfevents.*"))))
    events.Reload()
    assert "nb2/attention_entropy/level0" in events.Tags()["scalars"]  # 49 cell tokens in local groups


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_saves_model_and_checkpoint(tmp_path: Path, sig: signal.Signals) -> None:
    cmd = [sys.executable, "-m", "nb2_agents.cli", "train", "--env", "CartPole-v1", "--steps", "1000000",
           "--set", "n_steps=32", "--runs-dir", str(tmp_path)]  # fmt: skip
    # as from a terminal: a job started in the background (nohup ... &) inherits SIGINT ignored,
    # and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("*/0.monitor.csv")) or not _has_episodes(tmp_path):
            assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=180)  # saving under a loaded 2-core machine can be slow
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    run = only_run(tmp_path)
    checkpoints = list((run / "checkpoints").glob("interrupted_*_steps.zip"))
    assert (run / "model.zip").is_file() and len(checkpoints) == 1
    assert str(run / "model.zip") in err and str(checkpoints[0]) in err
    assert "Traceback" not in err
    assert nb2("info", run, "--json").returncode == 0


def _has_episodes(runs: Path) -> bool:
    return any(len(p.read_text().splitlines()) > 2 for p in runs.glob("*/0.monitor.csv"))


def test_python_api_mirrors_the_cli(tmp_path: Path) -> None:
    from nb2_agents.evaluation import EvalResult, evaluate
    from nb2_agents.training import TrainResult, train

    overrides = {"n_steps": 32, "learning_rate": 1e-4}
    result = train(env="CartPole-v1", steps="256", seed=1, overrides=overrides, eval_freq=0, final_episodes=3,
                   runs_dir=tmp_path, progress=False, verbose=False)  # fmt: skip
    assert isinstance(result, TrainResult) and not result.interrupted and result.steps == 256
    assert result.run_dir.parent == tmp_path and result.model_path == result.run_dir / "model.zip"
    assert result.config.hyperparams["learning_rate"] == 1e-4
    again = evaluate(result.run_dir, episodes=3)
    assert isinstance(again, EvalResult) and result.eval is not None
    assert again.returns == result.eval.returns


def test_plot_groups_seeds_into_a_band(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    from nb2_agents.plot import group_runs, plot

    copies = []
    for name, changes in (("a", {"seed": 4}), ("b", {"seed": 5}), ("c", {"eval_episodes": 9})):
        copy = tmp_path / name
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.zip", "events.*"))
        config = yaml.safe_load((copy / "config.yaml").read_text())
        (copy / "config.yaml").write_text(yaml.safe_dump({**config, **changes}))
        copies.append(copy)
    groups = group_runs([run_dir, *copies])
    assert [len(g.runs) for g in groups] == [3, 1]  # seeds 3, 4, 5 share a configuration
    assert groups[0].label == "CartPole-v1 ppo nano eval_episodes=5"
    assert groups[1].label == "CartPole-v1 ppo nano eval_episodes=9"
    out = plot([run_dir, *copies], tmp_path / "band.png")
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_ent_coef_schedule_anneals(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    from nb2_agents.training import train

    overrides = {"n_envs": 1, "n_steps": 32, "batch_size": 32, "ent_coef": "lin_0.02"}
    result = train(env="CartPole-v1", steps="256", seed=1, overrides=overrides, eval_freq=0, final_episodes=1,
                   runs_dir=tmp_path, progress=False, verbose=False)  # fmt: skip
    assert result.config.hyperparams["ent_coef"] == "lin_0.02"  # saved as written, so config.yaml re-runs
    events = EventAccumulator(str(result.run_dir))
    events.Reload()
    values = [e.value for e in events.Scalars("train/ent_coef")]
    assert values[0] == pytest.approx(0.02 * (1 - 32 / 256)) and values[-1] == pytest.approx(0.0, abs=1e-9)
    assert all(a > b for a, b in itertools.pairwise(values))
    assert PPO.load(result.model_path).ent_coef == pytest.approx(0.0, abs=1e-9)


def test_minigrid_rgb_view(tmp_path: Path) -> None:
    """``minigrid_obs: rgb``: the same 7x7 view as 56x56 pixels, normalised, in NB2's patches."""
    out = nb2(
        "train", "--env", "MiniGrid-DoorKey-5x5-v0", "--steps", "128", "--set", "n_steps=8",
        "--set", "policy_kwargs.nb2_kwargs.patch_size=4", "--env-kwargs", '{"minigrid_obs": "rgb"}',
        "--eval-freq", "0", "--final-episodes", "1", "--runs-dir", tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    run = only_run(tmp_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["hyperparams"]["policy_kwargs"]["normalize_images"] is True
    assert config["env_kwargs"] == {"minigrid_obs": "rgb"}
    info = json.loads(nb2("info", run, "--json").stdout)
    assert info["env"] == "MiniGrid-DoorKey-5x5-v0"
    from nb2_agents.evaluation import load_model

    net = load_model(run / "model.zip").model.policy.nb2_networks()[0]
    assert net.tokenizer.n_tokens == 196  # 14 x 14 patches of 4 x 4 pixels


def test_minigrid_view_errors_name_the_key(tmp_path: Path) -> None:
    out = nb2("train", "--env", "MiniGrid-Empty-5x5-v0", "--env-kwargs", '{"minigrid_obs": "pixels"}',
              "--steps", "64", "--runs-dir", tmp_path)  # fmt: skip
    assert out.returncode == 2 and "minigrid_obs" in out.stderr and "'rgb'" in out.stderr
    out = nb2("train", "--env", "CartPole-v1", "--env-kwargs", '{"minigrid_obs": "rgb"}',
              "--steps", "64", "--runs-dir", tmp_path)  # fmt: skip
    assert out.returncode == 2 and "MiniGrid envs only" in out.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib import metadata

    from nb2_agents.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"nb2 {metadata.version('nb2-agents')}"


def test_a_users_own_env_by_module_colon_id_or_gym_packages(tmp_path: Path) -> None:
    """The env is registered by a module of the user's (tests/toy_envs.py here), imported by
    Gymnasium's module:EnvId syntax or --gym-packages; spawned curriculum workers import it too."""
    env = {**ENV, "PYTHONPATH": str(Path(__file__).parent)}
    tiny = ["--steps", "128", "--set", "n_steps=32", "--set", "n_envs=2", "--eval-freq", "0",
            "--final-episodes", "1"]  # fmt: skip

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "nb2_agents.cli", *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)

    out = run("train", "--env", "toy_envs:nb2test/Match-v0", *tiny, "--runs-dir", tmp_path / "a")
    assert out.returncode == 0 and "evaluation: toy_envs:nb2test/Match-v0" in out.stdout, out.stderr
    out = run(
        "train",
        "--env",
        "nb2test/Match-v0",
        "--gym-packages",
        "toy_envs",
        *tiny,
        "--runs-dir",
        tmp_path / "b",
    )
    assert out.returncode == 0, out.stderr
    curriculum = tmp_path / "mine.yaml"
    tasks = [{"name": n, "env_id": i, "steps": 64, "eval_episodes": 1, "random_return": 0,
              "reference_return": 10}
             for n, i in (("match", "nb2test/Match-v0"), ("mirror", "nb2test/MatchMirrored-v0"))]  # fmt: skip
    curriculum.write_text(yaml.safe_dump({"name": "mine", "algo": "ppo", "preset": "nano",
                                          "hyperparams": {"n_envs": 2, "n_steps": 32, "batch_size": 32},
                                          "tasks": tasks}))  # fmt: skip
    out = run("curriculum", curriculum, "--gym-packages", "toy_envs", "--seeds", "0,1", "--workers", "2",
              "--evals-per-task", "1", "--runs-dir", tmp_path / "c", "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = run("train", "--env", "nosuchmodule:Foo-v0")
    assert out.returncode == 2 and "cannot import 'nosuchmodule'" in out.stderr
    out = run("train", "--env", "Foo-v0", "--gym-packages", "nosuchmodule")
    assert out.returncode == 2 and "--gym-packages nosuchmodule: cannot import it" in out.stderr


def test_quiet_prints_only_the_result(tmp_path: Path) -> None:
    out = nb2("train", "--env", "CartPole-v1", "--steps", "64", "--eval-freq", "0", "--final-episodes", "1",
              "--runs-dir", tmp_path, "-q")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "evaluation: CartPole-v1" in out.stdout and f"run folder: {only_run(tmp_path)}" in out.stdout
    assert "resolved configuration" not in out.stdout and "steps (100 %)" not in out.stderr


def test_verbose_adds_sb3s_table_of_logged_values(tmp_path: Path) -> None:
    out = nb2("train", "--env", "CartPole-v1", "--steps", "64", "--n-envs", "1", "--set", "n_steps=32",
              "--set", "batch_size=32", "--eval-freq", "0", "--final-episodes", "1", "--runs-dir", tmp_path,
              "-v")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "| train/" in out.stdout and "| rollout/" in out.stdout and "ep_rew_mean" in out.stdout
    assert "resolved configuration" in out.stdout and "evaluation: CartPole-v1" in out.stdout
    out = nb2("train", "--env", "CartPole-v1", "-q", "-v")
    assert out.returncode == 2 and "-v/--verbose: not allowed with argument -q/--quiet" in out.stderr
