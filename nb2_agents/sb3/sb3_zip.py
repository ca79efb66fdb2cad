"""Read an SB3 model zip without unpickling anything from it.

SB3 saves a model as a zip: ``data`` is JSON of the algorithm's attributes, ``policy.pth`` is
the policy's ``state_dict`` (plus optimizer states). Attributes that JSON cannot hold (spaces,
schedules, classes, and ``policy_kwargs`` once it holds a class) are cloudpickled under a
``":serialized:"`` key, next to a readable summary: their type and their first-level
attributes, written as JSON or as ``str()``. ``SB3.load`` unpickles them, which runs whatever
code the file names. This module reads only the plain JSON and the readable summaries:

* the algorithm, from ``nb2.json`` or from the attributes only it has (:func:`detect_algo`);
* the policy class, one of the algorithm's built-in policies named by the summary's module and
  ``__init__`` (:func:`policy_class`);
* ``policy_kwargs`` as plain JSON, with classes that torch and SB3 define (``activation_fn``,
  ``optimizer_class``, ``features_extractor_class``) looked up by name (:func:`policy_kwargs`);
* each space's summary, to compare with the env's (:func:`check_space`);
* the weights, with ``torch.load(weights_only=True)`` (:func:`load_weights`).

Whatever cannot be read that way (a custom policy class, an object in ``policy_kwargs``)
raises :class:`NeedsUnpickling`.
"""

from __future__ import annotations

import importlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import ALGOS
from nb2_agents.runs import check_model_file, read_meta
from nb2_agents.safe_files import NeedsPickle, load_tensors, read_member
from nb2_agents.sb3.algos import SERIALIZED, readable, recognise_data

CLASS_KEYS: dict[str, type] = {
    "activation_fn": nn.Module,
    "optimizer_class": torch.optim.Optimizer,
    "features_extractor_class": BaseFeaturesExtractor,
}
"""``policy_kwargs`` entries that hold a class, and the base class it must have."""
SAFE_CLASS_MODULES = ("torch.nn.modules.", "torch.optim.", "stable_baselines3.common.torch_layers")
"""Modules whose classes may be looked up by name: installed code, nothing from the file."""
_CLASS_REPR = re.compile(r"<class '([A-Za-z_][\w.]*)\.([A-Za-z_]\w*)'>")
_INIT_REPR = re.compile(r"<function ([A-Za-z_]\w*)\.__init__ at ")
NUMBER = re.compile(r"[-+]?(?:inf|nan|\d+\.?\d*(?:e[-+]?\d+)?|\.\d+(?:e[-+]?\d+)?)", re.IGNORECASE)


class NeedsUnpickling(UsageError):
    """The teacher can only be rebuilt by unpickling code from its file."""


@dataclass(frozen=True)
class ModelZip:
    """The plain parts of an SB3 model zip."""

    path: Path
    data: dict[str, Any]
    """``data`` as JSON; pickled entries stay the dicts SB3 wrote (summary + base64)."""
    meta: dict[str, Any]
    """nb2's ``nb2.json`` ({} for a plain SB3 zip)."""
    algo: str
    label: str = "teacher"
    """What error messages call it: ``teacher``, ``model``."""


def read_zip(path: Path, label: str = "teacher") -> ModelZip:
    """Check ``path`` and read its plain JSON parts; :class:`UsageError` when unreadable.

    ``label``: what error messages call the file (``teacher``, ``model``)."""
    check_model_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
        meta = read_meta(path)
    except (json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile, OSError) as err:
        raise UsageError(f"cannot read {label} {path}: its data member is not SB3's JSON ({err})") from err
    if not isinstance(data, dict):
        raise UsageError(f"cannot read {label} {path}: its data member is not a JSON object")
    return ModelZip(path, data, meta, detect_algo(data, meta, path, label), label)


def detect_algo(data: dict[str, Any], meta: dict[str, Any], path: Path, label: str = "teacher") -> str:
    """The ``--algo`` name: nb2's metadata, else the attributes only that algorithm saves."""
    found = recognise_data(data, meta)
    if found is not None:
        return found
    raise UsageError(
        f"{label} {path}: cannot tell which algorithm saved it; valid algorithms: {', '.join(ALGOS)}"
    )


def policy_class(model: ModelZip) -> type[BasePolicy]:
    """The built-in policy class of ``model``'s algorithm that its ``policy_class`` names."""
    summary = readable(model.data.get("policy_class"))
    module = summary.get("__module__")
    init = _INIT_REPR.match(str(summary.get("__init__", "")))
    candidates = {c for c in ALGOS[model.algo].policy_aliases.values() if isinstance(c, type)}
    in_module = sorted((c for c in candidates if c.__module__ == module), key=lambda c: c.__name__)
    if init is not None:  # the summary names the class that defines __init__
        found = [c for c in in_module if c.__name__ == init.group(1) and "__init__" in c.__dict__]
    else:  # a class that inherits __init__ (NB2's policies): the module's only one, else by docstring
        found = [c for c in in_module if "__init__" not in c.__dict__]
        if len(found) > 1:
            found = [c for c in found if c.__doc__ == summary.get("__doc__")]
    if len(found) == 1:
        return found[0]  # type: ignore[no-any-return]
    name = f"{module}.{init.group(1)}" if init else str(module)
    valid = ", ".join(sorted(c.__name__ for c in candidates))
    raise NeedsUnpickling(
        f"{model.label} {model.path}: its policy class ({name}) is not one of {model.algo}'s built-in "
        f"policies ({valid}), and rebuilding it means unpickling code from the file"
    )


