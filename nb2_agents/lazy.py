"""Package attributes imported on first use (PEP 562), so ``import nb2_agents`` and ``nb2 --help``
do not wait seconds for torch and Stable-Baselines3.

A package lists what it exports and where each name lives::

    __getattr__, __dir__ = lazy_exports(__name__, {"NB2": "nb2_agents.nn.model", ...})

``nb2_agents.NB2`` then imports ``nb2_agents.nn.model`` the first time it is read, and caches
the value in the package. Type checkers see the same names through ``if TYPE_CHECKING:`` imports.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, table: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``.

    :param table: exported name → ``"module"`` (the same name in it; the module itself when it is
        the package's submodule of that name and holds no such name) or ``"module:attribute"``
    """

    def __getattr__(name: str) -> Any:
        where = table.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = where.partition(":")
        imported = importlib.import_module(module)
        if module == f"{package}.{name}" and not hasattr(imported, name):
            value: Any = imported  # the submodule itself (sb3.algos), not a same-named function (zoo.build)
        else:
            value = getattr(imported, attribute or name)
        setattr(sys.modules[package], name, value)  # read once: later reads skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *table})

    return __getattr__, __dir__


def functions_over_subpackages(package: str, names: tuple[str, ...]) -> None:
    """Keep ``package.NAME`` the exported function ``NAME`` where a subpackage has that name too
    (``nb2_agents.export``, ``nb2_agents.distill``, ``nb2_agents.zoo.build``): importing the
    subpackage binds it on its parent, which would replace the function once the subpackage is
    first imported."""

    class _Package(types.ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            if name in names and isinstance(value, types.ModuleType):
                return  # the import system binding the subpackage; it stays in sys.modules
            super().__setattr__(name, value)

    sys.modules[package].__class__ = _Package
