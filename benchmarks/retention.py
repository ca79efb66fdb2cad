"""Knowledge retention on curricula: strategies ``none``, ``ewc``, ``distill``, ``nb2`` vs multitask.

``python -m benchmarks.retention [--suites A,B] [--seeds 0,1,2] [--steps-scale 1.0] [--workers 2]
[--runs-dir runs/benchmarks/retention] [--runs none,ewc,distill,nb2,multitask] [--quick]``, or
``python -m benchmarks --only retention``. Each finished run's figures are kept under
``{runs-dir}/measured/``; a later invocation with the same seeds and steps-scale, and the suite's
YAML unchanged (its tasks, budgets and hyperparameters), reuses them, so an interrupted benchmark
resumes where it stopped (delete that folder to measure afresh).

For each suite: the single-task reference runs (:func:`run_references`, cached under
``{runs-dir}/references/``, for forward transfer), then five curriculum runs, each one
:func:`run_curriculum` call over all seeds: sequential with retention ``none``, ``ewc``,
``distill`` and ``nb2``, and ``multitask`` (retention ``none``), the joint-training upper
bound. Each run's average performance, forgetting and forward transfer (mean over seeds and
its bootstrap CI), wall time and peak memory go into one table, followed by issue 15's targets
for ``nb2`` (:data:`TARGETS`):

* cartpole-variants: average performance >= 0.85 and >= 0.95 x multitask's; CartPole-Mirrored
  >= 0.8 at the end of the sequence; forgetting <= 0.02; the lower end of forward transfer's
  CI above 0;
* classic-control: forgetting <= 0.05 while ``none`` forgets >= 0.3; average performance >= 0.9
  x multitask's;
* minigrid: average performance >= 0.8; forward transfer > 0, and Unlock and KeyCorridor each
  learn faster than from scratch (their own forward transfer > 0);
* every suite: wall time <= 1.3 x ``none``'s; the parameters a task has of its own (its NB2
  task embedding and output adapters) <= 10 % of the network; the replay memory
  (``retention/replay_allocated_bytes`` in each seed's TensorBoard events, the largest value
  logged) within its 64 MB default budget.

The figures are printed and written to ``{runs-dir}/summary.md`` and ``summary.json``, never
asserted: this is a benchmark, not a test (the test suite checks the strategies on tiny runs).
Plots of every run (``curves.png``, ``heatmap.png``) go into its run folder.

Measures. Wall time: the whole :func:`run_curriculum` call (every seed, its evaluations, the
metrics and files). Peak memory: the largest resident set of any one process of the run, in
MB, i.e. the max of ``getrusage(RUSAGE_SELF).ru_maxrss`` (seeds trained in the run's own
process: one worker or one seed) and ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the largest
single worker process, not the sum of workers running side by side). ``ru_maxrss`` only ever
grows, so each run is made in a fresh process of its own; that process's footprint before
training (Python, torch, the imports) is reported as the baseline. The runs follow one another,
not interleaved, so load from other processes on the machine moves the wall-time ratios. With
``--address`` (a Ray cluster) a suite's runs go side by side instead, as Ray tasks, each in a
worker used once; their wall times then share the cluster and are no clean ratio.

Duration of the full run (the defaults): each seed of a suite is 460k to 950k env steps (460k for
cartpole-variants, 500k for classic-control, 950k for minigrid), 8 to 16 minutes per seed on one
core at ~1,000 steps/s, evaluations aside (MiniGrid runs slower); 5 runs x 3 suites x 3 seeds is
about 8 hours of one core (more with MiniGrid's slower steps), and the reference runs add about
one more run per suite the first time (they are cached). With ``--workers 2`` on two free cores,
about half that in wall time. ``--quick`` (steps-scale 0.02, seed 0, cartpole-variants) takes a
few minutes and only checks that everything runs: its figures mean nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from benchmarks.common import Row
from nb2_agents.curriculum.metrics import auc_gap, bootstrap_ci
from nb2_agents.curriculum.plot import plot_curriculum
from nb2_agents.curriculum.runner import run_curriculum, run_references
from nb2_agents.curriculum.spec import load_curriculum
from nb2_agents.executor import run_jobs
from nb2_agents.hyperparams import plain
from nb2_agents.retention.base import make_strategy
from nb2_agents.retention.strategy import MB, RetentionConfig

SUITES = ("cartpole-variants", "classic-control", "minigrid")
STRATEGIES = ("none", "ewc", "distill", "nb2")
MULTITASK = "multitask"
RUNS = (*STRATEGIES, MULTITASK)
SEEDS = (0, 1, 2)
STEPS_SCALE = 1.0
WORKERS = 2
RUNS_DIR = Path("runs/benchmarks/retention")
QUICK_SUITES = ("cartpole-variants",)
QUICK_SEEDS = (0,)
QUICK_STEPS_SCALE = 0.02
QUICK_RUNS_DIR = Path("runs/benchmarks/retention-quick")

MEASURED_DIR = "measured"
"""Under the runs dir: each finished run's figures, reused by a later invocation (resume)."""
REPLAY_TAG = "retention/replay_allocated_bytes"
REPLAY_SIZE_TAG = "retention/replay_size"
BYTES_PER_OBS_TAG = "retention/bytes_per_obs"
REPLAY_BUDGET_MB = RetentionConfig().replay_budget_mb
WALL_VS_NONE = 1.3
PARAMS_PER_TASK_MAX = 0.10
"""Parameters a task has of its own, as a share of one nano network."""