def _class_from_repr(key: str, text: Any, model: ModelZip) -> type:
    match = _CLASS_REPR.fullmatch(str(text))
    base = CLASS_KEYS[key]
    if match is not None and match.group(1).startswith(SAFE_CLASS_MODULES):
        try:
            cls = getattr(importlib.import_module(match.group(1)), match.group(2))
        except (ImportError, AttributeError):
            cls = None
        if isinstance(cls, type) and issubclass(cls, base):
            return cls
    raise NeedsUnpickling(
        f"{model.label} {model.path}: policy_kwargs[{key!r}] is {text}, not a class of "
        f"{', '.join(m.rstrip('.') for m in SAFE_CLASS_MODULES)}; rebuilding it means unpickling code "
        "from the file"
    )


def policy_kwargs(model: ModelZip) -> dict[str, Any]:
    """``policy_kwargs`` rebuilt from plain JSON and classes looked up by name."""
    entry = model.data.get("policy_kwargs") or {}
    if not isinstance(entry, dict):
        raise UsageError(f"{model.label} {model.path}: policy_kwargs is {entry!r}, not a mapping")
    if SERIALIZED not in entry:
        return dict(entry)
    kwargs: dict[str, Any] = {}
    for key, value in readable(entry).items():
        if key == ":type:":
            continue
        if key in CLASS_KEYS:
            kwargs[key] = _class_from_repr(key, value, model)
        elif isinstance(value, str) and value.startswith("<") and value.endswith(">"):
            raise NeedsUnpickling(
                f"{model.label} {model.path}: policy_kwargs[{key!r}] holds an object ({value}) that only "
                "unpickling can rebuild"
            )
        else:
            kwargs[key] = value
    return kwargs


# --------------------------------------------------------------------------- spaces


def describe(space: spaces.Space) -> str:
    """A space as its saved summary reads: ``Box((4,), float32)``, ``Discrete(2)``."""
    if isinstance(space, spaces.Box):
        return f"Box({tuple(int(d) for d in space.shape)}, {space.dtype})"
    if isinstance(space, spaces.Discrete):
        start = f", start={int(space.start)}" if int(space.start) else ""
        return f"Discrete({int(space.n)}{start})"
    if isinstance(space, spaces.MultiDiscrete):
        return f"MultiDiscrete({[int(n) for n in np.asarray(space.nvec).reshape(-1)]})"
    if isinstance(space, spaces.MultiBinary):
        return f"MultiBinary({space.n})"
    if isinstance(space, spaces.Dict):
        return f"Dict({space.spaces})"
    return repr(space)


def describe_saved(entry: Any) -> str:
    """The same description read from a pickled space's summary, without unpickling it."""
    summary = readable(entry)
    kind = str(summary.get(":type:", "")).rstrip("'>").rsplit(".", 1)[-1]
    numbers = [int(float(n)) for n in NUMBER.findall(str(summary.get("nvec", "")))]
    if kind == "Box":
        return f"Box({tuple(int(d) for d in summary.get('_shape') or ())}, {summary.get('dtype')})"
    if kind == "Discrete":
        start = int(summary.get("start", 0) or 0)
        return f"Discrete({int(summary.get('n', 0))}{f', start={start}' if start else ''})"
    if kind == "MultiDiscrete":
        return f"MultiDiscrete({numbers})"
    if kind == "MultiBinary":
        return f"MultiBinary({summary.get('n')})"
    if kind == "Dict":
        return f"Dict({summary.get('spaces')})"
    return kind or "an unknown space"


def _bounds_differ(entry: Any, space: spaces.Space) -> bool:
    """For a Box, whether the saved low / high (printed by numpy) differ from ``space``'s."""
    if not isinstance(space, spaces.Box):
        return False
    summary = readable(entry)
    for key, actual in (("low", space.low), ("high", space.high)):
        text = str(summary.get(key, ""))
        saved = [float(n) for n in NUMBER.findall(text)]
        if "..." in text or len(saved) != actual.size:
            continue  # numpy elided the middle of a large array: shapes were compared already
        if not np.allclose(saved, actual.reshape(-1).astype(np.float64), rtol=1e-4, equal_nan=True):
            return True
    return False


def check_space(model: ModelZip, key: str, space: spaces.Space, where: str) -> None:
    """:class:`UsageError` naming both spaces unless the saved ``key`` space matches ``space``."""
    entry = model.data.get(key)
    saved, actual = describe_saved(entry), describe(space)
    what = "observations" if key == "observation_space" else "actions"
    if saved != actual:
        raise UsageError(
            f"teacher {model.path} was trained on {what} {saved}, but {where} has {what} {actual}; "
            "pass a teacher trained on this env"
        )
    if key == "action_space" and _bounds_differ(entry, space):
        summary = readable(entry)
        raise UsageError(
            f"teacher {model.path} was trained on actions {saved} in [{summary.get('low')}, "
            f"{summary.get('high')}], but {where} has bounds [{space.low}, {space.high}]"  # type: ignore[attr-defined]
        )


# --------------------------------------------------------------------------- weights


def load_weights(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """``policy.pth`` as a state dict, read with ``weights_only=True`` (tensors, no code)."""
    try:
        state = load_tensors(read_member(path, "policy.pth"), path, "policy.pth", device)
    except NeedsPickle as err:
        raise NeedsUnpickling(f"teacher {path}: policy.pth holds more than tensors") from err
    if not isinstance(state, dict):
        raise UsageError(f"cannot read teacher {path}: policy.pth is not a state dict")
    return state  # type: ignore[no-any-return]
