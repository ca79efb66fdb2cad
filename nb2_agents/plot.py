"""``nb2 plot``: learning curves (episode return against steps) from runs' Monitor CSVs.

Each run's curve is a moving average over episodes. Runs whose config.yaml agree on
everything but the seed form one group, drawn as the mean across seeds with a ± std band
(curves resampled onto a common step grid up to the shortest run of the group).
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nb2_agents.errors import UsageError
from nb2_agents.runs import CONFIG_NAME, failure

# keys that differ between runs of one configuration
_PER_RUN = {"seed", "source", "nb2_agents", "threads", "device"}
DEFAULT_OUT = "learning_curves.png"


@dataclass
class Group:
    label: str
    runs: list[Path] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    """Each run's seed, from its config.yaml."""
    curves: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def monitor_episodes(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(env steps at each episode's end, episode return) over all of a run's training Monitor CSVs.

    Episodes from the parallel envs are put in order of wall-clock time, as SB3's
    ``results_plotter`` does (read here without pandas).
    """
    rows: list[tuple[float, float, int]] = []
    for path in sorted(run_dir.glob("*monitor.csv")):
        with path.open() as f:
            first = f.readline()
            start = float(json.loads(first[1:]).get("t_start", 0.0)) if first.startswith("#") else 0.0
            for row in csv.DictReader(f):
                try:
                    rows.append((start + float(row["t"]), float(row["r"]), int(row["l"])))
                except (KeyError, ValueError):
                    continue  # a line cut short by a crash
    rows.sort()
    steps = np.cumsum([n for _, _, n in rows])
    return steps, np.array([r for _, r, _ in rows])


def learning_curve(run_dir: Path, window: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(steps, smoothed episode return): a moving average over ``window`` episodes."""
    x, y = monitor_episodes(run_dir)
    if len(y) == 0:
        raise UsageError(
            f"{run_dir}: no finished episode in its monitor CSVs (it failed or was stopped before its "
            "first episode ended, or trained too few steps for one)"
        )
    w = min(window or max(1, min(100, len(y) // 10)), len(y))
    smooth = np.convolve(y, np.ones(w) / w, mode="valid")
    return x[w - 1 :], smooth


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _count(group: Group) -> str:
    """ "3 seeds"; "2 runs of seed 0" where runs repeat a seed."""
    runs, seeds = group.runs, set(group.seeds)
    if len(seeds) == len(runs):
        return f"{len(runs)} seeds"
    listed = ", ".join(str(s) for s in sorted(seeds, key=str))
    return f"{len(runs)} runs of seed{'s' if len(seeds) > 1 else ''} {listed}"


def group_runs(runs: list[Path]) -> list[Group]:
    """Group runs by configuration, ignoring the seed; label each by env, algo, preset and
    the settings that tell it apart from other groups of the same env, algo and preset."""
    groups: dict[str, Group] = {}
    flats: dict[str, dict[str, Any]] = {}
    for run in runs:
        config = yaml.safe_load((run / CONFIG_NAME).read_text()) or {}
        shared = {k: v for k, v in config.items() if k not in _PER_RUN}
        key = yaml.safe_dump(shared, sort_keys=True)
        if key not in groups:
            preset = (config.get("hyperparams", {}).get("policy_kwargs") or {}).get("preset", "nano")
            groups[key] = Group(f"{config.get('env')} {config.get('algo')} {preset}")
            flats[key] = _flat(shared)
        groups[key].runs.append(run)
        groups[key].seeds.append(config.get("seed"))
    base = {key: group.label for key, group in groups.items()}
    for key, group in groups.items():
        others = [flats[k] for k in groups if k != key and base[k] == base[key]]
        if others:
            mine = flats[key]
            differs = [k for k in sorted(mine) if any(o.get(k) != mine[k] for o in others)]
            group.label += " " + ", ".join(f"{k.rsplit('.', 1)[-1]}={mine[k]}" for k in differs[:3])
    return list(groups.values())


def plot(runs: list[str | Path], out: str | Path | None = None, window: int | None = None) -> Path:
    """Draw the runs into ``out`` (PNG); return the (first) file written. See :func:`plot_all`."""
    return plot_all(runs, out, window)[0]


def _sort_runs(paths: list[Path], skipped: list[str]) -> tuple[list[Path], list[Path]]:
    """(curriculum runs, ordinary runs) among ``paths``; a folder that is neither is searched one
    level down. What is not a run goes to ``skipped`` with the reason."""
    from nb2_agents.curriculum.plot import METRICS_NAME, is_curriculum_run

    curriculum: list[Path] = []
    ordinary: list[Path] = []

    def take(path: Path) -> bool:
        """Sort ``path`` if it is a run (a failed one is skipped with its error); False if not a run."""
        if failure(path) is not None:
            skipped.append(f"{path}: the run failed ({failure(path)})")
        elif is_curriculum_run(path) or (path / METRICS_NAME).is_file():
            curriculum.append(path)
        elif (path / CONFIG_NAME).is_file():
            ordinary.append(path)
        else:
            return False
        return True

    for path in paths:
        if take(path):
            continue
        inner = [take(p) for p in sorted(path.iterdir())] if path.is_dir() else []
        if not any(inner):
            skipped.append(f"{path}: not a run folder (no {CONFIG_NAME}), nor a folder of runs")
    return curriculum, ordinary


def plot_all(runs: list[str | Path], out: str | Path | None = None, window: int | None = None) -> list[Path]:
    """Draw the runs (run folders, or folders of runs) into ``out`` (PNG, default
    ``learning_curves.png``); return the files written.

    Curriculum run folders (:func:`nb2_agents.curriculum.plot.plot_curriculum`) are drawn as curves
    and heatmap PNGs each: into the run folder without ``out``; with it, to ``out`` when it is the
    only run, else to ``<out>-<run>.png``. ``window`` does not apply to them.

    What cannot be drawn is skipped with a line on stderr saying why, so that ``nb2 plot runs/*``
    draws what it can: a file, a folder holding no run, a run that failed or was stopped before
    its first episode ended, a curriculum run whose files are missing. Nothing left to draw is an
    error that lists them.
    """
    from nb2_agents.curriculum.plot import plot_curriculum

    if out is not None and Path(out).suffix.lower() != ".png":
        raise UsageError(f"--out {out}: expected a .png file name")
    skipped: list[str] = []
    curriculum, ordinary = _sort_runs([Path(p) for p in runs], skipped)
    written: list[Path] = []
    names = [p.resolve().name for p in curriculum]
    if out is not None and len(set(names)) != len(names) and len(curriculum) > 1:
        raise UsageError(f"--out {out}: the curriculum runs' folder names repeat ({', '.join(names)})")
    for path, name in zip(curriculum, names, strict=True):
        alone = len(curriculum) == 1 and not ordinary
        target = (
            None if out is None else Path(out) if alone else Path(out).with_stem(f"{Path(out).stem}-{name}")
        )
        try:
            written += plot_curriculum(path, target)
        except UsageError as err:
            skipped.append(str(err))
    curves: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
    for path in ordinary:
        try:
            curves[path] = learning_curve(path, window)
        except UsageError as err:
            skipped.append(str(err))
    if curves:
        written.append(_draw(group_runs(list(curves)), curves, Path(DEFAULT_OUT if out is None else out)))
    for reason in skipped:
        print(f"nb2 plot: skipped {reason}", file=sys.stderr)
    if not written:
        raise UsageError("nothing to plot: " + "; ".join(skipped))
    return written


def _draw(groups: list[Group], curves: dict[Path, tuple[np.ndarray, np.ndarray]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for group in groups:
        mine = [curves[run] for run in group.runs]
        if len(mine) == 1:
            x, y = mine[0]
            ax.plot(x, y, label=group.label)
            continue
        end = min(float(c[0][-1]) for c in mine)
        start = max(float(c[0][0]) for c in mine)
        grid = np.linspace(start, end, 200) if end > start else np.array([end])
        ys = np.stack([np.interp(grid, x, y) for x, y in mine])
        mean, std = ys.mean(0), ys.std(0)
        (line,) = ax.plot(grid, mean, label=f"{group.label} ({_count(group)})")
        ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.25)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return (smoothed)")
    ax.set_title("learning curves")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(out)
    return out