@dataclass(frozen=True)
class Targets:
    """What ``nb2`` should reach on one suite (issue 15); None or empty: no target of that kind."""

    perf_min: float | None = None
    perf_vs_multitask: float | None = None
    forgetting_max: float | None = None
    forgetting_none_min: float | None = None
    """``none`` should forget at least this much, or the suite does not test retention."""
    final_min: tuple[tuple[str, float], ...] = ()
    """(task, least score after the last task of the sequence)."""
    transfer_ci_low_above: float | None = None
    """The lower end of forward transfer's bootstrap CI should be above this."""
    transfer_above: float | None = None
    faster: tuple[str, ...] = ()
    """Tasks that should learn faster than from scratch (their own forward transfer > 0)."""


TARGETS = {
    "cartpole-variants": Targets(perf_min=0.85, perf_vs_multitask=0.95, forgetting_max=0.02,
                                 final_min=(("CartPole-Mirrored", 0.8),), transfer_ci_low_above=0.0),
    "classic-control": Targets(perf_vs_multitask=0.9, forgetting_max=0.05, forgetting_none_min=0.3),
    "minigrid": Targets(perf_min=0.8, transfer_above=0.0,
                        faster=("MiniGrid-Unlock-v0", "MiniGrid-KeyCorridorS3R1-v0")),
}  # fmt: skip
"""Issue 15's targets per suite; every suite also has wall <= 1.3 x none, parameters per task
<= 10 % of the network and the replay memory within its budget."""
METRICS = ("average_performance", "forgetting", "forward_transfer", "auc_gap")

MEASURE_NOTE = (
    "wall: the whole run_curriculum call (all seeds, evaluations, metrics, files). "
    "peak RSS: the largest resident set of any one process of the run, max(ru_maxrss of "
    "RUSAGE_SELF: seeds trained in the run's own process, RUSAGE_CHILDREN: the largest single "
    "worker, not the sum of workers side by side); each run in a fresh process, whose footprint "
    "before training (Python, torch, imports) is the baseline. Runs follow one another (not "
    "interleaved): other load on the machine moves the wall-time ratios."
)

T = TypeVar("T")


# --------------------------------------------------------------------------- measuring


def maxrss_mb(who: int) -> float:
    """``getrusage(who).ru_maxrss`` in MB (Linux reports kilobytes, macOS bytes)."""
    value = resource.getrusage(who).ru_maxrss
    return value / MB if sys.platform == "darwin" else value * 1024 / MB


