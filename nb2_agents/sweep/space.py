"""A sweep's search space: hyperparameters as data (``policies/sweeps.yaml``), one mapping per
algorithm, as RL Zoo's samplers but in YAML so that a user can read and change it.

Each key is an entry key as ``--set`` writes it (``n_steps``, ``policy_kwargs.preset``,
``policy_kwargs.nb2_kwargs.keep_ratio``); each value says what to try:

- a list, ``[16, 32, 64]``: one of these (Optuna's categorical);
- ``uniform(LOW, HIGH)`` / ``loguniform(LOW, HIGH)``: a real number, on a linear or log scale;
- ``int(LOW, HIGH)`` / ``logint(LOW, HIGH)``: a whole number, both ends included;
- anything else: that value, fixed (not searched).

``--search KEY=SPEC`` replaces or adds one key on the command line (``--search KEY=none`` drops it),
and ``--space FILE`` reads the algorithm's mapping from another file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import DATA_DIR, read_yaml

SPACE_FILE = DATA_DIR / "policies" / "sweeps.yaml"
RANGES = ("uniform", "loguniform", "int", "logint")
_RANGE = re.compile(r"^\s*(uniform|loguniform|int|logint)\s*\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)\s*$")
FORMS = (
    "a list of choices [a, b], uniform(LOW, HIGH), loguniform(LOW, HIGH), int(LOW, HIGH) or logint(LOW, HIGH)"
)


@dataclass(frozen=True)
class Param:
    """One searched key: ``kind`` ``choice`` (``choices``), or a range from ``low`` to ``high``."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    @property
    def log(self) -> bool:
        return self.kind.startswith("log")

    def samples(self) -> list[Any]:
        """Values that cover what the space can give: each choice, or both ends of the range."""
        if self.kind == "choice":
            return list(self.choices)
        ends = [self.low, self.high]
        return [int(v) for v in ends] if self.kind.endswith("int") else ends

    def spec(self) -> str | list[Any]:
        """As the space file writes it."""
        if self.kind == "choice":
            return list(self.choices)
        low, high = (int(self.low), int(self.high)) if self.kind.endswith("int") else (self.low, self.high)
        return f"{self.kind}({low:g}, {high:g})"


@dataclass(frozen=True)
class Space:
    """The searched keys, and the keys the space fixes (applied to every trial)."""

    params: dict[str, Param]
    fixed: dict[str, Any]
    source: str
    """The file and mapping it came from, plus ``--search`` items, for error messages."""


def _number(text: str, where: str) -> float:
    try:
        value = float(yaml.safe_load(text) if not re.fullmatch(r"[-+]?[\d.]+[eE][-+]?\d+", text) else text)
    except (TypeError, ValueError, yaml.YAMLError):
        raise UsageError(f"{where}: {text!r} is not a number; expected {FORMS}") from None
    if not math.isfinite(value):
        raise UsageError(f"{where}: {text!r} is not a finite number")
    return value


def parse_param(key: str, spec: Any, where: str) -> Param | None:
    """The :class:`Param` that ``spec`` describes, or None where it is a fixed value."""
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise UsageError(f"{where}: an empty list of choices; expected {FORMS}")
        if len({repr(v) for v in spec}) < len(spec):
            raise UsageError(f"{where}: a choice is listed twice in {list(spec)}")
        bad = [v for v in spec if not (v is None or isinstance(v, (bool, int, float, str)))]
        if bad:
            raise UsageError(f"{where}: choices must be numbers, text, true/false or null; got {bad[0]!r}")
        return Param(key, "choice", choices=tuple(spec))
    match = _RANGE.match(spec) if isinstance(spec, str) else None
    if match is None:
        if isinstance(spec, str) and re.match(r"^\s*\w+\s*\(", spec):
            raise UsageError(f"{where}: {spec!r} is not a range; expected {FORMS}")
        return None
    kind, low, high = match.group(1), _number(match.group(2), where), _number(match.group(3), where)
    if kind.endswith("int") and not (low.is_integer() and high.is_integer()):
        raise UsageError(f"{where}: {spec!r}: {kind} takes whole numbers")
    if not low < high:
        raise UsageError(f"{where}: {spec!r}: LOW must be below HIGH")
    if kind.startswith("log") and low <= 0:
        raise UsageError(f"{where}: {spec!r}: a log scale needs LOW > 0")
    return Param(key, kind, low, high)


