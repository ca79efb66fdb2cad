"""The envs' mid-episode state, restored by replay instead of by unpickling.

:class:`EpisodeRecorder`, the outermost wrapper of every training and evaluation env of a run,
keeps what is needed to rebuild the episode in progress: the seed and options of its reset, or
the state of the env's random generator just before it, and the actions since. On resume a fresh
env is reset the same way and stepped through the same actions. An env that is deterministic
given its random generator (Gymnasium's classic control, Box2D, MuJoCo, MiniGrid) then stands
exactly where the crashed run left it, Monitor's and TimeLimit's counters included; one that is
not (an emulator with its own generator) is detected, as its last observation differs, and
named in a warning.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from nb2_agents.checkpoint.rng import generator_state, set_generator_state, set_spaces_state, spaces_state


def obs_digest(obs: Any) -> str:
    """A short fingerprint of an observation (array or dict of arrays)."""
    h = hashlib.sha1()
    parts = sorted(obs.items()) if isinstance(obs, dict) else [("", obs)]
    for key, value in parts:
        h.update(key.encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()[:16]


class EpisodeRecorder(gym.Wrapper):  # type: ignore[type-arg]
    """Records how the current episode began and the actions since (module docstring)."""

    def __init__(self, env: gym.Env) -> None:  # type: ignore[type-arg]
        super().__init__(env)
        self.reset_seed: int | None = None
        self.reset_options: dict[str, Any] | None = None
        self.reset_rng: dict[str, Any] | None = None
        self.actions: list[np.ndarray] = []
        self.last_obs: Any = None
        self.started = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        self.reset_seed, self.reset_options, self.actions, self.started = seed, options, [], True
        self.reset_rng = None if seed is not None else generator_state(self.env.unwrapped.np_random)
        obs, info = self.env.reset(seed=seed, options=options)
        self.last_obs = obs
        return obs, info

    def step(self, action: Any) -> Any:
        self.actions.append(np.array(action, copy=True))
        out = self.env.step(action)
        self.last_obs = out[0]
        return out

    def _fingerprint(self) -> str | None:
        """The last observation's digest; where a wrapper below normalises observations with
        statistics that move on (``raw_obs``), the env's own observation's, which a replay
        reaches whatever the statistics are by then."""
        if self.last_obs is None:
            return None
        try:
            raw = self.env.get_wrapper_attr("raw_obs")
        except AttributeError:
            raw = None
        return obs_digest(self.last_obs if raw is None else raw)

    def state(self) -> tuple[dict[str, Any], np.ndarray | None]:
        """What replays the episode: (JSON-able settings, the actions stacked or None)."""
        info = {"started": self.started, "seed": self.reset_seed, "options": self.reset_options,
                "rng": self.reset_rng, "steps": len(self.actions), "obs": self._fingerprint()}  # fmt: skip
        return info, (np.stack(self.actions) if self.actions else None)

    def replay(self, info: dict[str, Any], actions: np.ndarray | None) -> bool:
        """Rebuild the recorded episode; True when it ends on the recorded observation."""
        if not info["started"]:
            return True  # never reset: nothing to rebuild
        if info["rng"] is not None:
            set_generator_state(self.env.unwrapped, info["rng"])
        self.reset(seed=info["seed"], options=info["options"])
        for action in actions if actions is not None else []:
            self.step(action)
        return info["obs"] is None or self._fingerprint() == info["obs"]


def _memory_window(vec: VecEnv) -> Any:
    """The ``MemoryWindow`` among ``vec``'s wrappers, or None: its memory is not in the episode
    replay (it sits above the envs), so it is saved and put back as arrays."""
    from nb2_agents.memory import MemoryWindow

    found: Any = vec
    while found is not None and not isinstance(found, MemoryWindow):
        found = getattr(found, "venv", None)
    return found


def recorders(vec: VecEnv) -> list[EpisodeRecorder]:
    """The recorder of each env of ``vec`` (empty when its envs have none)."""
    envs = getattr(vec.unwrapped, "envs", [])
    return [env for env in envs if isinstance(env, EpisodeRecorder)]


def capture(vec: VecEnv, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Each env's episode and the seeds its next reset will use: settings (JSON) and actions
    (arrays keyed ``{name}/{i}/actions``)."""
    base = vec.unwrapped
    infos, arrays = [], {}
    for i, rec in enumerate(recorders(vec)):
        info, actions = rec.state()
        infos.append({**info, "action_space": spaces_state(rec.action_space)})
        if actions is not None:
            arrays[f"{name}/{i}/actions"] = actions
    if (window := _memory_window(vec)) is not None:
        arrays.update({f"{name}/memory/{key}": value for key, value in window.get_state().items()})
    pending = {"seeds": list(getattr(base, "_seeds", [])), "options": list(getattr(base, "_options", []))}
    return {"episodes": infos, "pending": pending}, arrays


def restore(vec: VecEnv, name: str, saved: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[int]:
    """Replay each env's episode; returns the envs that did not end where they had (not exact).

    The VecEnv's pending reset seeds and options are put back as they were: the algorithm seeds a
    fresh VecEnv, where the resumed run's had used those seeds at its first reset."""
    recs, infos = recorders(vec), saved["episodes"]
    if len(recs) != len(infos):
        raise ValueError(f"{name}: {len(infos)} envs recorded, {len(recs)} here")
    off = [i for i, (rec, info) in enumerate(zip(recs, infos, strict=True))
           if not rec.replay(info, arrays.get(f"{name}/{i}/actions"))]  # fmt: skip
    for rec, info in zip(recs, infos, strict=True):
        set_spaces_state(rec.action_space, info["action_space"])
    if (window := _memory_window(vec)) is not None:
        prefix = f"{name}/memory/"
        window.set_state(
            {key[len(prefix) :]: value for key, value in arrays.items() if key.startswith(prefix)}
        )
    base = vec.unwrapped
    if hasattr(base, "_seeds"):
        base._seeds = list(saved["pending"]["seeds"])
        base._options = list(saved["pending"]["options"])
    if off:
        warnings.warn(
            f"{name}: env(s) {off} did not replay to the state they were saved in (their dynamics "
            "depend on more than their seed and actions): the run resumes from the replayed state, "
            "so it is not an exact continuation",
            stacklevel=2,
        )
    return off