@dataclass
class Usage:
    """Wall time and peak resident sets of one call made in a fresh process."""

    wall_s: float
    self_mb: float
    """Peak RSS of the process that made the call (seeds trained in-process, imports)."""
    children_mb: float
    """Peak RSS of the largest of its terminated child processes (seed workers); 0 if none."""
    baseline_mb: float
    """Peak RSS of the fresh process before the call: Python, torch and the imports."""

    @property
    def peak_mb(self) -> float:
        return max(self.self_mb, self.children_mb)


def _usage_of(fn: Callable[[], T], threads: int) -> tuple[T, Usage]:
    torch.set_num_threads(threads)
    baseline = maxrss_mb(resource.RUSAGE_SELF)
    start = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - start
    usage = Usage(wall, maxrss_mb(resource.RUSAGE_SELF), maxrss_mb(resource.RUSAGE_CHILDREN), baseline)
    return out, usage


def _references_job(kwargs: dict[str, Any], threads: int) -> tuple[list[str], Usage]:
    paths, usage = _usage_of(lambda: run_references(**kwargs), threads)
    return [str(p) for p in paths], usage


def _curriculum_job(kwargs: dict[str, Any], threads: int) -> tuple[tuple[str, dict[str, Any]], Usage]:
    result, usage = _usage_of(lambda: run_curriculum(**kwargs), threads)
    return (str(result.run_dir), result.metrics), usage


def _apply(call: tuple[Callable[..., T], tuple[Any, ...]]) -> T:
    fn, args = call
    return fn(*args)


