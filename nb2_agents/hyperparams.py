"""Hyperparameters from ``policies/<algo>.yaml``, keyed by Gymnasium id (RL Zoo's format).

An entry is merged over the file's ``default`` entry. Values written ``lin_X`` become a
schedule decaying linearly from X to 0 over training, as in RL Zoo. Besides the algorithm's
constructor arguments an entry may hold ``n_envs``, ``n_timesteps``, ``policy``, RL Zoo's
``normalize`` (``true`` or a mapping of :class:`~nb2_agents.normalize.NormalizeConfig` fields:
observations and rewards normalised by ``VecNormalize``) and, for SAC / TD3, RL Zoo's
``noise_type`` (``normal`` or ``ornstein-uhlenbeck``) and ``noise_std``.
``policy`` is ``NB2Policy`` or one of SB3's own (``MlpPolicy`` ...), which trains a baseline
on the same entry once the NB2-only ``policy_kwargs`` (:func:`nb2_only_policy_kwargs`) are dropped.

Every error is a :class:`~nb2_agents.errors.UsageError` (a ``ValueError``) that names the
file, the entry and the key, and lists what would be accepted.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from nb2_agents.counts import parse_steps
from nb2_agents.errors import UsageError
from nb2_agents.nn.config import PRESETS, NB2Config
from nb2_agents.normalize import NormalizeConfig, parse_normalize
from nb2_agents.sb3 import algos
from nb2_agents.sb3.registry import POLICY_FOR_ALGO, SHORT_NAME

DATA_DIR = Path(__file__).resolve().parent / "data"
"""``envs/`` and ``policies/`` as shipped with the package (links to the top-level folders)."""

ALGOS: dict[str, type[BaseAlgorithm]] = {name: algo.cls for name, algo in algos.ALGOS.items()}
"""The ``--algo`` names and their SB3 classes (``sb3/algos.py``'s table), each with its
hyperparameter file ``policies/<name>.yaml``."""

# keys that configure the run rather than the algorithm's constructor
RUN_KEYS = ("n_envs", "n_timesteps", "policy", "normalize")
NOISE_KEYS = ("noise_type", "noise_std")
NOISE_TYPES = ("normal", "ornstein-uhlenbeck")
# constructor arguments that nb2 sets itself (from the run's options) or that are internal
_SET_BY_NB2 = {"self", "env", "policy", "seed", "device", "verbose", "tensorboard_log", "_init_setup_model"}
# policy kwargs that NB2 sets itself, or that YAML cannot express (classes)
_HIDDEN_POLICY_KWARGS = {
    "features_extractor",
    "features_extractor_class",
    "features_extractor_kwargs",
    "share_features_extractor",
    "squash_output",
    "activation_fn",
    "optimizer_class",
}


class LinearSchedule:
    """``progress_remaining * initial``: SB3 calls it with 1 at the start and 0 at the end."""

    def __init__(self, initial: float) -> None:
        self.initial = float(initial)

    def __call__(self, progress_remaining: float) -> float:
        return progress_remaining * self.initial

    def __repr__(self) -> str:
        return f"lin_{self.initial:g}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LinearSchedule) and other.initial == self.initial

    def __hash__(self) -> int:
        return hash(("lin", self.initial))


@dataclass
class Hyperparams:
    """One resolved entry: run settings plus the algorithm's constructor kwargs."""

    n_envs: int = 1
    n_timesteps: int = 1_000_000
    policy: str = "NB2Policy"
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    noise_type: str | None = None
    noise_std: float = 0.1
    normalize: NormalizeConfig | None = None
    """``VecNormalize``'s settings, or None: raw observations and rewards."""
    entry: dict[str, Any] = field(default_factory=dict)
    """The merged entry as plain YAML values (``lin_X`` strings kept), as saved in config.yaml."""

    @property
    def memory(self) -> int | None:
        """``policy_kwargs.memory``: the past steps each env keeps (``nb2_agents.memory``), or None."""
        value = self.algo_kwargs.get("policy_kwargs", {}).get("memory")
        return None if value is None else int(value)

    @property
    def gamma(self) -> float:
        """The discount factor (SB3's default 0.99 for every algorithm), which ``VecNormalize``'s
        return statistics use too, as in RL Zoo."""
        return float(self.algo_kwargs.get("gamma", 0.99))


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error, not last-wins."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:  # before `<<` merges, whose keys may be overridden
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"key {key_node.value!r} is given twice",
                    key_node.start_mark,
                )  # fmt: skip
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a syntax error or a repeated key becomes one line naming
    ``file:line:column``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = " ".join(p for p in (err.context, err.problem) if p)
        raise UsageError(f"cannot read {where}: malformed YAML: {what}") from err
    except yaml.YAMLError as err:
        raise UsageError(f"cannot read {path}: malformed YAML: {err}") from err


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as text; read it as the number it is."""
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
        return float(value)
    return value


def _parse_value(value: Any, where: str) -> Any:
    value = _number(value)
    if isinstance(value, dict):
        return {k: _parse_value(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, str) and value.startswith("lin_"):
        try:
            return LinearSchedule(float(value[4:]))
        except ValueError:
            raise UsageError(
                f"{where}: {value!r} is not a schedule; write lin_<number>, e.g. lin_1e-3"
            ) from None
    return value


def schedule_keys(algo_class: type[BaseAlgorithm]) -> set[str]:
    """Keys that accept ``lin_X``: SB3's schedules, plus ``ent_coef`` for on-policy algorithms
    (annealed by :class:`nb2_agents.callbacks.EntCoefScheduleCallback`)."""
    keys = {"learning_rate"}
    if issubclass(algo_class, OnPolicyAlgorithm):
        keys |= {"ent_coef"}
    if "clip_range" in inspect.signature(algo_class.__init__).parameters:
        keys |= {"clip_range", "clip_range_vf"}
    return keys


def valid_keys(algo_class: type[BaseAlgorithm]) -> list[str]:
    """Keys an entry for ``algo_class`` may hold."""
    ctor = set(inspect.signature(algo_class.__init__).parameters) - _SET_BY_NB2
    noise = set(NOISE_KEYS) if "action_noise" in ctor else set()
    return sorted(ctor | set(RUN_KEYS) | noise)


def policy_kwarg_keys(algo_class: type[BaseAlgorithm]) -> list[str]:
    """``policy_kwargs`` keys of the NB2 policy class behind ``"NB2Policy"`` for ``algo_class``."""
    return sorted(
        _init_keys(POLICY_FOR_ALGO[algo_class])
        - {"self", "args", "kwargs", "observation_space", "action_space", "lr_schedule"}
        - _HIDDEN_POLICY_KWARGS
    )


def _init_keys(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__:
            names |= set(inspect.signature(klass.__dict__["__init__"]).parameters)
    return names


def nb2_only_policy_kwargs(algo_class: type[BaseAlgorithm]) -> list[str]:
    """The ``policy_kwargs`` keys that only NB2's policy takes, not SB3's ``MlpPolicy``
    (``preset``, ``sampling``, ``nb2_kwargs``, ...): drop them to train the same entry with SB3's."""
    return sorted(set(policy_kwarg_keys(algo_class)) - _init_keys(algo_class.policy_aliases["MlpPolicy"]))


