"""The Continual World suite (CW10 on Meta-World) trains: SAC + NB2 on its first two tasks for a
few hundred steps each, with the suite's own task settings (200-step episodes, success rate as
the score). Without the metaworld extra the suite's error names the extra.

About 15 s on two cores; skipped where metaworld is not installed (``make install`` installs it).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from nb2_agents.cli import main
from nb2_agents.curriculum.runner import run_curriculum
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import DATA_DIR

CW = DATA_DIR / "envs" / "continual-world.yaml"


def _first_two_tasks(path: Path) -> Path:
    """CW10's first two tasks at 300 steps each, and SAC learning after 100 (a smaller replay)."""
    data = yaml.safe_load(CW.read_text())
    data["tasks"] = [dict(task, steps=300, eval_episodes=1) for task in data["tasks"][:2]]
    data["hyperparams"].update(buffer_size=10_000, learning_starts=100, train_freq=50, gradient_steps=5,
                               batch_size=32)  # fmt: skip
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.skipif(importlib.util.find_spec("metaworld") is None, reason="needs the metaworld extra")
def test_the_first_two_cw10_tasks_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = _first_two_tasks(tmp_path / "cw2.yaml")  # the suite YAML is metaworld/ ids, MT1, success key
    result = run_curriculum(
        suite, runs_dir=tmp_path / "runs", evals_per_task=1, progress=False, retention="nb2"
    )
    assert "meant for a Ray cluster" in capsys.readouterr().out  # trainable_here: false says so
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["tasks"] == ["hammer", "push-wall"] and metrics["task_end_steps"]["0"] == [300, 600]
    matrix = metrics["matrix"]  # success rates: after each task (row), of each task (column)
    assert len(matrix) == 2 and all(0.0 <= p <= 1.0 for row in matrix for p in row)
    config = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert (config["algo"], config["preset"], config["retention"]) == ("sac", "nano", "nb2")
    assert (result.run_dir / "s0" / "model.zip").is_file()


def test_without_metaworld_the_suite_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "metaworld", None)  # as if not installed: importing it fails
    with pytest.raises(UsageError, match=r"pip install 'nb2-agents\[metaworld\]'"):
        run_curriculum("continual-world", runs_dir=tmp_path)
    assert main(["curriculum", "continual-world", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "nb2-agents[metaworld]" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())