def in_fresh_process(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a new process (:func:`nb2_agents.executor.run_jobs` with ``fresh``), so
    that its ``ru_maxrss`` figures are its own."""
    return run_jobs(_apply, [(fn, args)], fresh=True)[0]


def replay_peak_mb(run_dir: Path) -> list[tuple[float, float]]:
    """Per seed folder ``run_dir/s*/``, the largest replay memory logged, in MB: allocated
    (``retention/replay_allocated_bytes``, what the budget bounds) and filled (``replay_size`` x
    ``bytes_per_obs``, also logged as ``retention/replay_bytes``). Logged at each evaluation,
    so these are peaks over the evaluations."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    peaks = []
    for seed_dir in sorted(p for p in run_dir.glob("s*") if p.is_dir()):
        acc = EventAccumulator(str(seed_dir), size_guidance={"scalars": 0})
        acc.Reload()
        tags = acc.Tags().get("scalars", [])
        if REPLAY_TAG not in tags:
            continue
        allocated = max(event.value for event in acc.Scalars(REPLAY_TAG)) / MB
        filled = 0.0
        if REPLAY_SIZE_TAG in tags and BYTES_PER_OBS_TAG in tags:
            sizes, per_obs = acc.Scalars(REPLAY_SIZE_TAG), acc.Scalars(BYTES_PER_OBS_TAG)
            filled = max(a.value * b.value for a, b in zip(sizes, per_obs, strict=False)) / MB
        peaks.append((allocated, filled))
    return peaks


# --------------------------------------------------------------------------- the runs


@dataclass
class Measured:
    """One curriculum run of the benchmark."""

    suite: str
    run: str
    """A retention strategy (sequential mode) or ``multitask``."""
    run_dir: str
    metrics: dict[str, Any]
    usage: Usage
    replay_mb: list[tuple[float, float]] = field(default_factory=list)
    """Per seed, the largest replay memory logged, allocated and filled (strategies with one)."""
    plots: list[str] = field(default_factory=list)

    def mean(self, key: str) -> float | None:
        value = self.metrics[key]["mean"]
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["metrics"] = {key: self.metrics[key] for key in METRICS}
        out["metrics"]["seconds"] = self.metrics.get("seconds")
        out["metrics"]["phase_seconds"] = self.metrics.get("phase_seconds")
        out["usage"]["peak_mb"] = self.usage.peak_mb
        return out


def measured_path(runs_dir: Path, suite: str, name: str) -> Path:
    return runs_dir / MEASURED_DIR / f"{suite}__{name}.json"


def suite_key(suite: str) -> str:
    """What a suite's runs depend on in its YAML: tasks, budgets, algorithm, preset, hyperparameters;
    not its description or where the file lies (another checkout, an installed wheel)."""
    data = asdict(load_curriculum(suite))
    del data["source"], data["description"]
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _same_hyperparams(run_dir: str, suite: str) -> bool:
    """For figures kept before :func:`suite_key` was recorded: the run's ``config.yaml`` holds every
    hyperparameter the suite's YAML sets now, with the same value."""
    config = Path(run_dir) / "config.yaml"
    if not config.is_file():
        return False
    ran = yaml.safe_load(config.read_text()).get("hyperparams") or {}
    return _holds(ran, plain(load_curriculum(suite).hyperparams))


def _holds(ran: Any, wanted: Any) -> bool:
    """``ran`` has every key of ``wanted``, with the same value (nested dicts: the same keys)."""
    if isinstance(wanted, dict):
        return isinstance(ran, dict) and all(_holds(ran.get(k), v) for k, v in wanted.items())
    return str(ran) == str(wanted)


def strategy_settings(run: str) -> dict[str, Any]:
    """The settings a run's retention strategy has by default now (none for ``none`` and
    ``multitask``): figures measured with other defaults are measured again."""
    if run == "multitask":
        return {}
    config = getattr(make_strategy(run), "config", None)
    return {k: v for k, v in asdict(config).items() if k != "seed"} if config is not None else {}


def _same_strategy(saved: dict[str, Any] | None, run: str) -> bool:
    now = strategy_settings(run)
    if (
        saved is None
    ):  # kept before the settings were recorded: when distill_every (1) was the only one new since
        return now.get("distill_every", 1) == 1
    return saved == now


def load_measured(path: Path, seeds: Sequence[int], steps_scale: float) -> Measured | None:
    """A run measured by an earlier invocation with the same seeds and steps-scale, on the suite's
    YAML and the strategy's defaults as they are now, or None."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("seeds") != list(seeds) or data.get("steps_scale") != steps_scale:
        return None
    m = data["measured"]
    key = data.get("suite_key")
    if (key != suite_key(m["suite"])) if key else not _same_hyperparams(m["run_dir"], m["suite"]):
        print(f"   {m['run']}: {path} was measured on an earlier {m['suite']} YAML; measuring again")
        return None
    if not _same_strategy(data.get("strategy"), m["run"]):
        print(f"   {m['run']}: {path} was measured with other {m['run']} defaults; measuring again")
        return None
    return Measured(
        m["suite"], m["run"], m["run_dir"], with_auc_gap(m["metrics"]), Usage(**m["usage"]),
        [tuple(pair) for pair in m["replay_mb"]], m["plots"],
    )  # fmt: skip


def with_auc_gap(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with its ``auc_gap`` entry, computed from its per-seed ``auc`` and its
    ``reference_auc`` where it was measured before that metric was recorded."""
    if "auc_gap" in metrics:
        return metrics
    seeds = [str(s) for s in metrics.get("seeds", [])]
    values = [auc_gap([a or 0.0 for a in metrics["auc"][s]], metrics.get("reference_auc")) for s in seeds]
    present = [v for v in values if v is not None]
    mean, low, high = bootstrap_ci(present) if present else (None, None, None)
    per_seed = [{"seed": int(s), "value": v} for s, v in zip(seeds, values, strict=True)]
    entry = {"mean": mean, "ci_low": low, "ci_high": high, "per_seed": per_seed, "n": len(present)}
    return {**metrics, "auc_gap": entry}


def save_measured(path: Path, measured: Measured, seeds: Sequence[int], steps_scale: float) -> None:
    """Keep a finished run's figures, so that an interrupted benchmark resumes after it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "seeds": list(seeds),
        "steps_scale": steps_scale,
        "suite_key": suite_key(measured.suite),
        "strategy": strategy_settings(measured.run),
        "measured": asdict(measured),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def run_suite(
    suite: str,
    seeds: Sequence[int],
    steps_scale: float,
    workers: int,
    runs_dir: Path,
    device: str,
    threads: int,
    runs: Sequence[str] = RUNS,
    address: str | None = None,
) -> list[Measured]:
    """The suite's references, then its runs: one after another here (each in a fresh process,
    its seeds side by side), or all at once as Ray tasks on the cluster at ``address``."""
    common: dict[str, Any] = dict(
        seeds=list(seeds), steps_scale=steps_scale, runs_dir=runs_dir, device=device, workers=workers,
        address=address,
    )  # fmt: skip
    where = f"the Ray cluster at {address}, the runs side by side" if address else f"{workers} worker(s)"
    print(f"\n### {suite}: seeds {','.join(map(str, seeds))}, steps x {steps_scale:g}, {where}")
    paths, usage = in_fresh_process(_references_job, {"curriculum": suite, **common}, threads)
    print(f"   references: {len(paths)} single-task runs (cached ones reused) in {usage.wall_s:.0f} s")
    out: dict[str, Measured] = {}
    todo: list[str] = []
    for name in runs:
        done = measured_path(runs_dir, suite, name)
        cached = load_measured(done, seeds, steps_scale)
        if cached is None:
            todo.append(name)
            continue
        print(f"   {name:<9} {cached.usage.wall_s:7.0f} s  (measured earlier: {done})")
        out[name] = cached

    def finished(k: int, result: tuple[tuple[str, dict[str, Any]], Usage]) -> None:
        name = todo[k]
        (run_dir, metrics), usage = result
        measured = Measured(suite, name, run_dir, metrics, usage)
        if name not in ("none", MULTITASK):
            measured.replay_mb = replay_peak_mb(Path(run_dir))
        try:
            measured.plots = [str(p) for p in plot_curriculum(Path(run_dir))]
        except Exception as err:  # a plot must not cost the figures of an hours-long run
            print(f"   {name}: plotting {run_dir} failed: {err}")
        print(f"   {name:<9} {usage.wall_s:7.0f} s  peak RSS {usage.peak_mb:6.0f} MB  {run_dir}")
        save_measured(measured_path(runs_dir, suite, name), measured, seeds, steps_scale)
        out[name] = measured

    calls = []
    for name in todo:
        mode, retention = ("multitask", "none") if name == MULTITASK else ("sequential", name)
        calls.append(
            (
                _curriculum_job,
                ({"curriculum": suite, "mode": mode, "retention": retention, **common}, threads),
            )
        )
    run_jobs(
        _apply, calls, workers=len(calls) if address else 1, address=address, fresh=True, on_result=finished
    )
    return sorted(out.values(), key=lambda m: RUNS.index(m.run))  # the table's order, whatever ran first


# --------------------------------------------------------------------------- reporting


def fmt_ci(entry: dict[str, Any]) -> str:
    if entry.get("mean") is None:
        return "n/a"
    return f"{entry['mean']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def per_seed(entry: dict[str, Any]) -> str:
    """The per-seed values of a metric, in seed order ("n/a" where undefined)."""
    return ", ".join(_num(seed["value"]) for seed in entry.get("per_seed", []))


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _find(measured: list[Measured], suite: str, run: str) -> Measured | None:
    return next((m for m in measured if m.suite == suite and m.run == run), None)


def table(measured: list[Measured]) -> str:
    lines = [
        "| suite | run | average performance (per seed) | forgetting | forward transfer | AUC gap "
        "| wall (s) | wall / none | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in measured:
        none = _find(measured, m.suite, "none")
        ratio = "n/a" if none is None else f"{m.usage.wall_s / none.usage.wall_s:.2f}"
        cells = [fmt_ci(m.metrics[key]) for key in METRICS]
        cells[0] += f" ({per_seed(m.metrics['average_performance'])})"
        lines.append(
            f"| {m.suite} | {m.run} | {' | '.join(cells)} | {m.usage.wall_s:.0f} | {ratio} "
            f"| {m.usage.peak_mb:.0f} |"
        )
    return "\n".join(lines)


def _final_score(m: Measured, task: str) -> float | None:
    """``task``'s score after the last task of the sequence, mean over seeds (None: not in the run)."""
    tasks, matrix = m.metrics.get("tasks") or [], m.metrics.get("matrix") or []
    if task not in tasks or not matrix:
        return None
    return float(matrix[-1][tasks.index(task)])


