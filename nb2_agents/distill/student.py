"""The student and its training: SB3's PPO with an NB2 policy, collecting its own rollouts.

Collection is on-policy, as in DAgger (Ross et al. 2011) and Czarnecki et al. (2019): the
student acts, with PPO's ``collect_rollouts`` unchanged, and at each rollout's end
(:class:`DistillCallback`) the teachers label every state it visited. Then, by mode:

* ``pure``: :class:`DistillPPO`, whose ``train()`` is a distillation step instead of PPO's
  update: ``n_epochs`` passes over the rollout's states in minibatches of ``batch_size``,
  minimising the distillation loss (:mod:`.losses`) alone. The environment's reward is unused.
* ``kickstart`` (Schmitt et al. 2018): plain PPO, whose every optimizer step also takes
  ``λ ×`` the distillation loss on a random minibatch of the rollout's states, through the
  optimizer-step pre-hook seam that retention uses
  (:func:`~nb2_agents.sb3.extra_loss.install_extra_loss`; its gradient is clipped to
  ``max_grad_norm`` on its own). λ falls linearly from ``kl_coef`` to 0 over training, so the
  RL loss alone carries the student past the teacher at the end.

TensorBoard: ``distill/kl`` (mean action KL of the update), ``distill/lambda`` and
``distill/teacher_agreement`` (share of the rollout's states where the student's deterministic
action, before the update, was the teacher's).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from nb2_agents.distill.labels import Labeler, rollout_observations
from nb2_agents.distill.losses import Targets, agreement, distillation_loss
from nb2_agents.distill.policies import Obs, Outputs, actor_critic_forward, distribution_outputs
from nb2_agents.hyperparams import Hyperparams, LinearSchedule
from nb2_agents.retention.base import Strategy
from nb2_agents.sb3.extra_loss import install_extra_loss
from nb2_agents.training import make_algorithm

MODES = ("pure", "kickstart")


def student_outputs(policy: Any, obs: Obs) -> Outputs:
    """The student's action distribution and value on a batch (with gradients)."""
    return distribution_outputs(*actor_critic_forward(policy, obs))


def _rows(obs: Obs, index: torch.Tensor) -> Obs:
    return {k: v[index] for k, v in obs.items()} if isinstance(obs, dict) else obs[index]


class Distiller:
    """The current rollout's states with the teachers' labels, and the loss on minibatches of them."""

    def __init__(self, labeler: Labeler, value_coef: float = 0.5, batch_size: int = 256) -> None:
        self.labeler, self.value_coef, self.batch_size = labeler, value_coef, batch_size
        self.obs: Obs = None
        self.targets: Targets | None = None
        self._kls: list[float] = []

    def label(self, model: BaseAlgorithm) -> float:
        """Label the rollout in ``model``'s buffer; returns the student's agreement with the teachers."""
        self.obs = rollout_observations(model.rollout_buffer, model.device)  # type: ignore[attr-defined]
        self.targets = self.labeler(self.obs)
        with torch.no_grad():
            return float(agreement(student_outputs(model.policy, self.obs), self.targets).float().mean())

    @property
    def size(self) -> int:
        return 0 if self.targets is None else len(self.targets)

    def sample(self) -> torch.Tensor:
        """A random minibatch of row indices of the current rollout."""
        assert self.targets is not None
        device = next(iter(self.obs.values())).device if isinstance(self.obs, dict) else self.obs.device
        return torch.randint(self.size, (min(self.batch_size, self.size),), device=device)

    def loss(self, policy: Any, index: torch.Tensor) -> torch.Tensor:
        """The distillation loss of ``policy`` on rows ``index``; the KL is kept for logging."""
        assert self.targets is not None, "label a rollout first"
        loss, kl = distillation_loss(
            student_outputs(policy, _rows(self.obs, index)), self.targets.rows(index), self.value_coef
        )
        self._kls.append(float(kl))
        return loss

    def log(self, logger: Logger) -> None:
        """Record the mean KL of the steps since the last call as ``distill/kl``."""
        if self._kls:
            logger.record("distill/kl", float(np.mean(self._kls)))
            self._kls.clear()


