"""The resolved configuration of one training run, and how it is resolved from user input.

Precedence, lowest first: built-in defaults, the hyperparameter file's ``default`` entry, its
entry for the env, ``--config`` (a run's config.yaml, which replaces the file's entries),
then explicit options (``--preset``, ``--n-envs``, ``--steps``, ...) and ``--set`` items.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import nb2_agents.nn.tokenizer as tokenizer
from nb2_agents.envs_util import EnvSpec, check_algo, check_env_id, probe
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import (
    ALGOS,
    DATA_DIR,
    assignments,
    load_entry,
    parse_entry,
    parse_steps,
    plain,
    read_yaml,
    set_dotted,
)
from nb2_agents.nn.config import PRESETS, NB2Config, get_config
from nb2_agents.normalize import check_space
from nb2_agents.sb3.registry import SHORT_NAME

VERSION = "0.1.0"


@dataclass
class TrainConfig:
    """Everything one run needs; ``to_dict`` is what config.yaml holds."""

    env: str
    algo: str
    seed: int
    steps: int
    hyperparams: dict[str, Any]
    """The RL Zoo-style entry as resolved: n_envs, policy, the algorithm's kwargs (``lin_X`` kept)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_freq: int = 10_000
    """Evaluate every this many steps (0: never during training)."""
    eval_episodes: int = 5
    """Episodes per evaluation during training (RL Zoo's 5)."""
    final_episodes: int = 20
    """Episodes of the final evaluation (eval.json), as ``nb2 evaluate``'s default."""
    save_freq: int = 20_000
    """Checkpoint every this many steps (0: never)."""
    keep_checkpoints: int = 2
    """Resumable checkpoints kept (the newest; model zips are all kept)."""
    deterministic_eval: bool = True
    """Greedy actions in evaluations; False (sampled) for MiniGrid, as RL Zoo, where a greedy
    policy can loop forever in a partially observed grid."""
    device: str = "auto"
    threads: int = 1
    """torch threads; small networks on a shared CPU run fastest on one (0: torch's default)."""
    architecture: dict[str, Any] = field(default_factory=dict)
    """The NB2Config that the preset and nb2_kwargs resolve to (checked when re-run); empty for
    one of SB3's own policies (``policy: MlpPolicy``)."""
    source: str = ""
    """Where the hyperparameters came from (file and entry, or config file) plus --set items."""

    @property
    def preset(self) -> str:
        """NB2's preset; for one of SB3's policies, its name without "Policy" (``MlpPolicy``: ``mlp``),
        so that the run folder says which network was trained."""
        policy = str(self.hyperparams.get("policy", SHORT_NAME))
        if policy != SHORT_NAME:
            return policy.removesuffix("Policy").lower()
        return str((self.hyperparams.get("policy_kwargs") or {}).get("preset", "nano"))

    @property
    def n_envs(self) -> int:
        return int(self.hyperparams.get("n_envs", 1))

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {**data, "nb2_agents": VERSION}


CONFIG_KEYS = sorted({f.name for f in dataclasses.fields(TrainConfig)} | {"nb2_agents"})


def _positive(value: Any, what: str, allow_zero: bool = False) -> int:
    if allow_zero and str(value).strip() == "0":
        return 0
    return parse_steps(value, what)


