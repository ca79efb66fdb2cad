"""Opening files that others made without running what they hold: the one loader of model zips,
tensors and archives.

SB3 pickles parts of every model zip (its spaces, schedules and policy class, with
``cloudpickle``), and ``PPO.load`` unpickles them: a crafted zip runs its code as it is opened
(SB3 issue #2281). Here nothing is unpickled unless the user says so:

* **model zips** (:func:`load_algorithm`): the algorithm is rebuilt as SB3's ``load`` does, but
  from the plain JSON of the zip's ``data`` member: spaces from the readable summary SB3 writes
  beside each pickle (:func:`saved_space`), the policy class from the algorithm's own policies
  (:func:`~nb2_agents.sb3.sb3_zip.policy_class`), ``policy_kwargs`` as JSON with classes looked up
  by name in torch and SB3, schedules as constants (:func:`_constant`). Weights and optimizer
  states are read with ``torch.load(weights_only=True)``. The rebuilt model predicts as the
  unpickled one does; its schedules are constants (the saved constant, else 0), which matters only
  to a model trained further (continue a run with ``--resume``: checkpoints hold no pickle).
* **tensors** (:func:`load_tensors`): ``weights_only=True``: tensors and plain containers.
* **archives** (:mod:`nb2_agents.archives`): no member outside the archive, no zip bomb (a size
  limit on what it unpacks to), CRC and truncation errors as one line.

``trust_pickle=True`` (``--trust-pickle``) is the only way to unpickle; it warns, naming the file.
A file that needs it fails by default with one line naming the file, the field and the flag.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import recursive_setattr

from nb2_agents.envs_util import EnvSpec, probe
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import ALGOS
from nb2_agents.safe_files import TRUST_HINT, NeedsPickle, load_tensors, read_members, warn_trusted
from nb2_agents.sb3.algos import SERIALIZED, readable
from nb2_agents.sb3.sb3_zip import (
    NUMBER,
    ModelZip,
    NeedsUnpickling,
    describe,
    describe_saved,
    policy_class,
    policy_kwargs,
    read_zip,
)

# --------------------------------------------------------------------------- spaces


def _numbers(text: Any, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray | None:
    """A bound as numpy printed it (``[-4.8 -inf 0.4]``, ``0``) → an array of ``shape``; None
    when numpy elided part of it (``...``), unless it is an image's (uint8, every printed value
    the same: 0 or 255 throughout, as every image space has)."""
    text = str(text)
    values = [float(n) for n in NUMBER.findall(text)]
    if "..." in text:
        if dtype != np.uint8 or len(set(values)) != 1:
            return None
        values = values[:1]
    size = math.prod(shape)
    if len(values) not in (1, size):
        return None
    return np.broadcast_to(np.array(values, dtype=np.float64), (size,)).reshape(shape).astype(dtype)


def _box(low: Any, high: Any, shape: tuple[int, ...], dtype: str) -> spaces.Box | None:
    kind = np.dtype(dtype)
    lo, hi = _numbers(low, kind, shape), _numbers(high, kind, shape)
    return None if lo is None or hi is None else spaces.Box(lo, hi, shape, kind)


def _split_args(text: str) -> list[str]:
    """``a, [b c], (d,), e`` → its top-level comma-separated parts."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def parse_space(text: str) -> spaces.Space | None:
    """A Gymnasium space from its ``repr`` (``Box(-1.0, 1.0, (3,), float32)``, ``Discrete(3)``,
    ``MultiDiscrete([2 3])``, ``MultiBinary(4)``, ``Dict('a': ..., ...)``); None otherwise."""
    match = re.fullmatch(r"\s*(\w+)\((.*)\)\s*", text, re.DOTALL)
    if match is None:
        return None
    kind, args = match.group(1), _split_args(match.group(2))
    keywords = dict(a.split("=", 1) for a in args if re.match(r"^\w+=", a))
    positional = [a for a in args if not re.match(r"^\w+=", a)]
    try:
        if kind == "Box" and len(positional) == 4:
            shape = tuple(int(n) for n in re.findall(r"\d+", positional[2]))
            return _box(positional[0], positional[1], shape, positional[3])
        if kind == "Discrete" and len(positional) == 1:
            return spaces.Discrete(int(positional[0]), start=int(keywords.get("start", 0)))
        if kind == "MultiDiscrete" and len(positional) == 1 and "start" not in keywords:
            return spaces.MultiDiscrete([int(n) for n in re.findall(r"-?\d+", positional[0])])
        if kind == "MultiBinary" and len(positional) == 1:
            sizes = [int(n) for n in re.findall(r"\d+", positional[0])]
            return spaces.MultiBinary(sizes[0] if positional[0].strip().isdigit() else sizes)
        if kind == "Dict":
            return _dict_space(match.group(2))
    except (ValueError, TypeError, AssertionError):
        return None
    return None


def _dict_space(body: str) -> spaces.Dict | None:
    """``'a': Space(...), 'b': Space(...)`` (a Dict's repr, or the ``{...}`` of its summary)."""
    body = body.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    items: dict[str, spaces.Space] = {}
    for part in _split_args(body):
        key = re.match(r"""^(['"])(.*?)\1\s*:\s*(.*)$""", part, re.DOTALL)
        if key is None:
            return None
        space = parse_space(key.group(3))
        if space is None:
            return None
        items[key.group(2)] = space
    return spaces.Dict(items)


