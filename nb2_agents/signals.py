"""SIGTERM handled as Ctrl-C by every long job (train, curriculum, distill).

``timeout``, job schedulers and ``kill`` stop a process with SIGTERM. Under
:func:`sigterm_as_interrupt` it raises :class:`KeyboardInterrupt` where the job is, so the job's
own Ctrl-C path saves the model and what it measured. A curriculum whose seeds run in worker
processes passes the signal on to them (:func:`stop_workers`): each saves its own seed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (signals reach the main thread only:
    elsewhere the block changes nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Send SIGTERM to the pool's live worker processes, so each stops as on Ctrl-C (a terminal's
    Ctrl-C reaches them itself; a SIGTERM sent to the parent does not)."""
    processes = getattr(pool, "_processes", None) or {}  # CPython's record of the workers
    for process in list(processes.values()):
        if process.is_alive():
            process.terminate()