def _task_transfer(m: Measured, task: str) -> float | None:
    """``task``'s forward transfer, mean over the seeds that have one (None: no reference)."""
    tasks = m.metrics.get("tasks") or []
    if task not in tasks:
        return None
    index = tasks.index(task)
    values = [
        seed["per_task_forward_transfer"][index]
        for seed in (m.metrics.get("per_seed_metrics") or {}).values()
        if seed["per_task_forward_transfer"][index] is not None
    ]
    return sum(values) / len(values) if values else None


def params_per_task(suite: str) -> tuple[int, int]:
    """(parameters each task has of its own, parameters of the whole network) of one NB2 network
    of ``suite``'s preset on its common observation space (``NB2.TASK_PARAMS``)."""
    from nb2_agents.curriculum.runner import probe_spaces
    from nb2_agents.curriculum.spec import load_curriculum
    from nb2_agents.nn.config import get_config
    from nb2_agents.nn.model import NB2

    spec = load_curriculum(suite)
    net = NB2(probe_spaces(spec, spec.algo).observation_space, get_config(spec.preset))
    params = dict(net.named_parameters())
    return sum(params[name][0].numel() for name in NB2.TASK_PARAMS), net.param_report().total


def _compare(value: float | None, op: str, bound: float) -> bool | None:
    """``value op bound`` (None when the value is missing)."""
    if value is None:
        return None
    return {">=": value >= bound, "<=": value <= bound, ">": value > bound}[op]


