"""SB3 callbacks for ``nb2 train``: progress bar, ``nb2/`` TensorBoard keys, atomic checkpoints.

``nb2/`` keys (written with SB3's logger, so they land next to ``rollout/``, ``train/`` and
``eval/``):

* ``nb2/attention_entropy/<level>``, ``nb2/kept_fraction``, ``nb2/head_gate_mean``: from
  :meth:`NB2.diagnostics` on the policy's first NB2 network (the shared encoder for PPO / A2C,
  the Q-network for DQN, the actor for SAC / TD3), run without gradients on up to 64 of the
  most recent observations, at most once every ``every`` steps (at a rollout's end).
* ``nb2/dormant_frac`` and ``nb2/dormant_frac/<block>``: the share of that network's MLP units
  that are dormant on those observations (ReDo's τ-dormant, ``nn/dormant.py``), in all and per
  block. A curriculum writes them as ``retention/dormant_frac...``, beside the other retention
  keys, to follow plasticity across its tasks.
* ``nb2/grad_norm``: total L2 norm of the gradients of the parameters that the policy's
  optimizer updates (the actor's for SAC / TD3), *before* SB3 clips them to
  ``max_grad_norm``, averaged over the updates since the last dump. SB3 does not expose it:
  each parameter gets a post-accumulate-grad hook that adds its squared norm, and an
  optimizer step pre-hook closes the sum at every step. No SB3 code is copied or replaced.
* ``nb2/fps``: environment steps per second since training started.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.logger import HParam
from stable_baselines3.common.preprocessing import preprocess_obs

from nb2_agents.progress import Mode, Progress
from nb2_agents.runs import save_model
from nb2_agents.sb3.algos import optimizers


class ProgressCallback(BaseCallback):
    """Steps, speed and the latest evaluation return (:mod:`nb2_agents.progress`): a bar on a
    terminal, a line every 30 seconds elsewhere, or nothing (``mode``)."""

    def __init__(
        self, eval_callback: EvalCallback | None = None, mode: Mode = "bar", label: str = "train"
    ) -> None:
        super().__init__()
        self.eval_callback = eval_callback
        self.mode: Mode = mode
        self.label = label
        self.progress: Progress | None = None

    def _on_training_start(self) -> None:
        total = self.locals["total_timesteps"]
        self.progress = Progress(total, self.label, self.mode, initial=self.model.num_timesteps)

    def _on_step(self) -> bool:
        if self.progress is None:
            return True
        self.progress.update(self.model.num_timesteps)
        if self.n_calls % 16 == 0:
            self.progress.set_postfix(self.postfix())
        return True

    def postfix(self) -> str:
        """The latest evaluation's mean return, once there is one."""
        last = self.eval_callback.last_mean_reward if self.eval_callback is not None else math.nan
        return f"eval {last:.3g}" if math.isfinite(last) else ""

    def close(self) -> None:
        if self.progress is not None:
            self.progress.set_postfix(self.postfix())
            self.progress.close()
            self.progress = None

    def _on_training_end(self) -> None:
        self.close()


class EntCoefScheduleCallback(BaseCallback):
    """Anneal an on-policy algorithm's ``ent_coef`` (``ent_coef: lin_0.01`` in a hyperparameter entry).

    SB3's PPO / A2C take a float ``ent_coef`` only; this sets it from ``schedule(progress_remaining)``
    before each update, the way SB3 updates the learning rate and clip range, and logs
    ``train/ent_coef``.
    """

    def __init__(self, schedule: Any) -> None:
        super().__init__()
        self.schedule = schedule

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        # SB3 updates _current_progress_remaining after the rollout, before train(); compute it
        # the same way here so the value used by this update matches the other schedules.
        progress = max(0.0, 1.0 - self.model.num_timesteps / self.model._total_timesteps)
        self.model.ent_coef = float(self.schedule(progress))  # type: ignore[attr-defined]
        self.logger.record("train/ent_coef", self.model.ent_coef)  # type: ignore[attr-defined]