def _whole(value: Any, name: str) -> int:
    """A seed or thread count: a whole number >= 0 (threads 0: torch's default)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{name}: expected a whole number >= 0, got {value!r}")
    return value


def _check_device(device: str) -> str:
    try:
        dev = torch.device(device) if device != "auto" else None
    except RuntimeError:
        raise UsageError(f"--device {device!r} is not a device; valid: auto, cpu, cuda, cuda:N") from None
    if dev is not None and dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine; valid: auto, cpu")
    return device


def _load_config_file(path: Path) -> dict[str, Any]:
    data = read_yaml(path)
    if not isinstance(data, dict) or "env" not in data or "hyperparams" not in data:
        raise UsageError(f"{path}: not a run configuration (expected a config.yaml written by nb2 train)")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {unknown}; valid keys: {CONFIG_KEYS}")
    return data


def _architecture(policy_kwargs: dict[str, Any]) -> NB2Config:
    overrides = dict(policy_kwargs.get("nb2_kwargs") or {})
    if policy_kwargs.get("sampling") is not None:
        overrides["sampling"] = policy_kwargs["sampling"]
    try:
        return get_config(policy_kwargs.get("preset", "nano"), **overrides)
    except (ValueError, TypeError) as err:
        raise UsageError(f"policy_kwargs: {err}") from err


def _parse_env_kwargs(env_kwargs: Any, base: dict[str, Any]) -> dict[str, Any]:
    if isinstance(env_kwargs, str):
        try:
            env_kwargs = json.loads(env_kwargs)
        except json.JSONDecodeError as err:
            raise UsageError(
                f"--env-kwargs is not JSON ({err}); expected an object, e.g. '{{\"size\": 8}}'"
            ) from None
    if env_kwargs is None:
        env_kwargs = base.get("env_kwargs") or {}
    if not isinstance(env_kwargs, dict):
        raise UsageError(f"--env-kwargs must be a JSON object such as '{{\"size\": 8}}', got {env_kwargs!r}")
    return dict(env_kwargs)


def _entry(
    env: str, algo: str, hyperparams: str | Path | None, config: str | Path | None, base: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str], str]:
    """The RL Zoo-style entry: the config's if it is a re-run, else the file's; with labels, source."""
    if (
        config is not None
        and env == base.get("env")
        and algo == base.get("algo", "ppo")
        and hyperparams is None
    ):
        entry = dict(base["hyperparams"])
        return entry, dict.fromkeys(entry, f"{config} [hyperparams]"), str(config)
    file = Path(hyperparams) if hyperparams is not None else DATA_DIR / "policies" / f"{algo}.yaml"
    if not file.is_file():
        raise UsageError(f"hyperparameter file {file} does not exist; pass --hyperparams FILE")
    entry, labels = load_entry(file, env)
    return entry, labels, f"{file} [{env if env in (read_yaml(file) or {}) else 'default'}]"


def _check_observations(env: str, obs_space: Any, arch: NB2Config) -> None:
    try:
        tokenizer.Tokenizer(obs_space, arch)
    except (TypeError, ValueError) as err:
        raise UsageError(f"{env}: NB2 cannot read its observations: {err}") from None


def _nb2_architecture(
    env: str, policy_kwargs: dict[str, Any], obs_space: Any, touched: bool, base: dict[str, Any], config: Any
) -> NB2Config:
    """The NB2Config of an NB2 policy's ``policy_kwargs`` (completed in place), checked on the env."""
    policy_kwargs.setdefault("preset", "nano")
    arch = _architecture(policy_kwargs)
    recorded = base.get("architecture") if config is not None and not touched else None
    if recorded and recorded != dataclasses.asdict(arch):
        try:  # the run's own architecture wins over a preset that changed since
            arch = NB2Config(**recorded)
        except TypeError as err:
            raise UsageError(f"{config}: architecture: {err}") from None
        policy_kwargs["nb2_kwargs"] = dict(recorded)
    _check_observations(env, obs_space, arch)
    return arch


@dataclass(frozen=True)
class TrainOptions:
    """What a user gives ``nb2 train`` (its options, by the same names); ``None`` means the
    ``--config`` file's value, else the hyperparameter file's, else the default. Checked once,
    by :func:`resolve_config`, which turns them into a :class:`TrainConfig`."""

    env: str | None = None
    algo: str | None = None
    preset: str | None = None
    steps: int | str | None = None
    seed: int | None = None
    n_envs: int | None = None
    hyperparams: str | Path | None = None
    """An RL Zoo-style hyperparameter file (default: the built-in ``policies/<algo>.yaml``)."""
    overrides: Sequence[str] | Mapping[str, Any] | None = None
    """``--set`` items: ``"n_steps=64"`` strings or a ``{"n_steps": 64}`` mapping."""
    env_kwargs: Any = None
    eval_freq: int | str | None = None
    eval_episodes: int | None = None
    final_episodes: int | None = None
    save_freq: int | str | None = None
    device: str | None = None
    threads: int | None = None
    config: str | Path | None = None
    """A run's ``config.yaml`` to start from (``--config``)."""
    keep_checkpoints: int | None = None


def options_of(cls: type[Any], options: Any, fields: Mapping[str, Any]) -> Any:
    """The Python API's forms of an options object: ``options`` (an instance of the dataclass
    ``cls``; None: its defaults; a string or path: the value of its first field, as the env id
    of ``train("CartPole-v1")``) with the keyword ``fields`` over it."""
    if options is None or isinstance(options, (str, Path)):
        first = dataclasses.fields(cls)[0].name
        options = cls() if options is None else cls(**{first: options})
    return dataclasses.replace(options, **fields) if fields else options