def _trained_seconds(m: Measured) -> float | None:
    """Training plus retention time, summed over seeds, or None for a run measured before the
    split was recorded."""
    phases = m.metrics.get("phase_seconds") or {}
    if not phases:
        return None
    return float(sum(p["training"] + p["retention"] for p in phases.values()))


def suite_checks(measured: list[Measured], suite: str) -> list[Row]:
    """Issue 15's targets for ``nb2`` on one suite (:data:`TARGETS`), and every suite's wall time,
    parameters per task and replay memory, on the means over seeds (``met`` None where a figure
    is missing; a target whose runs were not made is left out)."""
    runs = {name: _find(measured, suite, name) for name in RUNS}
    none, nb2, multi = (runs[name] for name in ("none", "nb2", MULTITASK))
    if nb2 is None:
        return []
    goals = TARGETS.get(suite, Targets())
    a_nb2 = nb2.mean("average_performance")
    checks: list[tuple[str, float | None, str, float]] = []  # (metric, value, op, bound)
    if goals.forgetting_max is not None:
        checks.append(("forgetting nb2", nb2.mean("forgetting"), "<=", goals.forgetting_max))
    if goals.forgetting_none_min is not None and none is not None:
        checks.append(("forgetting none", none.mean("forgetting"), ">=", goals.forgetting_none_min))
    if goals.perf_min is not None:
        checks.append(("avg perf nb2", a_nb2, ">=", goals.perf_min))
    checks += [
        (f"nb2 {task} at the end", _final_score(nb2, task), ">=", least) for task, least in goals.final_min
    ]
    if goals.transfer_ci_low_above is not None:
        low = nb2.metrics["forward_transfer"].get("ci_low")
        checks.append(("forward transfer nb2, CI low end", low, ">", goals.transfer_ci_low_above))
    if goals.transfer_above is not None:
        checks.append(("forward transfer nb2", nb2.mean("forward_transfer"), ">", goals.transfer_above))
    checks += [
        (f"forward transfer nb2, {task}", _task_transfer(nb2, task), ">", 0.0) for task in goals.faster
    ]
    rows = [
        Row("retention", f"{suite}: {m}", _num(v), f"{op} {b}", _compare(v, op, b)) for m, v, op, b in checks
    ]

    def row(metric: str, value: str, goal: str, met: bool | None) -> None:
        rows.append(Row("retention", f"{suite}: {metric}", value, goal, met))

    if goals.perf_vs_multitask is not None and multi is not None:
        a_multi = multi.mean("average_performance")
        bound = None if a_multi is None else goals.perf_vs_multitask * a_multi
        met = None if bound is None else _compare(a_nb2, ">=", bound)
        row(
            "avg perf nb2 / multitask",
            f"{_num(a_nb2)} / {_num(a_multi)}",
            f"nb2 >= {goals.perf_vs_multitask} x multitask",
            met,
        )
    if none is not None:
        ratio = nb2.usage.wall_s / none.usage.wall_s
        walls = f"{ratio:.2f} ({nb2.usage.wall_s:.0f} s / {none.usage.wall_s:.0f} s)"
        row("wall nb2 / none", walls, f"<= {WALL_VS_NONE}", ratio <= WALL_VS_NONE)
        trained = [_trained_seconds(m) for m in (nb2, none)]
        if trained[0] is not None and trained[1] is not None:  # runs made since phase_seconds exist
            split = trained[0] / trained[1]
            row("wall nb2 / none without evaluations (training + retention, summed over seeds)",
                f"{split:.2f} ({trained[0]:.0f} s / {trained[1]:.0f} s)", "(reported)", None)  # fmt: skip
    goal = f"<= {PARAMS_PER_TASK_MAX:.0%} of the network"
    try:
        per_task, total = params_per_task(suite)
    except Exception as err:  # a suite whose spec or envs cannot be loaded here: no figure, no verdict
        row("nb2 parameters per task", f"n/a ({err})", goal, None)
    else:
        row("nb2 parameters per task", f"{per_task} of {total:,} ({per_task / total:.1%})", goal,
            per_task <= PARAMS_PER_TASK_MAX * total)  # fmt: skip
    replay = max(allocated for allocated, _ in nb2.replay_mb) if nb2.replay_mb else None
    per_seed = ", ".join(f"{a:.2f} ({f:.2f} filled)" for a, f in nb2.replay_mb)
    value = (
        "n/a (no retention/replay_allocated_bytes logged)"
        if replay is None
        else f"{replay:.2f} (seeds: {per_seed})"
    )
    row(
        "nb2 replay memory allocated (MB)",
        value,
        f"<= {REPLAY_BUDGET_MB:g}",
        _compare(replay, "<=", REPLAY_BUDGET_MB),
    )
    return rows