class CheckpointCallback(BaseCallback):
    """Every ``save_freq`` steps: ``checkpoints/ckpt_<steps>_steps.zip`` (the model, as SB3's
    CheckpointCallback writes it) and, once :attr:`parts` is set, a resumable checkpoint
    ``checkpoints/state/<steps>/`` (:mod:`nb2_agents.checkpoint`; the newest ``keep`` are kept).

    Both are written at the first rollout start after each multiple of ``save_freq`` (or at the
    end of training): SB3 is then between a model update and the next rollout, so the state is
    complete without a rollout half collected. Every file is written atomically."""

    def __init__(
        self, folder: Path, save_freq: int, meta: dict[str, Any], keep: int = 2, zips: bool = True,
        at_end: bool = True,
    ) -> None:  # fmt: skip
        """``zips``: also the model's ``.zip``; ``at_end``: also when ``learn`` ends (a curriculum's
        task windows end with work of their own, so it saves at the next window's start instead)."""
        super().__init__()
        self.folder, self.save_freq, self.meta, self.keep = folder, save_freq, meta, keep
        self.zips, self.at_end = zips, at_end
        self._next = save_freq
        self.parts: Any = None
        """:class:`nb2_agents.checkpoint.RunParts` of the run, for resumable checkpoints."""
        self.write_state: Callable[[], object] | None = None
        """Writes the resumable checkpoint, in place of :attr:`parts`'s."""
        self.save_first = False
        """Save at the first rollout start of the next ``learn`` as well (a curriculum's task start)."""

    def _on_training_start(self) -> None:
        if self.save_freq > 0:
            self._next = (self.model.num_timesteps // self.save_freq + 1) * self.save_freq

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        self._save_if_due()

    def _on_training_end(self) -> None:
        if self.at_end:
            self._save_if_due()  # after the last update: as complete a state as a rollout start

    def _save_if_due(self) -> None:
        due = self.save_freq > 0 and self.model.num_timesteps >= self._next
        if not (due or self.save_first):
            return
        self.save_first = False
        while self.save_freq > 0 and self._next <= self.model.num_timesteps:
            self._next += self.save_freq
        if self.zips:
            self.save()
        if self.write_state is not None:
            self.write_state()
        elif self.parts is not None:
            from nb2_agents.checkpoint import save_state

            save_state(self.parts, self.folder, self.keep)

    def save(self, prefix: str = "ckpt") -> Path:
        return save_model(
            self.model, self.folder / f"{prefix}_{self.model.num_timesteps}_steps.zip", self.meta
        )


class SaveBestCallback(BaseCallback):
    """EvalCallback's ``callback_on_new_best``: ``checkpoints/best_model.zip``, written atomically."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        super().__init__()
        self.path, self.meta = path, meta

    def _on_step(self) -> bool:
        save_model(self.model, self.path, self.meta)
        return True


class NB2LoggerCallback(BaseCallback):
    """Writes the ``nb2/`` keys (see the module docstring) and the run's hyperparameters."""

    def __init__(
        self, hparams: dict[str, Any], every: int = 1000, batch: int = 64, dormant_prefix: str = "nb2/"
    ) -> None:
        super().__init__()
        self.hparams, self.every, self.batch = hparams, every, batch
        self.dormant_prefix = dormant_prefix
        self._recent: deque[Any] = deque(maxlen=batch)
        self._last_log = -every
        self._start, self._start_steps = 0.0, 0
        self._sq: list[torch.Tensor] = []
        self._handles: list[Any] = []

    def state_dict(self) -> dict[str, Any]:
        """What a resumable checkpoint keeps: the step of the last diagnostics (the recent
        observations they read are not kept: a resumed run's first ones read fewer)."""
        return {"last_log": self._last_log}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._last_log = int(state["last_log"])

    # --- training start / end: hyperparameters and gradient hooks
    def _on_training_start(self) -> None:
        self._start, self._start_steps = time.perf_counter(), self.model.num_timesteps
        metrics = {"eval/mean_reward": 0.0, "rollout/ep_rew_mean": 0.0}
        self.logger.record("hparams", HParam(self.hparams, metrics), exclude=("stdout", "log", "json", "csv"))
        parts = optimizers(self.model.policy)
        optimizer = parts.get("policy") or parts["actor"]  # SAC / TD3: the actor's
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.requires_grad:
                    self._handles.append(param.register_post_accumulate_grad_hook(self._accumulate))
        self._handles.append(optimizer.register_step_pre_hook(self._close_norm))

    def _accumulate(self, param: torch.Tensor) -> None:
        if param.grad is not None:
            self._sq.append(param.grad.detach().float().pow(2).sum())

    def _close_norm(self, *_: Any) -> None:
        if self._sq:
            self.logger.record_mean("nb2/grad_norm", float(torch.stack(self._sq).sum().sqrt()))
            self._sq.clear()

    def _on_training_end(self) -> None:
        self.remove_hooks()

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # --- steps: keep recent observations; rollout end: diagnostics and fps
    def _on_step(self) -> bool:
        obs = self.locals.get("new_obs")
        if obs is not None:  # a copy: SB3's replay buffers reshape Dict entries in place later
            self._recent.append(
                {k: np.array(v) for k, v in obs.items()} if isinstance(obs, dict) else np.array(obs)
            )
        return True

    def _on_rollout_end(self) -> None:
        if self.model.num_timesteps - self._last_log < self.every or not self._recent:
            return
        self._last_log = self.model.num_timesteps
        seconds = max(time.perf_counter() - self._start, 1e-9)
        self.logger.record("nb2/fps", (self.model.num_timesteps - self._start_steps) / seconds)
        for key, value in self.diagnostics().items():
            prefix = self.dormant_prefix if key.startswith("dormant_frac") else "nb2/"
            self.logger.record(f"{prefix}{key}", value)

    def diagnostics(self) -> dict[str, float]:
        policy = self.model.policy
        find = getattr(policy, "nb2_networks", None)
        networks = find() if callable(find) else []
        if not networks:
            return {}
        recent = list(self._recent)
        if isinstance(recent[0], dict):
            batch: Any = {k: np.concatenate([o[k] for o in recent])[-self.batch :] for k in recent[0]}
        else:
            batch = np.concatenate(recent)[-self.batch :]
        obs, _ = policy.obs_to_tensor(batch)
        obs = preprocess_obs(obs, policy.observation_space, normalize_images=policy.normalize_images)
        return networks[0].diagnostics(obs)


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, bool | str | float | None]:
    """A config as TensorBoard hparams: nested keys joined with ``/``, lists as text."""
    out: dict[str, bool | str | float | None] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}/"))
        elif value is None or isinstance(value, (bool, str, float)):
            out[name] = value
        elif isinstance(value, int):
            out[name] = float(value)
        else:
            out[name] = str(value)
    return out
