"""``make bench``'s output: ``benchmarks/RESULTS.md`` (machine, table, missed targets) and plots.

Each benchmark's rows may carry :class:`~benchmarks.common.Point` values; every benchmark with
points gets one figure, ``benchmarks/plots/<benchmark>.png``: lines over numeric ``x`` (log
scales, e.g. time against token count), grouped bars over labelled ``x`` (e.g. latency per
runtime and batch size).
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import Point, Row

RESULTS = Path(__file__).with_name("RESULTS.md")
PLOTS = Path(__file__).with_name("plots")


def table(rows: Sequence[Row]) -> str:
    lines = ["| benchmark | metric | value | goal | met |", "|---|---|---|---|---|"]
    for r in rows:
        met = "—" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.benchmark} | {r.metric} | {r.value} | {r.goal} | {met} |")
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def plot(rows: Sequence[Row], out_dir: Path = PLOTS) -> list[Path]:
    """One PNG per benchmark whose rows carry points; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_bench: dict[str, list[Point]] = defaultdict(list)
    for r in rows:
        by_bench[r.benchmark].extend(r.points)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for bench, points in by_bench.items():
        if not points:
            continue
        series: dict[str, list[Point]] = defaultdict(list)
        for p in points:
            series[p.series].append(p)
        fig, ax = plt.subplots(figsize=(7, 4))
        if all(isinstance(p.x, int | float) for p in points):
            for name, pts in series.items():
                ax.plot([p.x for p in pts], [p.y for p in pts], marker="o", label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
        else:
            labels = list(dict.fromkeys(str(p.x) for p in points))
            width = 0.8 / len(series)
            for k, (name, pts) in enumerate(series.items()):
                values = {str(p.x): p.y for p in pts}
                xs = [i + k * width for i, label in enumerate(labels) if label in values]
                ax.bar(xs, [values[label] for label in labels if label in values], width, label=name)
            ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(labels))])
            ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(points[0].unit)
        ax.set_title(bench)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{bench}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write(rows: Sequence[Row], machine: str, command: str, seconds: float, out: Path = RESULTS) -> list[Path]:
    """Write the markdown report and the plots next to it; returns the plot files."""
    plots = plot(rows, out.parent / PLOTS.name)
    missed = [r for r in rows if r.met is False]
    lines = [
        "# nb2-agents benchmark results",
        "",
        f"Written by `{command}` in {seconds:.0f} s. Every ratio is measured side by side in one",
        "process (interleaved rounds), so the machine's speed drifts out of it.",
        "",
        "```",
        machine,
        "```",
        "",
        table(rows),
        "",
        "## Targets missed",
        "",
        *([f"- {r.benchmark}: {r.metric} = {r.value} (goal {r.goal})" for r in missed] or ["none"]),
        "",
        "## Plots",
        "",
        *(f"![{p.stem}]({p.parent.name}/{p.name})" for p in plots),
        "",
    ]
    _atomic_write(out, "\n".join(lines))
    return plots
