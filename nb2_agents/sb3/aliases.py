"""``PPO("NB2Policy", env)`` once ``nb2_agents`` is imported, without that import loading SB3.

:func:`register_on_sb3_import` (run by ``import nb2_agents``) adds the name to the
``policy_aliases`` of SB3's and sb3-contrib's algorithms right after each package is imported,
or at once if it already is. The policy class behind the name is imported when the name is first
used (:class:`_Aliases`), so SB3's import never waits on NB2's modules, nor cycles back into them.
:func:`nb2_agents.sb3.registry.register_policies`, called by hand, puts the classes there at once.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from nb2_agents.sb3.names import SB3_CLASSES, SHORT_NAME


class _Aliases(dict):  # type: ignore[type-arg]
    """An algorithm's ``policy_aliases`` whose ``"NB2Policy"`` is looked up when first used, so
    that naming it needs no NB2 module at SB3's import (nor an import cycle with them)."""

    def __init__(self, aliases: dict[str, Any], algo: type) -> None:
        super().__init__(aliases)
        self[SHORT_NAME] = None
        self.algo = algo

    def __getitem__(self, name: str) -> Any:
        value = super().__getitem__(name)
        if name == SHORT_NAME and value is None:
            from nb2_agents.sb3.algos import POLICY_FOR_CLASS

            value = self[name] = POLICY_FOR_CLASS[self.algo]
        return value

    # every read of the classes resolves the name first: the teacher loader lists them with
    # values() to rebuild a policy without unpickling, and must find NB2's there
    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def values(self) -> Any:
        self[SHORT_NAME]
        return super().values()

    def items(self) -> Any:
        self[SHORT_NAME]
        return super().items()


def _register(package: str) -> None:
    module = sys.modules[package]
    for name in SB3_CLASSES[package]:
        algo = getattr(module, name, None)
        if algo is not None and SHORT_NAME not in algo.__dict__.get("policy_aliases", {}):
            algo.policy_aliases = _Aliases(algo.policy_aliases, algo)


class _RegisteringLoader(importlib.abc.Loader):
    """A watched package's own loader, which registers ``"NB2Policy"`` once the package ran."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        _register(module.__name__)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self.inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in SB3_CLASSES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None  # found some other way: the normal import, and nb2's own imports register
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


def register_on_sb3_import() -> None:
    """Add ``"NB2Policy"`` to SB3's algorithms now if SB3 is loaded, else right after it is."""
    for package in SB3_CLASSES:
        if package in sys.modules:
            _register(package)
    waiting = any(p not in sys.modules for p in SB3_CLASSES)
    if waiting and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
