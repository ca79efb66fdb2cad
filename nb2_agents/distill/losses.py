"""The distillation loss: pure functions of tensors, and the teachers' targets they compare against.

Per state, the student is pulled towards the teacher by

* ``KL(π_T ‖ π_S) = Σ_a p_T(a) (log p_T(a) − log p_S(a))`` for Discrete actions, where
  ``p_T = softmax(logits_T / τ)`` for a policy teacher and ``softmax(Q / τ)`` for a Q-value
  teacher (Policy Distillation, Rusu et al. 2016: only the teacher is sharpened or softened);
* the KL of diagonal Gaussians, summed over action dimensions, for a Gaussian teacher;
* the squared error of the student's mean to a deterministic teacher's action (TD3, SAC's
  squashed mean), per dimension divided by the square of half the action range;
* plus ``value_coef`` times the squared error of the student's value to the teacher's,
  divided by ``(1 + mean |V_T|)²`` so it does not grow with the returns.

The forward direction KL(π_T ‖ π_S) makes the student cover every action the teacher gives
probability to (mass-covering), the direction Rusu et al. and Czarnecki et al. (2019) use.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from nb2_agents.distill.policies import Outputs

AGREEMENT_TOLERANCE = 0.05
"""Continuous actions agree when every dimension is within this share of the action range."""


def tempered_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / τ)``: τ < 1 sharpens the teacher, τ > 1 softens it."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return F.softmax(logits / temperature, dim=-1)


def q_value_probs(q_values: torch.Tensor, temperature: float) -> torch.Tensor:
    """A Q-value teacher read as a policy: ``softmax(Q / τ)`` (Rusu et al. 2016)."""
    return tempered_probs(q_values, temperature)


def categorical_kl(teacher_probs: torch.Tensor, student_log_probs: torch.Tensor) -> torch.Tensor:
    """(B,) ``KL(p_T ‖ p_S)``; actions the teacher gives probability 0 add nothing."""
    return (torch.xlogy(teacher_probs, teacher_probs) - teacher_probs * student_log_probs).sum(dim=-1)


def gaussian_kl(
    teacher_mean: torch.Tensor,
    teacher_log_std: torch.Tensor,
    student_mean: torch.Tensor,
    student_log_std: torch.Tensor,
    dim_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) KL of diagonal Gaussians ``N(μ_T, σ_T²) ‖ N(μ_S, σ_S²)``, summed over the dimensions
    that ``dim_mask`` (B, d) keeps:
    ``log σ_S/σ_T + (σ_T² + (μ_T − μ_S)²) / (2 σ_S²) − 1/2``."""
    var_t, var_s = torch.exp(2 * teacher_log_std), torch.exp(2 * student_log_std)
    kl = student_log_std - teacher_log_std + (var_t + (teacher_mean - student_mean) ** 2) / (2 * var_s) - 0.5
    return (kl if dim_mask is None else kl * dim_mask).sum(dim=-1)


def action_mse(
    teacher_action: torch.Tensor,
    student_mean: torch.Tensor,
    half_range: torch.Tensor,
    dim_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) ``Σ_d ((μ_S − a_T) / half_range)²`` over the kept dimensions: deterministic teachers."""
    err = ((student_mean - teacher_action) / half_range) ** 2
    return (err if dim_mask is None else err * dim_mask).sum(dim=-1)


def value_loss(student_value: torch.Tensor, teacher_value: torch.Tensor) -> torch.Tensor:
    """Squared error relative to the targets' scale: ``mean (V_S − V_T)² / (1 + mean |V_T|)²``."""
    return F.mse_loss(student_value, teacher_value) / (1.0 + teacher_value.abs().mean()) ** 2


@dataclass
class Targets:
    """The teachers' targets for a batch of B states, in the student's action space."""

    probs: torch.Tensor | None = None
    """(B, n) teacher action probabilities (Discrete)."""
    mean: torch.Tensor | None = None
    """(B, d) the teacher's mean or deterministic action (Box), in the student's units."""
    log_std: torch.Tensor | None = None
    """(B, d) the teacher's log std; rows of deterministic teachers are ignored (see ``stochastic``)."""
    stochastic: torch.Tensor | None = None
    """(B,) bool: Gaussian KL (True) or action MSE (False) for this row."""
    half_range: torch.Tensor | None = None
    """(B, d) half the action range per dimension (1 where unbounded): scales MSE and agreement."""
    dim_mask: torch.Tensor | None = None
    """(B, d) 1 for the action dimensions a row's task uses, 0 for padding."""
    value: torch.Tensor | None = None
    """(B,) the teacher's value estimate; None when no teacher has one."""

    def __len__(self) -> int:
        for f in fields(self):
            tensor = getattr(self, f.name)
            if tensor is not None:
                return int(tensor.shape[0])
        return 0

    def rows(self, index: torch.Tensor) -> Targets:
        """The targets of rows ``index`` (a minibatch)."""
        return replace(self, **{f.name: _take(getattr(self, f.name), index) for f in fields(self)})


def _take(tensor: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if tensor is None else tensor[index]


def action_kl(student: Outputs, targets: Targets) -> torch.Tensor:
    """(B,) the action part of the loss: categorical KL, Gaussian KL or action MSE per row."""
    if targets.probs is not None:
        assert student.log_probs is not None, "a Discrete teacher needs a Discrete student"
        return categorical_kl(targets.probs, student.log_probs)
    assert student.mean is not None and student.log_std is not None, "a Box teacher needs a Gaussian student"
    assert targets.mean is not None and targets.half_range is not None
    mse = action_mse(targets.mean, student.mean, targets.half_range, targets.dim_mask)
    if targets.log_std is None or targets.stochastic is None:
        return mse
    kl = gaussian_kl(targets.mean, targets.log_std, student.mean, student.log_std, targets.dim_mask)
    return torch.where(targets.stochastic, kl, mse)


def distillation_loss(
    student: Outputs, targets: Targets, value_coef: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mean action KL) of a batch: the mean action KL plus ``value_coef`` × value loss."""
    kl = action_kl(student, targets).mean()
    loss = kl
    if value_coef and targets.value is not None and student.value is not None:
        loss = loss + value_coef * value_loss(student.value, targets.value)
    return loss, kl.detach()


def agreement(student: Outputs, targets: Targets) -> torch.Tensor:
    """(B,) bool: the student's deterministic action is the teacher's (argmax for Discrete;
    every used dimension within ``AGREEMENT_TOLERANCE`` of the action range for Box)."""
    if targets.probs is not None:
        assert student.log_probs is not None
        return student.log_probs.argmax(dim=-1) == targets.probs.argmax(dim=-1)
    assert student.mean is not None and targets.mean is not None and targets.half_range is not None
    close = (student.mean - targets.mean).abs() <= 2 * AGREEMENT_TOLERANCE * targets.half_range
    if targets.dim_mask is not None:
        close = close | (targets.dim_mask < 0.5)
    return close.all(dim=-1)