def _parse_mapping(data: Mapping[str, Any], where: str) -> tuple[dict[str, Param], dict[str, Any]]:
    params: dict[str, Param] = {}
    fixed: dict[str, Any] = {}
    for key, spec in data.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key):
            raise UsageError(
                f"{where}: {key!r} is not a key; write it as --set does, e.g. policy_kwargs.preset"
            )
        param = parse_param(key, spec, f"{where} {key}")
        if param is None:
            fixed[key] = spec
        else:
            params[key] = param
    return params, fixed


def load_space(algo: str, file: str | Path | None = None, search: Sequence[str] = ()) -> Space:
    """``algo``'s space from ``file`` (default ``policies/sweeps.yaml``), with ``--search`` items
    (``KEY=SPEC``; ``KEY=none`` drops KEY) over it."""
    path = Path(file) if file is not None else SPACE_FILE
    if not path.is_file():
        raise UsageError(f"--space {path}: no such file; expected a YAML file like {SPACE_FILE}")
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of algorithm -> search space")
    if algo not in data:
        raise UsageError(
            f"{path}: no search space for {algo!r}; it has {sorted(data)} (add one, or pass --space)"
        )
    if not isinstance(data[algo], dict):
        raise UsageError(f"{path} [{algo}]: expected a mapping of key -> {FORMS}")
    source = f"{path} [{algo}]"
    params, fixed = _parse_mapping(data[algo], source)
    for item in search:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(
                f"--search {item!r}: expected KEY=SPEC, e.g. learning_rate='loguniform(1e-4, 1e-2)'"
            )
        params.pop(key, None)
        fixed.pop(key, None)
        if text.strip().lower() == "none":
            continue
        try:
            spec = text if _RANGE.match(text) else yaml.safe_load(text)
        except yaml.YAMLError:
            raise UsageError(f"--search {item!r}: {text!r} is not YAML; expected {FORMS}") from None
        new_params, new_fixed = _parse_mapping({key: spec}, "--search")
        params.update(new_params)
        fixed.update(new_fixed)
        source += f" --search {key}={text}"
    if not params:
        raise UsageError(f"{source}: nothing to search; give at least one key a list or a range ({FORMS})")
    return Space(params, fixed, source)


def cap(space: Space, key: str, most: int, why: str) -> tuple[Space, str | None]:
    """The space without ``key``'s values above ``most`` (a range's HIGH lowered to it; at least
    the smallest value stays), and a note that says what was dropped and ``why``; None if nothing was."""
    p = space.params.get(key)
    if p is None or max(p.samples()) <= most:
        return space, None
    if p.kind == "choice":
        numbers = [v for v in p.choices if isinstance(v, (int, float)) and not isinstance(v, bool)]
        kept = tuple(v for v in p.choices if v not in numbers or v <= most) or (min(numbers),)
        new = Param(key, "choice", choices=kept)
    else:
        new = Param(key, p.kind, p.low, max(min(p.high, most), p.low + 1), ())
    params = {**space.params, key: new}
    return Space(params, space.fixed, space.source), f"{key} searched over {new.spec()} only: {why}"


def to_optuna(space: Space) -> dict[str, Any]:
    """Optuna's distributions for the searched keys (what ``OptunaSearch`` and a study ask from)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for key, p in space.params.items():
        if p.kind == "choice":
            out[key] = CategoricalDistribution(p.choices)
        elif p.kind.endswith("int"):
            out[key] = IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            out[key] = FloatDistribution(p.low, p.high, log=p.log)
    return out
