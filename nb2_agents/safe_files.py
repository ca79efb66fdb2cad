"""Files from elsewhere, opened with care: what every loader of nb2 reads through.

* zip archives: no member outside the archive, no zip bomb, and CRC or truncation errors as one
  line (:func:`check_archive`, :func:`read_member`);
* tensors: ``torch.load(weights_only=True)``, tensors and plain containers only
  (:func:`load_tensors`); arrays: ``np.load(allow_pickle=False)`` of a checked archive (:func:`load_npz`);
* ``trust_pickle`` (``--trust-pickle``) is the only way to unpickle: it warns, naming the file
  (:func:`warn_trusted`); without it, a file that needs unpickling fails with :class:`NeedsPickle`,
  one line naming the file, the field and the flag.

Model zips are rebuilt without unpickling by :mod:`nb2_agents.safe_load`. This module imports
nothing heavy (torch only when a tensor file is read), so the CLI checks files before torch loads.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from nb2_agents.errors import UsageError

TRUST_FLAG = "--trust-pickle"
TRUST_HINT = f"pass {TRUST_FLAG} (trust_pickle=True in Python) only for a file you trust"
MAX_UNPACKED_BYTES = 8 * 2**30
"""The most an archive may unpack to, all members together (8 GiB: far above any model, far
below a zip bomb's petabytes)."""
MAX_RATIO = 1000
"""The largest compression ratio a member over 16 MiB may have: DEFLATE cannot pass 1032:1, and
weights compress a few times at most; a bzip2 or LZMA bomb's ratio is in the millions."""


class NeedsPickle(UsageError):
    """The file can only be read by unpickling what it holds (``--trust-pickle``)."""

    def __init__(self, path: Path | str, field: str, why: str) -> None:
        super().__init__(
            f"{path}: {field} {why}; reading it means unpickling, which runs code from the file; {TRUST_HINT}"
        )


def warn_trusted(path: Path | str, what: str = "the file") -> None:
    """The warning ``--trust-pickle`` gives before it unpickles ``path``."""
    warnings.warn(
        f"{TRUST_FLAG}: unpickling {what} of {path}; any code it holds runs now", UserWarning, stacklevel=3
    )


def check_archive(path: Path, archive: zipfile.ZipFile) -> None:
    """:class:`UsageError` for a member outside the archive or a zip bomb, before anything unpacks."""
    total = 0
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        if name.startswith("/") or ".." in PurePosixPath(name).parts or re.match(r"^[A-Za-z]:", name):
            raise UsageError(f"{path}: member {info.filename!r} points outside the archive; refused")
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if total > MAX_UNPACKED_BYTES or (info.file_size > 16 * 2**20 and ratio > MAX_RATIO):
            raise UsageError(
                f"{path}: member {info.filename!r} unpacks to {info.file_size:,} bytes ({total:,} in all, "
                f"{ratio:,.0f}x its packed size): a zip bomb, refused"
            )


def read_members(path: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """The members of a checked archive whose names ``wanted`` accepts, by name, read in one
    opening; :class:`UsageError` (one line) for a damaged archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            check_archive(path, archive)
            return {name: archive.read(name) for name in archive.namelist() if wanted(name)}
    except (zipfile.BadZipFile, OSError, EOFError) as err:  # a bad CRC is a BadZipFile
        raise UsageError(f"cannot read {path} (truncated or corrupt: {err})") from None


def read_member(path: Path, name: str) -> bytes:
    """One member of a checked archive; :class:`UsageError` (one line) for a damaged or missing one."""
    found = read_members(path, lambda member: member == name)
    if name not in found:
        raise UsageError(f"{path} has no member {name}")
    return found[name]


def load_npz(path: Path) -> Any:
    """``np.load`` of an ``.npz`` archive, checked first (:func:`check_archive`), arrays only
    (``allow_pickle=False``): use it as a context manager. ``UsageError`` for a bad archive;
    numpy's own errors for a bad array."""
    import numpy as np

    with zipfile.ZipFile(path) as archive:
        check_archive(path, archive)
    return np.load(path, allow_pickle=False)


def load_tensors(
    source: Path | bytes, path: Path | str, field: str, device: Any = "cpu", trust_pickle: bool = False
) -> Any:
    """``torch.load`` of tensors and plain containers (``weights_only=True``) from a file or bytes;
    ``trust_pickle`` unpickles anything, with a warning. :class:`NeedsPickle` when it holds more
    than tensors, :class:`UsageError` when it is unreadable; both name ``path`` and ``field``."""
    import torch

    if trust_pickle:
        warn_trusted(path, field)
    file = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return torch.load(file, map_location=device, weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:  # weights_only refuses anything but tensors and containers
        first = " ".join(str(err).split()).split(". ")[0][:160]
        raise NeedsPickle(path, field, f"holds more than tensors ({first})") from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        why = " ".join(str(err).split())[:200]
        raise UsageError(f"cannot read {field} of {path} (truncated or corrupt: {why})") from None
