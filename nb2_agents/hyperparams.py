"""Hyperparameters from ``policies/<algo>.yaml``, keyed by Gymnasium id (RL Zoo's format).

An entry is merged over the file's ``default`` entry. Values written ``lin_X`` become a
schedule decaying linearly from X to 0 over training, as in RL Zoo.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.base_class import BaseAlgorithm

DATA_DIR = Path(__file__).resolve().parent / "data"
"""``envs/`` and ``policies/`` as shipped with the package (links to the top-level folders)."""

# keys that configure the run rather than the algorithm's constructor
RUN_KEYS = ("n_envs", "n_timesteps", "policy")


class LinearSchedule:
    """``progress_remaining * initial``: SB3 calls it with 1 at the start and 0 at the end."""

    def __init__(self, initial: float) -> None:
        self.initial = float(initial)

    def __call__(self, progress_remaining: float) -> float:
        return progress_remaining * self.initial

    def __repr__(self) -> str:
        return f"lin_{self.initial:g}"


@dataclass
class Hyperparams:
    """One resolved entry: run settings plus the algorithm's constructor kwargs."""

    n_envs: int = 1
    n_timesteps: int = 1_000_000
    policy: str = "NB2Policy"
    algo_kwargs: dict[str, Any] = field(default_factory=dict)


def _parse_value(value: Any, where: str) -> Any:
    if isinstance(value, str) and value.startswith("lin_"):
        try:
            return LinearSchedule(float(value[4:]))
        except ValueError:
            raise ValueError(
                f"{where}: {value!r} is not a schedule; write lin_<number>, e.g. lin_1e-3"
            ) from None
    return value


def load_hyperparams(algo_class: type[BaseAlgorithm], env_id: str, path: str | Path) -> Hyperparams:
    """Read the entry for ``env_id`` (merged over ``default``) from ``path``.

    Raises ``ValueError`` naming the file and key for an unknown key or a bad value.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read hyperparameters from {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of env id -> hyperparameters")
    if env_id not in data and "default" not in data:
        raise ValueError(f"{path}: no entry for {env_id!r} and no 'default' entry; entries: {sorted(data)}")
    entry = {**(data.get("default") or {}), **(data.get(env_id) or {})}
    valid = set(inspect.signature(algo_class.__init__).parameters) - {"self", "env", "policy"}
    hp = Hyperparams()
    for key, value in entry.items():
        where = f"{path} [{env_id if env_id in data else 'default'}].{key}"
        if key in RUN_KEYS:
            setattr(hp, key, int(float(value)) if key != "policy" else str(value))
        elif key in valid:
            hp.algo_kwargs[key] = _parse_value(value, where)
        else:
            raise ValueError(
                f"{where}: unknown key for {algo_class.__name__}; valid keys: {sorted(valid | set(RUN_KEYS))}"
            )
    return hp
