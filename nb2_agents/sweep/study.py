"""The Optuna study a sweep reads and writes: in the sweep folder by default (``study.db``), or
in ``--storage URL``, which several invocations and machines share.

A study records the env, algorithm and budget it was made for, so that a shared one is never fed
trials of another problem. Each trial carries the sweep folder it ran in (user attribute
``sweep``), its run folder (``run_dir``) and its evaluations.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from nb2_agents.errors import UsageError

OPTUNA_HINT = "pip install 'nb2-agents[sweep]'"
PROBLEM_KEYS = ("env", "algo", "steps")
"""What a study is for (its user attributes): trials of other values are never mixed in."""


def require_optuna() -> None:
    if importlib.util.find_spec("optuna") is None:
        raise UsageError(f"nb2 sweep searches with Optuna, which is not installed: {OPTUNA_HINT}")


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    """``storage``, else a SQLite file in the sweep folder."""
    return storage or f"sqlite:///{(sweep_dir / 'study.db').resolve()}"


def open_storage(url: str) -> Any:
    """Optuna's storage at ``url`` (an SQLAlchemy URL: ``sqlite:///FILE``, ``postgresql://...``),
    connected now: a bad or unreachable one is a one-line error before any trial starts."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as err:  # SQLAlchemy raises its own errors (ArgumentError, OperationalError ...)
        why = " ".join(str(err).split())[:300]
        raise UsageError(
            f"--storage {url}: cannot open it as an Optuna study storage ({why}); "
            "expected an SQLAlchemy URL such as sqlite:///sweep.db or postgresql://user@host/db"
        ) from None


def open_study(storage: Any, name: str, problem: dict[str, Any], url: str) -> Any:
    """The study ``name`` in ``storage``, created for ``problem`` (env, algo, steps) if new;
    refused when it was made for another problem."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    recorded = {k: study.user_attrs[k] for k in PROBLEM_KEYS if k in study.user_attrs}
    if recorded and recorded != problem:
        raise UsageError(
            f"--study-name {name}: the study in {url} was made for {recorded}, not {problem}; "
            "pass another --study-name"
        )
    for key, value in problem.items():
        study.set_user_attr(key, value)
    return study


def mine(study: Any, sweep: str) -> list[Any]:
    """The study's trials that ran in the sweep folder ``sweep``."""
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("sweep") == sweep]


def abandoned(study: Any, sweep: str) -> list[dict[str, Any]]:
    """Mark the trials of ``sweep`` that a killed invocation left running as failed, and return
    their values, to run again."""
    from optuna.trial import TrialState

    again = []
    for trial in mine(study, sweep):
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
            again.append(dict(trial.params))
    return again