def _met(row: Row) -> str:
    return "n/a" if row.met is None else ("met" if row.met else "NOT met")


def report(
    measured: list[Measured], suites: Sequence[str], config: dict[str, Any], runs_dir: Path
) -> list[Row]:
    """Print the table and the checks; write ``summary.md`` and ``summary.json`` into ``runs_dir``."""
    checks = [row for suite in suites for row in suite_checks(measured, suite)]
    baseline = max((m.usage.baseline_mb for m in measured), default=0.0)
    check_lines = [f"- {r.metric}: {r.value} (goal {r.goal}): {_met(r)}" for r in checks]
    notes = [
        f"Measures: {MEASURE_NOTE} Baseline here: {baseline:.0f} MB.",
        f"Metrics: mean over seeds [bootstrap CI]; seeds {config['seeds']}, "
        f"steps x {config['steps_scale']:g}. Forward transfer is Continual World's ratio; AUC gap is "
        "mean over tasks of (AUC - reference AUC), the same comparison as a plain difference.",
    ]
    plots = [p for m in measured for p in m.plots]
    print("\n## Retention\n")
    print(table(measured))
    print()
    for note in notes:
        print(note)
    print("\nTargets:")
    print("\n".join(check_lines))
    print("\nPlots:")
    print("\n".join(plots) or "(none)")

    runs_dir.mkdir(parents=True, exist_ok=True)
    md = [
        "# Retention benchmark",
        "",
        table(measured),
        "",
        *notes,
        "",
        "## Targets",
        "",
        *check_lines,
        "",
        "## Plots",
        "",
        *(f"- {p}" for p in plots),
        "",
    ]
    (runs_dir / "summary.md").write_text("\n".join(md))
    data = {
        "config": config,
        "measures": MEASURE_NOTE,
        "runs": [m.to_dict() for m in measured],
        "checks": [asdict(r) for r in checks],
    }
    (runs_dir / "summary.json").write_text(json.dumps(data, indent=2, default=str))
    print(f"\nsummary: {runs_dir / 'summary.md'}, {runs_dir / 'summary.json'}")
    return checks


