"""Run folders and the files in them, every one written atomically (temp file, then rename).

A run folder ``{runs_dir}/{env}__{algo}__{preset}__s{seed}__{time}`` holds::

    config.yaml            the fully resolved configuration (``nb2 train --config`` re-runs it)
    events.out.tfevents.*  TensorBoard (SB3's rollout/, train/, eval/ keys and nb2/ keys)
    N.monitor.csv          one Monitor CSV per training env; eval/ holds the evaluation env's
    checkpoints/           ckpt_<steps>_steps.zip every save_freq steps, best_model.zip
    model.zip              the final (or interrupted) model
    eval.json              the final evaluation of model.zip

Model zips are SB3's, with one extra member ``nb2.json`` (algorithm, env, preset, seed) so
that ``nb2 evaluate`` and ``nb2 info`` work on a bare model file; SB3's ``load`` ignores it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger, configure

from nb2_agents.errors import UsageError
from nb2_agents.normalize import RunningStats, add_to_zip, model_stats
from nb2_agents.safe_files import check_archive

META_NAME = "nb2.json"
"""The member of a model zip that holds nb2's metadata."""
CONFIG_NAME = "config.yaml"
EVAL_NAME = "eval.json"
MODEL_NAME = "model.zip"
CHECKPOINTS = "checkpoints"
BEST_NAME = "best_model.zip"
FAILED_NAME = "failed.txt"
"""Left in a run folder by a run that raised: the error, so the folder never passes for a run."""


def safe_name(part: str) -> str:
    """A folder-name-safe version of an env id (``ALE/Pong-v5`` → ``ALE-Pong-v5``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", part)


def new_run_dir(root: str | Path, env_id: str, algo: str, preset: str, seed: int) -> Path:
    """Create a fresh ``{env}__{algo}__{preset}__s{seed}__{time}`` folder; never reuses one."""
    return fresh_dir(root, f"{safe_name(env_id)}__{algo}__{preset}__s{seed}")


def fresh_dir(root: str | Path, name: str) -> Path:
    """Create ``root/{name}__{time}`` (``-1``, ``-2``, ... if taken); never reuses a folder."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file, a read-only place
        why = "is a file" if root.is_file() else (err.strerror or str(err)).lower()
        raise UsageError(f"--runs-dir {root}: {why}; expected a folder that can be written to") from None
    base = f"{safe_name(name)}__{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1000):
        path = root / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir()  # atomic: fails if another run took the name
        except FileExistsError:
            continue
        except OSError as err:
            why = (err.strerror or str(err)).lower()
            raise UsageError(
                f"--runs-dir {root}: cannot create a run folder in it ({why}); "
                "expected a folder that can be written to"
            ) from None
        return path
    raise RuntimeError(f"could not create a fresh run folder under {root}")