def policy_names(algo_class: type[BaseAlgorithm]) -> list[str]:
    """The ``policy`` values an entry for ``algo_class`` may hold: NB2's and SB3's own aliases
    (``MlpPolicy`` ..., for side-by-side baselines with the same hyperparameters)."""
    return sorted({SHORT_NAME, *algo_class.policy_aliases})


def _check_policy_kwargs(algo_class: type[BaseAlgorithm], policy: str, value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise UsageError(f"{where}: expected a mapping of policy options, got {value!r}")
    if policy != SHORT_NAME:  # SB3 checks its own policies' options; NB2's would be a TypeError there
        nb2_only = sorted(set(value) & set(nb2_only_policy_kwargs(algo_class)))
        if nb2_only:
            raise UsageError(f"{where}: {nb2_only} are NB2Policy options; {policy} does not take them")
        return
    valid = policy_kwarg_keys(algo_class)
    for key in value:
        if key not in valid:
            raise UsageError(f"{where}.{key}: unknown policy option; valid keys: {valid}")
    if value.get("memory") is not None:
        _check_memory(algo_class, value["memory"], f"{where}.memory")
    preset = value.get("preset", "nano")
    if not isinstance(preset, str) or preset not in PRESETS:
        raise UsageError(f"{where}.preset: unknown NB2 preset {preset!r}; valid presets: {sorted(PRESETS)}")
    nb2_kwargs = value.get("nb2_kwargs") or {}
    fields = sorted(f.name for f in dataclasses.fields(NB2Config))
    if not isinstance(nb2_kwargs, dict):
        raise UsageError(f"{where}.nb2_kwargs: expected a mapping of NB2Config fields; valid keys: {fields}")
    for key in nb2_kwargs:
        if key not in fields:
            raise UsageError(f"{where}.nb2_kwargs.{key}: unknown NB2Config field; valid keys: {fields}")


def _check_memory(algo_class: type[BaseAlgorithm], memory: Any, where: str) -> None:
    from nb2_agents.memory.layout import MEMORY_ALGOS, check_k
    from nb2_agents.sb3 import algos

    try:
        check_k(memory, where)
    except ValueError as err:
        raise UsageError(str(err)) from err
    if algos.of(algo_class).name not in MEMORY_ALGOS:
        raise UsageError(
            f"{where}: {algo_class.__name__} cannot carry memory over time (its replay samples "
            f"single steps); the algorithms that can: {', '.join(MEMORY_ALGOS)}"
        )


def _real(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_POSITIVE = (lambda v: _real(v) and v > 0, "a number > 0")
_UNIT = (lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1]")
_NON_NEGATIVE = (lambda v: _real(v) and v >= 0, "a number >= 0")
_COUNT = (lambda v: _whole(v) and v >= 1, "a whole number >= 1")
_FLAG = (lambda v: isinstance(v, bool), "true or false")
VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "learning_rate": _POSITIVE,
    "gamma": (lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1]"),
    "gae_lambda": _UNIT,
    "n_steps": _COUNT,
    "n_epochs": _COUNT,
    "batch_size": (
        lambda v: _whole(v) and v >= 2,
        "a whole number >= 2 (SB3 normalises advantages per batch)",
    ),
    "clip_range": _POSITIVE,
    "clip_range_vf": (lambda v: v is None or (_real(v) and v > 0), "a number > 0, or null for none"),
    "ent_coef": (
        lambda v: (_real(v) and v >= 0) or (isinstance(v, str) and v.startswith("auto")),
        "a number >= 0 (SAC: also auto or auto_<initial>)",
    ),
    "vf_coef": _NON_NEGATIVE,
    "max_grad_norm": _POSITIVE,
    "target_kl": (lambda v: v is None or (_real(v) and v > 0), "a number > 0, or null for none"),
    "buffer_size": _COUNT,
    "learning_starts": (lambda v: _whole(v) and v >= 0, "a whole number >= 0"),
    "tau": (lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1]"),
    "target_update_interval": _COUNT,
    "exploration_fraction": _UNIT,
    "exploration_initial_eps": _UNIT,
    "exploration_final_eps": _UNIT,
    "policy_delay": _COUNT,
    "target_policy_noise": _NON_NEGATIVE,
    "target_noise_clip": _NON_NEGATIVE,
    "use_sde": _FLAG,
    "normalize_advantage": _FLAG,
}
"""What the common SB3 options accept, checked where they are read (a file or ``--set``), so a
bad value is refused with its key rather than by SB3's assertions or numpy mid-setup. A ``lin_X``
schedule is checked by its initial value."""


def _check_value(key: str, value: Any, where: str) -> None:
    rule = VALUE_RULES.get(key)
    checked = value.initial if isinstance(value, LinearSchedule) else value
    if rule is not None and not rule[0](checked):
        schedule = " or lin_<number>" if key in ("learning_rate", "clip_range", "ent_coef") else ""
        raise UsageError(f"{where}: expected {rule[1]}{schedule}, got {value!r}")


def parse_entry(
    algo_class: type[BaseAlgorithm], entry: dict[str, Any], label: dict[str, str] | str
) -> Hyperparams:
    """Validate one merged entry; ``label`` names where each key came from (``file [entry]``).

    A label that ends with a space (``"--set "``) is followed by the key without a dot.
    """
    valid = valid_keys(algo_class)
    hp = Hyperparams(entry=dict(entry))
    hp.policy = str(entry.get("policy") or hp.policy)  # first: it decides which policy_kwargs are valid
    for key, value in entry.items():
        lab = label if isinstance(label, str) else label[key]
        where = f"{lab}{key}" if lab.endswith(" ") else f"{lab}.{key}"
        if key not in valid:
            raise UsageError(f"{where}: unknown key for {algo_class.__name__}; valid keys: {valid}")
        if key == "policy":
            if hp.policy not in policy_names(algo_class):
                raise UsageError(
                    f"{where}: {hp.policy!r} is not a policy for {algo_class.__name__}; "
                    f"valid: {policy_names(algo_class)}"
                )
        elif key in ("n_envs", "n_timesteps"):
            setattr(hp, key, parse_steps(value, where))
        elif key == "noise_type":
            if value not in NOISE_TYPES:
                raise UsageError(f"{where}: {value!r} is not a noise type; valid: {list(NOISE_TYPES)}")
            hp.noise_type = value
        elif key == "noise_std":
            hp.noise_std = float(value)
        elif key == "normalize":
            hp.normalize = parse_normalize(value, where)
        else:
            if key == "policy_kwargs":
                _check_policy_kwargs(algo_class, hp.policy, value, where)
            parsed = _parse_value(value, where)
            if isinstance(parsed, LinearSchedule) and key not in schedule_keys(algo_class):
                raise UsageError(
                    f"{where}: {algo_class.__name__} takes no schedule for {key!r}; "
                    f"lin_X is accepted for {sorted(schedule_keys(algo_class))}"
                )
            _check_value(key, parsed, where)
            hp.algo_kwargs[key] = parsed
    return hp


def load_entry(path: str | Path, env_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The entry for ``env_id`` merged over ``default``, and for each key the entry it came from."""
    path = Path(path)
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of env id -> hyperparameters")
    if env_id not in data and "default" not in data:
        raise UsageError(f"{path}: no entry for {env_id!r} and no 'default' entry; entries: {sorted(data)}")
    entry: dict[str, Any] = {}
    label: dict[str, str] = {}
    for name in ("default", env_id):
        part = data.get(name) or {}
        if not isinstance(part, dict):
            raise UsageError(f"{path} [{name}]: expected a mapping of hyperparameters, got {part!r}")
        entry.update(part)
        label.update({key: f"{path} [{name}]" for key in part})
    return entry, label


def load_hyperparams(algo_class: type[BaseAlgorithm], env_id: str, path: str | Path) -> Hyperparams:
    """Read the entry for ``env_id`` (merged over ``default``) from ``path``.

    Raises ``ValueError`` (:class:`UsageError`) naming the file, entry and key for an unknown
    key or a bad value.
    """
    entry, label = load_entry(path, env_id)
    return parse_entry(algo_class, entry, label)


def parse_assignment(assignment: str) -> tuple[str, Any]:
    """``--set`` text ``key=value`` → (dotted key, value read as YAML: ``32``, ``1e-3``, ``[64, 64]``)."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key):
        raise UsageError(
            f"--set {assignment!r}: expected key=value, e.g. --set n_steps=64 "
            "or --set policy_kwargs.nb2_kwargs.d_model=48"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, _number(value)


def assignments(items: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``--set``-style settings as a dict: ``"key=value"`` strings (:func:`parse_assignment`) or a
    mapping, as the Python API takes them."""
    if isinstance(items, Mapping):
        return dict(items)
    if isinstance(items, str):
        items = [items]
    return dict(parse_assignment(item) for item in items or [])


def set_dotted(entry: dict[str, Any], key: str, value: Any) -> None:
    """``entry[a][b][c] = value`` for ``key`` ``a.b.c``, copying the dicts on the way."""
    *parents, last = key.split(".")
    node = entry
    for part in parents:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, dict) else {}
        node = node[part]
    node[last] = value


def plain(value: Any) -> Any:
    """A YAML-safe copy: schedules back to ``lin_X``, tuples to lists, numpy scalars to Python."""
    if isinstance(value, LinearSchedule):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