def resolve_config(options: TrainOptions | str | None = None, /, **fields: Any) -> TrainConfig:
    """Check every input and return the run's configuration; writes nothing.

    ``options``: a :class:`TrainOptions` or an env id; ``fields``: its fields by keyword, over it."""
    o: TrainOptions = options_of(TrainOptions, options, fields)
    env, algo, preset, config, overrides = o.env, o.algo, o.preset, o.config, o.overrides
    base: dict[str, Any] = _load_config_file(Path(config)) if config is not None else {}
    env = env or base.get("env")
    if not env:
        raise UsageError(
            "no env given; pass --env ENV_ID (e.g. CartPole-v1) or --config runs/<run>/config.yaml"
        )
    algo = (algo or base.get("algo") or "ppo").lower()
    if algo not in ALGOS:
        raise UsageError(f"unknown algorithm {algo!r}; valid: {', '.join(ALGOS)}")
    if preset is not None and preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    env_kwargs = _parse_env_kwargs(o.env_kwargs, base)
    check_env_id(env)

    # hyperparameters: the config's entry, else the file's, then the options over it
    entry, labels, source = _entry(env, algo, o.hyperparams, config, base)
    if o.n_envs is not None:
        entry["n_envs"], labels["n_envs"] = o.n_envs, "--n-envs "
    if preset is not None:
        set_dotted(entry, "policy_kwargs.preset", preset)
        labels["policy_kwargs"] = labels.get("policy_kwargs", "--preset")
    for key, value in assignments(overrides).items():
        set_dotted(entry, key, value)
        labels[key.split(".")[0]] = "--set "
        source += f" --set {key}={value}"
    hp = parse_entry(ALGOS[algo], entry, labels)
    entry.pop("n_timesteps", None)
    entry.setdefault("n_envs", hp.n_envs)
    entry.setdefault("policy", hp.policy)

    # the env: does it exist, can this algorithm act in it, can NB2 read it
    spec = EnvSpec(env, dict(env_kwargs), algo)
    obs_space, action_space, minigrid = probe(spec)
    check_algo(algo, env, action_space)
    if hp.normalize is not None:
        check_space(obs_space, f"{labels.get('normalize', '').strip()}: normalize for {env}")
    policy_kwargs = dict(entry.get("policy_kwargs") or {})
    architecture: dict[str, Any] = {}  # none for SB3's own policies (MlpPolicy ...)
    if hp.policy == SHORT_NAME:
        touched = preset is not None or any(str(item).startswith("policy_kwargs") for item in overrides or [])
        arch = _nb2_architecture(env, policy_kwargs, obs_space, touched, base, config)
        architecture = dataclasses.asdict(arch)
    if minigrid:
        # cells hold small ids, not pixels; RGB views (minigrid_obs: rgb) are pixels
        policy_kwargs.setdefault("normalize_images", spec.minigrid_view()[0] == "rgb")
    entry["policy_kwargs"] = policy_kwargs

    steps = o.steps if o.steps is not None else base.get("steps") or None
    total = parse_steps(steps, "--steps") if steps is not None else int(hp.n_timesteps)
    ef = o.eval_freq if o.eval_freq is not None else base.get("eval_freq")
    sf = o.save_freq if o.save_freq is not None else base.get("save_freq")
    keep = o.keep_checkpoints or base.get("keep_checkpoints", 2)
    return TrainConfig(
        env=env,
        algo=algo,
        seed=_whole(o.seed if o.seed is not None else base.get("seed", 0), "seed"),
        steps=total,
        hyperparams=plain(entry),
        env_kwargs=dict(env_kwargs),
        eval_freq=_positive(ef, "--eval-freq", True) if ef is not None else max(math.ceil(total / 10), 1),
        eval_episodes=_positive(o.eval_episodes or base.get("eval_episodes", 5), "--eval-episodes"),
        final_episodes=_positive(o.final_episodes or base.get("final_episodes", 20), "--final-episodes"),
        save_freq=_positive(sf, "--save-freq", True) if sf is not None else max(math.ceil(total / 5), 1),
        keep_checkpoints=_positive(keep, "--keep-checkpoints"),
        deterministic_eval=bool(base.get("deterministic_eval", not minigrid)),
        device=_check_device(o.device or base.get("device", "auto")),
        threads=_whole(o.threads if o.threads is not None else base.get("threads", 1), "threads"),
        architecture=architecture,
        source=source,
    )