def saved_space(entry: Any) -> spaces.Space | None:
    """The space SB3 pickled as ``entry``, rebuilt from the readable summary beside the pickle;
    None when the summary does not hold all of it (bounds numpy elided, an unknown space)."""
    summary = readable(entry)
    kind = str(summary.get(":type:", "")).rstrip("'>").rsplit(".", 1)[-1]
    try:
        if kind == "Box":
            shape = tuple(int(d) for d in summary.get("_shape") or ())
            return _box(summary.get("low"), summary.get("high"), shape, str(summary.get("dtype")))
        if kind == "Discrete":
            return spaces.Discrete(int(summary["n"]), start=int(summary.get("start", 0) or 0))
        if kind == "MultiDiscrete":
            nvec = [int(float(n)) for n in NUMBER.findall(str(summary.get("nvec", "")))]
            start = [int(float(n)) for n in NUMBER.findall(str(summary.get("start", "")))]
            return spaces.MultiDiscrete(nvec) if not any(start) else None
        if kind == "MultiBinary":
            n = summary.get("n")
            return spaces.MultiBinary(int(n) if isinstance(n, (int, str)) and str(n).isdigit() else list(n))  # type: ignore[arg-type]
        if kind == "Dict":
            return _dict_space(str(summary.get("spaces", "")))
    except (KeyError, ValueError, TypeError, AssertionError):
        return None
    return None


# --------------------------------------------------------------------------- the algorithm


def _constant(entry: Any) -> float:
    """A pickled schedule's value when its summary shows a constant (``ConstantSchedule(val=X)``),
    else 0: a safely loaded model is not trained further by anything in nb2."""
    if isinstance(entry, (int, float)):
        return float(entry)
    text = " ".join(str(v) for v in readable(entry).values())
    found = re.search(r"ConstantSchedule\(val=([^)]+)\)", text)
    try:
        return float(found.group(1)) if found else 0.0
    except ValueError:
        return 0.0


REBUILT = ("policy_class", "policy_kwargs", "observation_space", "action_space")
"""Pickled entries rebuilt from plain data: the policy class and kwargs, the spaces."""
SCHEDULES = ("learning_rate", "lr_schedule", "clip_range", "clip_range_vf")
"""Pickled schedules rebuilt as constants (``exploration_schedule`` SB3 rebuilds from plain data)."""
UNUSED = (
    "action_noise",
    "ep_info_buffer",
    "ep_success_buffer",
    "_last_obs",
    "_last_original_obs",
    "_last_episode_starts",
    "rollout_buffer_class",
    "replay_buffer_class",
    "exploration_schedule",
    "train_freq",
)
"""Pickled entries a loaded model does not need to predict: left at the algorithm's defaults."""


def _space_of_env(model: ModelZip, key: str) -> spaces.Space | None:
    """The space of the env nb2 recorded in the zip (``nb2.json``), if it matches the summary."""
    env = model.meta.get("env")
    if not isinstance(env, str) or not env:
        return None
    obs, act, _ = probe(EnvSpec(env, dict(model.meta.get("env_kwargs") or {}), model.algo))
    space = obs if key == "observation_space" else act
    return space if describe(space) == describe_saved(model.data.get(key)) else None


def _space(model: ModelZip, key: str) -> spaces.Space:
    space = saved_space(model.data.get(key))
    if space is None:  # numpy elided the bounds from the summary: the env's, when nb2 recorded it
        space = _space_of_env(model, key)
    if space is None:
        kind = readable(model.data.get(key)).get(":type:", "pickled object")
        raise NeedsPickle(model.path, key, f"is a {kind} whose readable summary does not hold all of it")
    return space


def load_algorithm(path: Path, device: str = "auto", trust_pickle: bool = False) -> tuple[BaseAlgorithm, str]:
    """The SB3 algorithm saved in ``path`` and its ``--algo`` name, rebuilt without unpickling
    (the module doc); ``trust_pickle``: SB3's own ``load``, with a warning."""
    model = read_zip(path, label="model")
    cls = ALGOS[model.algo]
    if trust_pickle:
        warn_trusted(path, "the model zip")
        return cls.load(path, device=device), model.algo
    pickled = {k for k, v in model.data.items() if isinstance(v, dict) and SERIALIZED in v}
    unknown = sorted(pickled - {*REBUILT, *SCHEDULES, *UNUSED})
    if unknown:
        raise NeedsPickle(path, f"data[{unknown[0]!r}]", "is a pickled object nb2 does not rebuild")
    try:
        policy, kwargs = policy_class(model), policy_kwargs(model)
    except NeedsUnpickling as err:
        raise UsageError(f"{err}; {TRUST_HINT}") from None
    algo = cls(policy=policy, env=None, device=device, _init_setup_model=False)  # type: ignore[call-arg]
    algo.__dict__.update({k: v for k, v in model.data.items() if k not in pickled})
    algo.observation_space = _space(model, "observation_space")
    algo.action_space = _space(model, "action_space")
    algo.policy_kwargs = kwargs
    for key in pickled & set(SCHEDULES):
        setattr(algo, key, _constant(model.data[key]))
    algo._setup_model()
    params: dict[str, Any] = {}
    variables = None
    for name, raw in read_members(path, lambda name: name.endswith(".pth")).items():
        state = load_tensors(raw, path, name, algo.device)
        if name == "pytorch_variables.pth":
            variables = state
        else:
            params[name[: -len(".pth")]] = state
    try:
        algo.set_parameters(params, exact_match=True, device=algo.device)
    except (ValueError, RuntimeError, KeyError) as err:
        why = " ".join(str(err).split())[:200]
        raise NeedsPickle(path, "policy.pth", f"does not fit the policy rebuilt from JSON ({why})") from None
    for name, value in (variables or {}).items():
        if value is not None:
            recursive_setattr(algo, f"{name}.data", value.data)
    if getattr(algo, "use_sde", False):
        algo.policy.reset_noise()  # type: ignore[operator]
    return algo, model.algo
