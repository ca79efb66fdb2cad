"""What a curriculum's tasks may need beyond Gymnasium: the pip extras and the modules they
install, Meta-World's id scheme, and wrappers named by dotted path (``module:Class``). Shared by
:mod:`.spec` (reading a curriculum) and :mod:`.available` (checking it can be made here)."""

from __future__ import annotations

import importlib
import re
from typing import Any

from nb2_agents.errors import UsageError

METAWORLD_PREFIX = "metaworld/"
METAWORLD_ID = "Meta-World/MT1"
"""``metaworld/<task>`` is made as ``gym.make(METAWORLD_ID, env_name=<task>, **env_kwargs)``."""

EXTRA_MODULES: dict[str, str] = {"minigrid": "minigrid", "metaworld": "metaworld"}
"""pip extra of nb2-agents -> the module it installs (an unlisted extra installs a module of its name)."""

WRAPPER_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def install_hint(extra: str) -> str:
    return f"pip install 'nb2-agents[{extra}]'"


def import_object(path: str, what: str = "wrapper") -> Any:
    """``"package.module:Name"`` (``Name`` may be dotted) -> the object; UsageError if missing."""
    if not WRAPPER_PATH.fullmatch(path):
        raise UsageError(
            f"{what} {path!r} is not a dotted path; write module:Class, e.g. gymnasium.wrappers:ClipAction"
        )
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise UsageError(f"{what} {path!r}: cannot import module {module_name!r}: {err}") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"{what} {path!r} is not callable; it must be a class taking the env, Class(env)")
    return obj
