"""``nb2 info``: what a model file holds."""

from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nb2_agents.evaluation import load_model
from nb2_agents.hyperparams import ALGOS
from nb2_agents.normalize import read_stats


@dataclass
class ModelInfo:
    """A model file's algorithm, env, preset, size and training steps."""

    model: str
    algo: str
    algorithm: str
    env: str | None
    preset: str | None
    parameters: int
    """Trainable parameters of the policy (target networks, which copy them, not counted)."""
    steps: int
    seed: int | None
    policy: str
    observation_space: str
    action_space: str
    sb3_version: str | None
    normalized: list[str]
    """Envs (or curriculum tasks) whose observations the policy sees normalised (``normalize``)."""
    curriculum: str | None = None
    """The curriculum a curriculum's model was trained on, and its tasks."""
    tasks: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        rows = [
            ("model", self.model),
            ("algorithm", f"{self.algorithm} ({self.algo})"),
            *(
                [("curriculum", f"{self.curriculum}: {', '.join(self.tasks or [])} (nb2 evaluate runs each)")]
                if self.curriculum
                else [("env", self.env or "unknown (not saved by nb2 train)")]
            ),
            ("preset", self.preset or "-"),
            ("parameters", f"{self.parameters:,}"),
            ("steps trained", f"{self.steps:,}"),
            ("seed", "-" if self.seed is None else str(self.seed)),
            ("policy", self.policy),
            ("observations", self.observation_space),
            ("actions", self.action_space),
            ("normalised", ", ".join(self.normalized) or "no"),
            ("saved with SB3", self.sb3_version or "?"),
        ]
        return "\n".join(f"{k:<14} {v}" for k, v in rows)


def info(path: str | Path, trust_pickle: bool = False) -> ModelInfo:
    """Describe the model in a run folder or model zip (``trust_pickle``: as ``--trust-pickle``)."""
    loaded = load_model(path, device="cpu", trust_pickle=trust_pickle)
    model, meta = loaded.model, loaded.meta
    policy_kwargs = getattr(model, "policy_kwargs", None) or {}
    preset = meta.get("preset") or policy_kwargs.get("preset")
    if preset is not None and not isinstance(preset, str):
        preset = "custom"
    # target networks copy the trained ones: count each trainable parameter once
    n_params = sum(
        p.numel() for name, p in model.policy.named_parameters() if "_target" not in name.split(".")[0]
    )
    return ModelInfo(
        model=str(loaded.path),
        algo=loaded.algo,
        algorithm=ALGOS[loaded.algo].__name__,
        env=meta.get("env"),
        curriculum=meta.get("curriculum"),
        tasks=[str(t) for t in meta["tasks"]] if isinstance(meta.get("tasks"), list) else None,
        preset=preset,
        parameters=int(n_params),
        steps=int(model.num_timesteps),
        seed=meta.get("seed", model.seed),
        policy=type(model.policy).__name__,
        observation_space=str(model.observation_space),
        action_space=str(model.action_space),
        sb3_version=_sb3_version(loaded.path),
        normalized=sorted(read_stats(loaded.path)),
    )


def _sb3_version(path: Path) -> str | None:
    with zipfile.ZipFile(path) as archive:
        if "_stable_baselines3_version" in archive.namelist():
            return archive.read("_stable_baselines3_version").decode().strip()
    return None
