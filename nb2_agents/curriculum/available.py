"""Whether a curriculum's tasks can be made on this installation: the packages they need,
their env ids and their wrappers, each failure a one-line error naming the pip extra or the
closest registered ids."""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

import gymnasium as gym

from nb2_agents.curriculum.extras import (
    EXTRA_MODULES,
    METAWORLD_ID,
    METAWORLD_PREFIX,
    import_object,
    install_hint,
)
from nb2_agents.envs_util import check_env_id
from nb2_agents.errors import UsageError

if TYPE_CHECKING:
    from nb2_agents.curriculum.spec import CurriculumSpec, TaskSpec


def _import_extra(extra: str, why: str) -> None:
    module = EXTRA_MODULES.get(extra, extra)
    try:
        importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{why} needs the {module} package, not installed; {install_hint(extra)}") from None


def check_task(task: TaskSpec, where: str = "") -> None:
    """Raise :class:`UsageError` unless ``task``'s env can be made here: package, id, wrappers."""
    label = f"{where}[task {task.name!r}]"
    if task.env_id.startswith(METAWORLD_PREFIX):
        _import_extra("metaworld", f"{label} ({task.env_id})")
        if METAWORLD_ID not in gym.registry:
            raise UsageError(
                f"{label}: the installed metaworld registers no {METAWORLD_ID!r}; "
                f"it needs Meta-World >= 3.0; {install_hint('metaworld')}"
            )
        _check_metaworld_task(task.env_id[len(METAWORLD_PREFIX) :], label)
    else:
        try:
            check_env_id(task.env_id)
        except UsageError as err:
            raise UsageError(f"{label}.env_id: {err}") from err
    for path in task.wrappers:
        try:
            import_object(path)
        except UsageError as err:
            raise UsageError(f"{label}.wrappers: {err}") from err


def _check_metaworld_task(name: str, label: str) -> None:
    try:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS  # type: ignore[import-not-found]
    except ImportError:  # another layout: gym.make will say what is wrong
        return
    if name not in ALL_V3_ENVIRONMENTS:
        close = difflib.get_close_matches(name, list(ALL_V3_ENVIRONMENTS), n=4, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(close)}?"
            if close
            else f"tasks: {', '.join(sorted(ALL_V3_ENVIRONMENTS))}"
        )
        raise UsageError(f"{label}: unknown Meta-World task {name!r}; {hint}")


def check_available(spec: CurriculumSpec) -> None:
    """Raise :class:`UsageError` when a package a task needs is missing or an env id is unknown.

    The message names the pip extra to install (``pip install 'nb2-agents[minigrid]'``) or,
    for an unknown id, the closest registered ids. Task wrappers are imported too.
    """
    from nb2_agents.curriculum.variants import register_variants

    register_variants()
    where = f"{spec.source} " if spec.source is not None else ""
    if spec.requires is not None:
        _import_extra(spec.requires, f"{where}curriculum {spec.name!r}")
    for task in spec.tasks:
        check_task(task, where)