def _file_mode() -> int:
    """The mode a plainly created file gets here (0644 under the usual umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove the temp files and folders (``.<name>.tmp``, :func:`atomic_write`'s and the checkpoint
    store's) that a writer killed mid-write left under ``folder``; a resumed run owns its folder,
    so none of them is being written. Returns what was removed."""
    removed = sorted(folder.rglob(".*.tmp"), reverse=True) if folder.is_dir() else []
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temp file in ``path``'s folder, flush it to disk, give it the mode
    any other file gets (``mkstemp``'s is 0600), then rename it onto ``path``: a reader sees the
    old file or the new one, never half of one, even after a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        tmp.chmod(FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically: a half-written eval.json never replaces a good one."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def write_config(path: Path, config: dict[str, Any]) -> Path:
    header = "# nb2 train configuration, fully resolved. Re-run it: nb2 train --config <this file>\n"
    return write_text(path, header + dump_yaml(config))


def save_model(
    model: BaseAlgorithm, path: Path, meta: dict[str, Any], normalize: dict[str, RunningStats] | None = None
) -> Path:
    """``model.save`` to a temp file, add ``nb2.json`` (``meta`` + steps) and, when observations
    are normalised, ``normalize.json`` (``normalize``, by default the statistics of the model's
    ``VecNormalize`` env under ``meta["env"]``), rename onto ``path``."""
    stats = model_stats(model, str(meta.get("env"))) if normalize is None else normalize

    def write(tmp: Path) -> None:
        model.save(tmp)  # the .tmp suffix stops SB3 from appending .zip
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(META_NAME, json.dumps({**meta, "num_timesteps": model.num_timesteps}))
            if stats:
                add_to_zip(archive, stats)

    return atomic_write(path, write)


def read_meta(path: Path) -> dict[str, Any]:
    """The ``nb2.json`` of a model zip ({} for a zip saved by plain SB3)."""
    with zipfile.ZipFile(path) as archive:
        if META_NAME not in archive.namelist():
            return {}
        data = json.loads(archive.read(META_NAME))
    return data if isinstance(data, dict) else {}


def check_model_file(path: Path) -> None:
    """Raise :class:`UsageError` unless ``path`` is a readable SB3 model zip."""
    expected = "expected a model .zip saved by `nb2 train` or SB3's model.save"
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist; {expected}")
    try:
        with zipfile.ZipFile(path) as archive:
            check_archive(path, archive)
            names = archive.namelist()
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise UsageError(f"cannot read model file {path} (truncated or corrupt: {err}); {expected}") from err
    if bad is not None:
        raise UsageError(f"model file {path} is corrupt (bad CRC in {bad}); {expected}")
    if "data" not in names or "policy.pth" not in names:
        raise UsageError(
            f"{path} is not an SB3 model (no data / policy.pth member: truncated, corrupt or another zip); "
            f"{expected}"
        )


def resolve_model(path: str | Path) -> tuple[Path, Path | None]:
    """A run folder or a model file → (model zip, run folder or None); ``zoo:NAME`` too through
    :func:`nb2_agents.zoo.registry.resolve_any`."""
    if isinstance(path, str) and path.startswith("zoo:"):
        raise UsageError(f"{path}: a zoo entry; nb2_agents.zoo.registry.resolve_any reads it")
    path = Path(path)
    if path.is_dir():
        model = path / MODEL_NAME
        if not model.exists() and (path / CHECKPOINTS / BEST_NAME).exists():
            model = path / CHECKPOINTS / BEST_NAME
        if not model.exists():
            raise UsageError(
                f"{path} is a folder without {MODEL_NAME}; expected a run folder made by `nb2 train` "
                "or a model .zip file"
            )
        check_model_file(model)
        return model, path
    check_model_file(path)
    for parent in (path.parent, path.parent.parent):
        if (parent / CONFIG_NAME).is_file():
            return path, parent
    return path, None


@contextlib.contextmanager
def marks_failure(run_dir: Path) -> Iterator[None]:
    """A job that raises in ``run_dir`` (any error; Ctrl-C and SIGTERM save what they can instead)
    leaves :data:`FAILED_NAME` there with the error, for ``nb2 plot`` and users to see."""
    try:
        yield
    except Exception as err:
        write_text(run_dir / FAILED_NAME, f"{type(err).__name__}: {' '.join(str(err).split())}\n")
        raise


def failure(run_dir: Path) -> str | None:
    """The error a failed run left (:func:`marks_failure`), or None."""
    path = Path(run_dir) / FAILED_NAME
    return path.read_text().strip() if path.is_file() else None


def run_logger(folder: Path, verbose: int = 1) -> Logger:
    """A run's SB3 logger: TensorBoard events in ``folder``; with ``verbose`` >= 2 (``-v``), also
    SB3's table of every logged key on stdout, as SB3's own ``verbose=1`` prints it."""
    return configure(str(folder), ["tensorboard", "stdout"] if verbose >= 2 else ["tensorboard"])