class DistillPPO(PPO):
    """PPO whose update is pure distillation: PPO's rollout collection (the student acts), then
    ``n_epochs`` passes of minibatch steps on the distillation loss over the rollout's states.

    Saved models are plain PPO models (``PPO.load`` reads them); the distiller is not saved.
    """

    distiller: Distiller | None = None

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "distiller"]

    def train(self) -> None:
        distiller = self.distiller
        assert distiller is not None and distiller.targets is not None, "DistillCallback labels each rollout"
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        for _ in range(self.n_epochs):
            for index in torch.randperm(distiller.size, device=self.device).split(self.batch_size):
                loss = distiller.loss(self.policy, index)
                self.policy.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
        self._n_updates += self.n_epochs
        self.policy.set_training_mode(False)
        distiller.log(self.logger)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")


class Kickstart(Strategy):
    """The distillation loss, weighted by the callback's λ, added to each PPO optimizer step."""

    name = "kickstart"

    def __init__(self, distiller: Distiller) -> None:
        self.distiller = distiller
        self.weight = 1.0

    def extra_loss(self, model: BaseAlgorithm, part: str) -> torch.Tensor | None:
        if self.weight <= 0 or self.distiller.targets is None:
            return None
        return self.weight * self.distiller.loss(model.policy, self.distiller.sample())


class DistillCallback(BaseCallback):
    """At each rollout's end: the teachers label it, λ is set, the ``distill/`` keys are logged.

    :param kl_coef: λ at the start; ``anneal`` lowers it linearly to 0 at ``total_steps``
    """

    def __init__(
        self,
        distiller: Distiller,
        kl_coef: float,
        total_steps: int,
        anneal: bool,
        kickstart: Kickstart | None,
    ) -> None:
        super().__init__()
        self.distiller, self.kl_coef, self.total_steps, self.anneal = distiller, kl_coef, total_steps, anneal
        self.kickstart = kickstart
        self._start: int | None = None

    def _on_training_start(self) -> None:
        if self._start is None:  # a resumed run keeps its first start (load_state_dict)
            self._start = self.model.num_timesteps

    def state_dict(self) -> dict[str, Any]:
        """What a resumable checkpoint keeps: where λ's annealing started."""
        return {"start": self._start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._start = state["start"]

    def _on_step(self) -> bool:
        return True

    def weight(self) -> float:
        if not self.anneal:
            return self.kl_coef
        done = (self.model.num_timesteps - (self._start or 0)) / max(self.total_steps, 1)
        return self.kl_coef * max(0.0, 1.0 - done)

    def _on_rollout_end(self) -> None:
        self.distiller.log(self.logger)  # the KL of the previous update (kickstart's hook steps)
        self.logger.record("distill/teacher_agreement", self.distiller.label(self.model))
        lam = self.weight()
        if self.kickstart is not None:
            self.kickstart.weight = lam
        self.logger.record("distill/lambda", lam)


def build_student(
    mode: str,
    hp: Hyperparams,
    env: VecEnv,
    labeler: Labeler,
    total_steps: int,
    seed: int,
    device: str,
    kl_coef: float = 1.0,
    value_coef: float = 0.5,
) -> tuple[PPO, list[BaseCallback], list[Any]]:
    """The student for ``mode``: (model, callbacks for ``learn``, hook handles to remove after)."""
    kwargs = dict(hp.algo_kwargs)
    batch_size = int(kwargs.get("batch_size", 64))
    distiller = Distiller(labeler, value_coef, batch_size)
    if mode == "kickstart":
        model, callbacks = make_algorithm("ppo", hp, env, seed, device)
        assert isinstance(model, PPO)
        kickstart = Kickstart(distiller)
        hooks = install_extra_loss(model, kickstart.extra_loss)
        return model, [DistillCallback(distiller, kl_coef, total_steps, True, kickstart), *callbacks], hooks
    if isinstance(kwargs.get("ent_coef"), LinearSchedule):
        kwargs["ent_coef"] = 0.0  # no entropy bonus in a distillation step
    student = DistillPPO(hp.policy, env, seed=seed, device=device, verbose=0, **kwargs)
    student.distiller = distiller
    return student, [DistillCallback(distiller, kl_coef, total_steps, False, None)], []
