"""Where multi-run work runs: Ray, locally by default or on a cluster by address.

:func:`run_jobs` maps a function over jobs (a curriculum's seeds, its reference runs). One job, or
``workers`` = 1 without an address, runs in this process, one after another. Otherwise each job
is a Ray task (``pip install 'nb2-agents[ray]'``): a local Ray with ``workers`` CPUs is started
for the call and shut down after it, or ``address`` (``auto``, ``HOST:PORT``, or ``RAY_ADDRESS``
in the environment) joins a running cluster, where every node needs nb2-agents installed.

Fault tolerance: a task whose worker process dies (killed, out of memory, a node lost) is run
again, up to ``retries`` times, by Ray. A job that can continue from its checkpoints does so on
its retry (the curriculum's seeds: :func:`nb2_agents.curriculum.runner.retryable_seed`), so
its results equal an uninterrupted run's. An exception raised by the job itself is not retried:
it reaches the caller as itself (a :class:`~nb2_agents.errors.UsageError` stays one).

Ctrl-C or SIGTERM cancels the tasks: each running one gets a KeyboardInterrupt, so it saves what
it has as on Ctrl-C, and the interrupt reaches the caller.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, TypeVar

from nb2_agents.errors import UsageError
from nb2_agents.signals import sigterm_as_interrupt

J = TypeVar("J")
R = TypeVar("R")

RETRIES = 3
"""How many times Ray runs a job again after its worker died."""
CANCEL_GRACE_SECONDS = 120.0
"""How long cancelled jobs get to save what they have."""
RAY_HINT = "pip install 'nb2-agents[ray]'"
CONNECT_SECONDS = 5.0
"""How long ``--address HOST:PORT`` may take to answer a connection before it is an error."""


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def check_address(address: str | None) -> str | None:
    """The cluster to join: ``address``, else ``RAY_ADDRESS``, else None (a local Ray). Checked
    before any job starts: Ray must be installed to join one."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        return None
    if not ray_available():
        raise UsageError(f"--address {address}: joining a Ray cluster needs Ray: {RAY_HINT}")
    if address != "auto" and not address.startswith(("ray://", "http://", "https://")):
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise UsageError(f"--address {address!r}: expected auto or HOST:PORT, e.g. 10.0.0.5:6379")
        try:  # Ray itself waits minutes for an address nobody answers at
            socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
        except OSError as err:
            hint = "start one with `ray start --head`, or leave --address out"
            raise UsageError(f"--address {address}: no Ray cluster answers there ({err}); {hint}") from None
    return address


def _call(fn: Callable[[Any], Any], job: Any, init: Callable[[], None] | None) -> Any:
    if init is not None:
        init()
    return fn(job)


OnResult = Callable[[int, Any], None]
"""Told each job's index and result as soon as it finishes (in any order)."""


def run_jobs(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    workers: int = 1,
    address: str | None = None,
    init: Callable[[], None] | None = None,
    retries: int = RETRIES,
    fresh: bool = False,
    on_result: OnResult | None = None,
) -> list[R]:
    """``[fn(job) for job in jobs]``, as Ray tasks when ``workers`` > 1 or ``address`` is given
    (the module doc); ``init`` runs first in each worker. Results come back in the jobs' order,
    and to ``on_result`` as each finishes.

    ``fresh``: each job in a process of its own, which exits after it (a benchmark's memory peak
    is then the job's own): a Ray worker used once, or here a spawned child process per job."""
    address = check_address(address)
    if (workers <= 1 and address is None) or (len(jobs) <= 1 and address is None):
        return _here(fn, jobs, fresh, on_result)
    if not ray_available():
        print(f"nb2: Ray is not installed ({RAY_HINT}): the {len(jobs)} jobs run here, one after another",
              file=sys.stderr, flush=True)  # fmt: skip
        return _here(fn, jobs, fresh, on_result)
    return _on_ray(fn, jobs, workers, address, init, retries, fresh, on_result)


def _here(fn: Callable[[J], R], jobs: Sequence[J], fresh: bool, on_result: OnResult | None) -> list[R]:
    """The jobs one after another: in this process, or each in a spawned child process."""
    results = []
    for i, job in enumerate(jobs):
        if fresh:
            with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
                result = pool.submit(fn, job).result()
        else:
            result = fn(job)
        if on_result is not None:
            on_result(i, result)
        results.append(result)
    return results


@contextlib.contextmanager
def ray_session(workers: int, address: str | None, log_to_driver: bool = True) -> Iterator[None]:
    """Ray, ready for the block: a local one with ``workers`` CPUs started for it (and shut down
    after it), or the cluster at ``address``; an already initialised Ray is used as it is.
    ``log_to_driver``: the workers' stdout and stderr show here."""
    import ray

    started = not ray.is_initialized()
    # Ray announces on every start that its local cluster uses token authentication (the default)
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    if started:
        try:
            if address is None:
                # address "local": a Ray of its own, even where `ray start` runs one on this machine
                ray.init(address="local", num_cpus=max(workers, 1), include_dashboard=False,
                         logging_level=logging.ERROR, configure_logging=False,
                         log_to_driver=log_to_driver)  # fmt: skip
            else:
                ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR,
                         log_to_driver=log_to_driver)  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            hint = ""
            if address not in (None, "auto") and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                # Ray sends its token to an explicit address only when told to
                hint = (
                    "; a cluster started by `ray start` wants its token: RAY_AUTH_MODE=token, with the "
                    "token in ~/.ray/auth_token or RAY_AUTH_TOKEN (or --address auto on its head)"
                )
            raise UsageError(f"cannot start {where}: {' '.join(str(err).split())[:300]}{hint}") from None
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _on_ray(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    workers: int,
    address: str | None,
    init: Callable[[], None] | None,
    retries: int,
    fresh: bool = False,
    on_result: OnResult | None = None,
) -> list[R]:
    import ray

    with ray_session(workers, address):
        options: dict[str, Any] = {"max_calls": 1} if fresh else {}
        task = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=False, **options)(_call)
        refs = [task.remote(fn, job, init) for job in jobs]
        with sigterm_as_interrupt():
            try:
                if on_result is not None:
                    index = {ref: i for i, ref in enumerate(refs)}
                    waiting = list(refs)
                    while waiting:
                        ready, waiting = ray.wait(waiting, num_returns=1)
                        on_result(index[ready[0]], ray.get(ready[0]))
                return list(ray.get(refs))
            except ray.exceptions.RayTaskError as err:  # the job's own exception, as itself
                cause = getattr(err, "cause", None)
                if isinstance(cause, BaseException):
                    raise cause from None
                raise
            except KeyboardInterrupt:
                for ref in refs:
                    ray.cancel(ref)  # a KeyboardInterrupt in the task: it saves, as on Ctrl-C
                ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_SECONDS)
                raise
