"""Retention overhead: a short curriculum with ``nb2`` retention against ``none``, same process.

Each round trains the same short cartpole-variants curriculum (``STEPS_SCALE`` of its steps, one
seed, evaluations included) once with retention ``none`` and once with ``nb2`` (distillation
from frozen snapshots on replayed observations, task ids), in alternating order, in
this one process: the wall-time ratio is the median of the per-round ratios, so the machine's
load cancels out.

Memory: what retention holds besides the agent, read from the ``nb2`` run's TensorBoard events
at its last evaluation — the replay memory's allocated bytes (the budget bounds them) and its
bytes per stored observation. The whole-process peak RSS of full-length runs, each in a fresh
process, is what ``python -m benchmarks.retention`` reports (``--only retention``, hours).

The curriculum here is short, so evaluations and the per-task set-up (snapshot, probe
of the candidate starts) weigh more than in a full run; the full-length ratio is the retention benchmark's.

Where the time goes: each run's wall time split into training, evaluation and retention
(``phase_seconds``, :func:`nb2_agents.curriculum.results.phase_seconds`), and the ratio without
the evaluations. Those are the measurement, not the method: every run evaluates every task
equally often, but a policy that kept a task plays its episodes to their end (500 steps on
CartPole) where a forgetful one falls at once, so ``nb2`` pays more for its evaluations the more it
keeps.
"""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path

from benchmarks.common import Point, Row, interleave, median, median_ratio
from nb2_agents.curriculum.runner import run_curriculum

SUITE = "cartpole-variants"
STEPS_SCALE = 0.03
QUICK_STEPS_SCALE = 0.015
WALL_VS_NONE = 1.5
REPLAY_TAG = "retention/replay_allocated_bytes"
BYTES_PER_OBS_TAG = "retention/bytes_per_obs"
MB = 1 << 20


def last_scalars(run_dir: Path, tags: tuple[str, ...]) -> dict[str, float]:
    """The last value logged for each of ``tags`` in the run's seed folders (missing tags left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, float] = {}
    for seed_dir in sorted(p for p in run_dir.glob("s*") if p.is_dir()):
        acc = EventAccumulator(str(seed_dir), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in tags:
            if tag in acc.Tags().get("scalars", []):
                out[tag] = float(acc.Scalars(tag)[-1].value)
    return out


Phases = dict[str, list[dict[str, float]]]
"""By retention, each run's ``phase_seconds``."""


def one_run(retention: str, steps_scale: float, root: Path, last: dict[str, Path], phases: Phases) -> float:
    """Seconds for one short curriculum with ``retention``; remembers its run folder in ``last`` and
    its time split in ``phases``."""
    start = time.perf_counter()
    result = run_curriculum(
        SUITE, retention=retention, seeds=(0,), steps_scale=steps_scale, runs_dir=root, device="cpu",
        progress=False,
    )  # fmt: skip
    last[retention] = result.run_dir
    phases.setdefault(retention, []).append(result.seeds[0].phase_seconds)
    return time.perf_counter() - start


def run(quick: bool = False) -> list[Row]:
    steps_scale = QUICK_STEPS_SCALE if quick else STEPS_SCALE
    rounds = 1 if quick else 2
    print(f"\n## Retention overhead: {SUITE} x {steps_scale:g} steps, nb2 vs none, {rounds} round(s)")
    last: dict[str, Path] = {}
    phases: Phases = {}
    with tempfile.TemporaryDirectory(prefix="nb2-overhead-") as tmp:
        root = Path(tmp)
        tasks = {name: partial(one_run, name, steps_scale, root, last, phases) for name in ("none", "nb2")}
        times = interleave(tasks, rounds)
        held = last_scalars(last["nb2"], (REPLAY_TAG, BYTES_PER_OBS_TAG))
    ratio = median_ratio(times["nb2"], times["none"])
    none_s, nb2_s = median(times["none"]), median(times["nb2"])
    replay_mb = held.get(REPLAY_TAG, 0.0) / MB
    per_obs = held.get(BYTES_PER_OBS_TAG)
    print(f"   none {none_s:6.1f} s   nb2 {nb2_s:6.1f} s   nb2 / none {ratio:.2f} (median of rounds)")
    print(f"   nb2 replay memory at the end: {replay_mb:.2f} MB allocated, {per_obs or 0:.0f} bytes per obs")
    split = {name: {k: median([p[k] for p in runs]) for k in runs[0]} for name, runs in phases.items()}
    for name, parts in split.items():
        print(f"   {name:<4} " + "   ".join(f"{k} {v:6.1f} s" for k, v in parts.items()) + " (medians)")
    trained = {name: [p["training"] + p["retention"] for p in runs] for name, runs in phases.items()}
    no_eval = median_ratio(trained["nb2"], trained["none"])
    print(f"   without evaluations (training + retention): nb2 / none {no_eval:.2f} (median of rounds)")
    return [
        Row(
            "overhead",
            f"retention nb2 / none wall ({SUITE} x {steps_scale:g})",
            f"{ratio:.2f} ({nb2_s:.1f} s / {none_s:.1f} s)",
            f"<= {WALL_VS_NONE}",
            ratio <= WALL_VS_NONE,
            points=(
                Point("curriculum wall time", "none", none_s, "s"),
                Point("curriculum wall time", "nb2", nb2_s, "s"),
            ),
        ),
        Row(
            "overhead",
            f"retention nb2 / none wall without evaluations ({SUITE} x {steps_scale:g})",
            f"{no_eval:.2f} (retention {split['nb2']['retention']:.1f} s of {nb2_s:.1f} s; evaluations "
            f"{split['nb2']['evaluation']:.1f} s against none's {split['none']['evaluation']:.1f} s)",
        ),
        Row(
            "overhead",
            "retention nb2 replay memory allocated",
            f"{replay_mb:.2f} MB ({per_obs or 0:.0f} bytes per stored obs)",
        ),
    ]
