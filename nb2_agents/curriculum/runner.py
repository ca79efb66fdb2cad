"""``nb2 curriculum`` as a function: one NB2 agent across a curriculum's tasks, then its metrics.

>>> result = run_curriculum("cartpole-variants", seeds=[0, 1, 2])  # doctest: +SKIP
>>> result.metrics["forgetting"]["mean"]  # doctest: +SKIP

One SB3 algorithm instance and one NB2 model serve every task (:mod:`.adapter` gives them one
observation and one action space). ``sequential`` trains the tasks in order, swapping the env
with ``model.set_env`` at each boundary; ``multitask`` trains on all of them at once, one
vectorised env whose copies run different tasks. Learning-rate, clip-range and entropy
schedules restart at each task. The agent is evaluated on every task ``evals_per_task`` times
per task window and at each task's end (the performance matrix's rows); see
:mod:`.metrics` for what is computed from that. Each seed trains in :mod:`.seed`, in a worker
process of its own with ``workers`` > 1; :func:`resume_curriculum` continues a killed run.

Run folder ``{runs_dir}/{suite}__{algo}__{preset}__{mode}__{retention}__{time}/``:
``config.yaml``, ``metrics.json`` (written last: a finished run), ``matrix.csv`` (mean over
seeds), ``curves.csv`` (every evaluation of every seed), and ``s{seed}/`` with TensorBoard
events, Monitor CSVs per task, ``curves.csv``, ``matrix.csv``, ``model.zip``, ``result.json``,
``checkpoints/after_{i}_{task}.zip`` and the resumable ``checkpoints/state/<steps>/``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nb2_agents.checkpoint.resume import read_run_config, refuse_unresumable
from nb2_agents.checkpoint.store import STATE_DIR
from nb2_agents.curriculum.metrics import matrix_to_csv
from nb2_agents.curriculum.references import reference_aucs, reference_path
from nb2_agents.curriculum.resolve import CurriculumOptions, curriculum_options, resolve
from nb2_agents.curriculum.results import (
    METRICS_NAME,
    CurriculumConfig,
    CurriculumResult,
    SeedResult,
    curriculum_metrics,
    write_curves,
    write_multitask_matrix,
)
from nb2_agents.curriculum.schedules import _unwrap  # noqa: F401  (models saved before schedules.py pickled it here)
from nb2_agents.curriculum.seed import (  # noqa: F401  (deterministic_eval, probe_spaces: imported from here)
    RESULT_NAME,
    SeedJob,
    deterministic_eval,
    probe_spaces,
    train_seed,
)
from nb2_agents.curriculum.spec import CurriculumSpec
from nb2_agents.envs_util import import_gym_packages
from nb2_agents.errors import UsageError
from nb2_agents.executor import check_address, run_jobs
from nb2_agents.hyperparams import Hyperparams
from nb2_agents.progress import progress_mode
from nb2_agents.runs import (
    CHECKPOINTS,
    CONFIG_NAME,
    FAILED_NAME,
    dump_yaml,
    fresh_dir,
    marks_failure,
    write_json,
    write_text,
)


def _worker_init() -> None:
    torch.set_num_threads(1)  # workers share the cores; one thread each
    import_gym_packages()  # the parent's --gym-packages


def retryable_seed(job: SeedJob) -> SeedResult:
    """:func:`train_seed` as a job that may run again after its worker died: a seed that started
    before continues from its newest checkpoint (from the start if it never wrote one), a
    finished one is taken as it is, so the result is the uninterrupted run's."""
    if job.seed_dir.exists():
        job = dataclasses.replace(job, resume=True)
    return train_seed(job)


def _run_jobs(jobs: list[SeedJob], workers: int, address: str | None = None) -> list[SeedResult]:
    address = check_address(address)
    if len(jobs) > 1 and (workers > 1 or address):
        for job in jobs:  # one bar per seed would clash: a line per seed instead
            job.progress = "lines" if job.progress == "bar" else job.progress
            job.parent = None if address else os.getpid()  # a local worker stops if this process dies
    return run_jobs(retryable_seed, jobs, workers, address, init=_worker_init)


def _new_run_dir(root: Path, cfg: CurriculumConfig) -> Path:
    return fresh_dir(root, f"{cfg.suite}__{cfg.algo}__{cfg.preset}__{cfg.mode}__{cfg.retention}")


def run_curriculum(
    options: CurriculumOptions | str | Path | None = None,
    /,
    *,
    runs_dir: str | Path = "runs",
    workers: int = 1,
    progress: bool | None = None,
    verbose: int = 1,
    address: str | None = None,
    **fields: Any,
) -> CurriculumResult:
    """Train one agent across a curriculum for each seed; write the run folder; return metrics.

    What to train is a :class:`~.resolve.CurriculumOptions` (the CLI's options by the same
    names), given as ``options``, or as the curriculum's name and the rest by keyword
    (``run_curriculum("cartpole-variants", retention="nb2", seeds=[0, 1, 2])``), keywords over
    ``options``. :func:`resume_curriculum` continues a killed run from its newest checkpoint.

    :param workers: seeds trained side by side, as Ray tasks on this many CPUs (1: in this process)
    :param address: a Ray cluster to train the seeds on (``auto``, ``HOST:PORT``; ``RAY_ADDRESS``)
    :param progress: a progress bar; None: a bar on a terminal, a line every 30 s elsewhere
    :param verbose: 2 also prints SB3's table of logged values, per seed (``-v``)
    """
    cfg, spec, hp = resolve(options, **fields)
    address = check_address(address)  # before the run folder exists
    probe_spaces(spec, cfg.algo)  # space errors before a folder exists
    if not spec.trainable_here and address is None and verbose:
        total = sum(t.steps for t in spec.tasks)
        where = f"trainable_here: false in {spec.source}"
        print(f"nb2 curriculum: {spec.name} is meant for a Ray cluster ({where}): {total:,} steps per seed; "
              "--address auto trains the seeds there side by side", flush=True)  # fmt: skip
    run_dir = _new_run_dir(Path(runs_dir), cfg)
    write_text(
        run_dir / CONFIG_NAME, "# nb2 curriculum configuration, fully resolved\n" + dump_yaml(cfg.to_dict())
    )
    return _run_seeds(run_dir, cfg, spec, hp, workers, progress, verbose, resume=False, address=address)