def run(
    quick: bool = False,
    *,
    suites: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    steps_scale: float | None = None,
    workers: int = WORKERS,
    runs_dir: Path | None = None,
    device: str = "auto",
    runs: Sequence[str] | None = None,
    address: str | None = None,
) -> list[Row]:
    """The benchmark; ``quick``: steps-scale 0.02, seed 0, cartpole-variants (given arguments win).

    ``address``: a Ray cluster (``auto``, ``HOST:PORT``) on which each suite's runs go side by
    side, each run's seeds too; without it the runs follow one another, as the wall-time and
    memory measures want on one machine.

    ``runs``: which of ``none, ewc, distill, nb2, multitask`` to run, in that order (default all).
    Runs measured earlier with the same seeds and steps-scale (``{runs_dir}/measured/``) are
    reused, not retrained, so an interrupted benchmark resumes where it stopped."""
    runs = list(runs or RUNS)
    unknown = sorted(set(runs) - set(RUNS))
    if unknown:
        raise SystemExit(f"--runs: unknown run(s) {unknown}; choose from {', '.join(RUNS)}")
    suites = list(suites or (QUICK_SUITES if quick else SUITES))
    seeds = list(seeds if seeds is not None else (QUICK_SEEDS if quick else SEEDS))
    steps_scale = steps_scale if steps_scale is not None else (QUICK_STEPS_SCALE if quick else STEPS_SCALE)
    runs_dir = Path(runs_dir if runs_dir is not None else (QUICK_RUNS_DIR if quick else RUNS_DIR))
    threads = torch.get_num_threads()
    config = dict(
        suites=suites,
        seeds=seeds,
        steps_scale=steps_scale,
        workers=workers,
        runs_dir=str(runs_dir),
        device=device,
        torch_threads=threads,
        runs=runs,
    )
    print("\n## Retention: strategies none / ewc / distill / nb2 (sequential) and multitask, per suite")
    print(f"   {', '.join(suites)}; seeds {seeds}; steps x {steps_scale:g}; {workers} worker(s); {runs_dir}")
    measured: list[Measured] = []
    for suite in suites:
        measured += run_suite(suite, seeds, steps_scale, workers, runs_dir, device, threads, runs, address)
    return report(measured, suites, config, runs_dir)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.retention", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"steps-scale {QUICK_STEPS_SCALE}, seed 0, {', '.join(QUICK_SUITES)}",
    )
    parser.add_argument("--suites", type=_csv, help=f"comma-separated (default {','.join(SUITES)})")
    parser.add_argument("--seeds", type=lambda v: [int(s) for s in _csv(v)], help="default 0,1,2")
    parser.add_argument("--steps-scale", type=float, help=f"default {STEPS_SCALE}")
    parser.add_argument(
        "--workers", type=int, default=WORKERS, help=f"seeds side by side (default {WORKERS})"
    )
    parser.add_argument(
        "--address", metavar="auto|HOST:PORT", help="a Ray cluster: each suite's runs side by side there"
    )
    parser.add_argument("--runs-dir", type=Path, help=f"default {RUNS_DIR} ({QUICK_RUNS_DIR} with --quick)")
    parser.add_argument("--device", default="auto", help="torch device (default auto)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--runs", type=_csv, help=f"comma-separated, in this order (default {','.join(RUNS)})"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return run(
        args.quick,
        suites=args.suites,
        seeds=args.seeds,
        steps_scale=args.steps_scale,
        workers=args.workers,
        runs_dir=args.runs_dir,
        device=args.device,
        runs=args.runs,
        address=args.address,
    )


if __name__ == "__main__":
    main()
