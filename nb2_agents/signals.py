"""SIGTERM handled as Ctrl-C by every long job (train, curriculum, distill).

``timeout``, job schedulers and ``kill`` stop a process with SIGTERM. Under
:func:`sigterm_as_interrupt` it raises :class:`KeyboardInterrupt` where the job is, so the job's
own Ctrl-C path saves the model and what it measured. A curriculum whose seeds run as Ray tasks
cancels them (:mod:`nb2_agents.executor`): each saves its own seed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
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