def resume_curriculum(
    run_dir: str | Path,
    *,
    force: bool = False,
    workers: int = 1,
    progress: bool | None = None,
    verbose: int = 1,
    address: str | None = None,
) -> CurriculumResult:
    """Continue a killed ``nb2 curriculum`` run exactly where it stopped (``nb2 curriculum --resume
    RUN``): each seed from its newest checkpoint, a finished seed as it is, a seed that never
    reached its first checkpoint from the start. Its metrics, curves and models are those of a run
    that never stopped (the wall times apart).

    Refused, with the reason: a finished run (it has ``metrics.json``); a run that no seed has
    checkpointed; a configuration rebuilt from its ``config.yaml`` that differs from the recorded
    one (another nb2-agents version, a suite whose tasks changed) unless ``force``. A damaged
    newest checkpoint falls back to the one before it, and says so."""
    run = Path(run_dir)
    address = check_address(address)
    saved = read_run_config(run, "curriculum")
    try:
        cfg, spec, hp = resolve(CurriculumOptions.of_run(saved))
    except KeyError as err:
        raise UsageError(
            f"--resume {run}: {run / CONFIG_NAME} lacks {err}: not a curriculum run, or one from before "
            "curriculum runs could resume"
        ) from None
    refuse_unresumable(run, saved, cfg.to_dict(), force, "curriculum", verbose, METRICS_NAME)
    started = [s for s in cfg.seeds if (run / f"s{s}" / RESULT_NAME).is_file()
               or any((run / f"s{s}" / CHECKPOINTS / STATE_DIR).glob("[0-9]*"))]  # fmt: skip
    if not started:
        raise UsageError(
            f"--resume {run}: no seed has a checkpoint yet (one is written at each task's start); start it "
            f"again: nb2 curriculum {cfg.curriculum} with the options in {run / CONFIG_NAME}"
        )
    (run / FAILED_NAME).unlink(missing_ok=True)
    return _run_seeds(run, cfg, spec, hp, workers, progress, verbose, resume=True, address=address)


def _run_seeds(
    run_dir: Path, cfg: CurriculumConfig, spec: CurriculumSpec, hp: Hyperparams, workers: int,
    progress: bool | None, verbose: int, resume: bool, address: str | None = None,
) -> CurriculumResult:  # fmt: skip
    """Train (or continue) every seed in ``run_dir``, then write the run's metrics and CSVs."""
    mode = progress_mode(progress)
    jobs = [SeedJob(cfg, spec, hp, s, run_dir / f"s{s}", progress=mode, verbose=verbose, resume=resume)
            for s in cfg.seeds]  # fmt: skip
    with marks_failure(run_dir):
        results = _run_jobs(jobs, workers, address)
    refs = reference_aucs(cfg, spec, run_dir.parent)
    metrics = curriculum_metrics(cfg, spec, results, refs)
    mean_rows = np.mean([r.rows for r in results], axis=0)
    if cfg.mode == "sequential":
        matrix_to_csv(mean_rows, spec.task_names(), run_dir / "matrix.csv")
    else:
        write_multitask_matrix(run_dir / "matrix.csv", spec.task_names(), mean_rows[0])
    write_curves(run_dir / "curves.csv", [row for r in results for row in r.curves])
    write_json(run_dir / METRICS_NAME, metrics)  # last: the mark of a finished run
    return CurriculumResult(run_dir, cfg, metrics, results)


# --------------------------------------------------------------------------- reference runs


def run_references(
    options: CurriculumOptions | str | Path | None = None,
    /,
    *,
    runs_dir: str | Path = "runs",
    workers: int = 1,
    progress: bool | None = None,
    verbose: int = 1,
    address: str | None = None,
    **fields: Any,
) -> list[Path]:
    """Single-task runs from scratch, one per task and seed, cached under
    ``{runs_dir}/references/{suite}/``; forward transfer compares against them. Cached runs
    (same task, algorithm, preset, hyperparameters and seed) are reused, not re-trained.
    Options as :func:`run_curriculum`'s; the mode and the retention strategy are not used."""
    address = check_address(address)
    chosen = curriculum_options(options, fields)
    cfg, spec, hp = resolve(dataclasses.replace(chosen, mode="sequential", retention="none"))
    probe_spaces(spec, cfg.algo)
    root = Path(runs_dir)
    mode = progress_mode(progress)
    jobs, paths = [], []
    for i in range(len(spec.tasks)):
        for s in cfg.seeds:
            path = reference_path(root, cfg, spec, i, s)
            paths.append(path)
            if not path.exists():
                folder = path.with_suffix("")
                jobs.append(SeedJob(cfg, spec, hp, s, folder, only_task=i, progress=mode, verbose=verbose))
    results = _run_jobs(jobs, workers, address)
    for job, r in zip(jobs, results, strict=True):
        assert job.only_task is not None
        path = reference_path(root, cfg, spec, job.only_task, job.seed)
        record = {"task": spec.tasks[job.only_task].name, "seed": job.seed, "auc": r.aucs[0],
                  "final_score": r.rows[-1][0], "curves": r.curves, "config": cfg.to_dict()}  # fmt: skip
        write_json(path, record)
    return paths
