"""What retention acts on, per SB3 algorithm: the optimizers, their parameters, the outputs to
distill and the log-likelihoods whose Fisher EWC needs.

=====================  =======================  =========================================
algorithm              part (optimizer)         distilled on replayed observations
=====================  =======================  =========================================
PPO, A2C, MaskablePPO  ``policy``               KL(pi_old || pi_new) of the action
                                                distribution + value regression
DQN                    ``policy`` (Q-network)   Q-value regression (KL of softmax(Q) logged)
SAC                    ``actor``                KL of the Gaussian (pre-squash) actions
                       ``critic``               Q regression at the old actor's action
TD3 / DDPG             ``actor``                action regression
                       ``critic``               Q regression at the old actor's action
=====================  =======================  =========================================

Value and Q targets are regressed relative to their scale (divided by ``1 + mean |target|``),
so the loss does not grow with the returns.

Without the critic (``parts_for(model, critic=False)``, when the critic is re-initialised at each
new task by :func:`reset_critic`) only the actor is distilled and weighed by EWC: the actor-critic
families' KL alone, SAC's and TD3's ``actor`` part alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.sac.policies import SACPolicy
from torch import nn
from torch.distributions import Normal, kl_divergence

from nb2_agents.nn.model import NB2
from nb2_agents.sb3 import algos

Obs = Any  # a tensor or a dict of tensors, as SB3's obs_to_tensor returns
LogLikelihoods = Callable[[BasePolicy, Obs], Iterator[torch.Tensor]]


@dataclass
class Part:
    """One optimizer of the algorithm, the parameters it updates and how to distill them."""

    name: str
    optimizer: torch.optim.Optimizer
    params: dict[str, nn.Parameter]
    distill: Callable[[BasePolicy, BasePolicy, Obs], tuple[torch.Tensor, float]]
    """(loss, logged KL) of the new policy against a frozen one on a batch."""
    heads: list[LogLikelihoods]
    """Per-sample log-likelihood generators, one per output head, for the Fisher."""


def _named(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, nn.Parameter]:
    """The parameters of ``module`` that ``optimizer`` updates, by name."""
    owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return {n: p for n, p in module.named_parameters() if id(p) in owned and p.requires_grad}


def _rel_mse(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(new, old) / (1.0 + old.abs().mean()) ** 2


def _rows(obs: Obs) -> Iterator[Obs]:
    """One-sample batches of ``obs``."""
    n = next(iter(obs.values())).shape[0] if isinstance(obs, dict) else obs.shape[0]
    for i in range(n):
        yield {k: v[i : i + 1] for k, v in obs.items()} if isinstance(obs, dict) else obs[i : i + 1]


# --------------------------------------------------------------------------- on-policy


def actor_critic_forward(policy: Any, obs: Obs) -> tuple[Any, torch.Tensor]:
    """SB3 actor-critic policy (PPO, A2C, MaskablePPO; MLP, CNN or NB2): the action
    distribution and the (B,) value in one pass, as SB3's ``forward`` computes them, without sampling."""
    features = policy.extract_features(obs)
    if policy.share_features_extractor:
        latent_pi, latent_vf = policy.mlp_extractor(features)
    else:
        pi_features, vf_features = features
        latent_pi = policy.mlp_extractor.forward_actor(pi_features)
        latent_vf = policy.mlp_extractor.forward_critic(vf_features)
    return policy._get_action_dist_from_latent(latent_pi), policy.value_net(latent_vf).reshape(-1)


def _kl(old: Any, new: Any) -> torch.Tensor:
    kl = kl_divergence(old.distribution, new.distribution)
    return kl.sum(dim=-1) if kl.dim() > 1 else kl  # Normal: per action dimension


def _distill_actor_critic(policy: Any, old: Any, obs: Obs) -> tuple[torch.Tensor, float]:
    with torch.no_grad():
        dist_old, value_old = actor_critic_forward(old, obs)
    dist_new, value_new = actor_critic_forward(policy, obs)
    kl = _kl(dist_old, dist_new).mean()
    return kl + 0.5 * _rel_mse(value_new, value_old), float(kl.detach())


def _distill_actor(policy: Any, old: Any, obs: Obs) -> tuple[torch.Tensor, float]:
    """KL(pi_old || pi_new) alone, from the actor's path only (no value forward)."""
    with torch.no_grad():
        dist_old = old.get_distribution(obs)
    kl = _kl(dist_old, policy.get_distribution(obs)).mean()
    return kl, float(kl.detach())


def _ll_actions(policy: Any, obs: Obs) -> Iterator[torch.Tensor]:
    for row in _rows(obs):
        dist, _ = actor_critic_forward(policy, row)
        with torch.no_grad():
            action = dist.sample()
        yield dist.log_prob(action).sum()


def _ll_value(policy: Any, obs: Obs) -> Iterator[torch.Tensor]:
    for row in _rows(obs):  # unit-variance Gaussian around V: the Fisher is (dV/dtheta)^2
        yield actor_critic_forward(policy, row)[1].sum()


# --------------------------------------------------------------------------- DQN


def _distill_q(policy: Any, old: Any, obs: Obs) -> tuple[torch.Tensor, float]:
    with torch.no_grad():
        q_old = old.q_net(obs)
    q_new = policy.q_net(obs)
    kl = F.kl_div(F.log_softmax(q_new, -1), F.log_softmax(q_old, -1), log_target=True, reduction="batchmean")
    return _rel_mse(q_new, q_old), float(kl.detach())


def _ll_q(policy: Any, obs: Obs) -> Iterator[torch.Tensor]:
    for row in _rows(obs):  # softmax(Q) read as the policy
        logp = F.log_softmax(policy.q_net(row), dim=-1)
        with torch.no_grad():
            action = torch.distributions.Categorical(logits=logp).sample()
        yield logp.gather(-1, action[:, None]).sum()


# --------------------------------------------------------------------------- SAC / TD3


def _gaussian(actor: Any, obs: Obs) -> Normal:
    mean, log_std, _ = actor.get_action_dist_params(obs)
    return Normal(mean, log_std.exp())


def _distill_sac_actor(policy: Any, old: Any, obs: Obs) -> tuple[torch.Tensor, float]:
    with torch.no_grad():
        p_old = _gaussian(old.actor, obs)
    kl = kl_divergence(p_old, _gaussian(policy.actor, obs)).sum(-1).mean()
    return kl, float(kl.detach())


def _ll_sac_actor(policy: Any, obs: Obs) -> Iterator[torch.Tensor]:
    for row in _rows(obs):
        dist = _gaussian(policy.actor, row)
        with torch.no_grad():
            u = dist.sample()
        yield dist.log_prob(u).sum()


def _distill_td3_actor(policy: Any, old: Any, obs: Obs) -> tuple[torch.Tensor, float]:
    with torch.no_grad():
        a_old = old.actor(obs)
    loss = F.mse_loss(policy.actor(obs), a_old)
    return loss, float(loss.detach())


def _ll_td3_actor(policy: Any, obs: Obs) -> Iterator[torch.Tensor]:
    for row in _rows(obs):  # unit-variance Gaussian around the deterministic action
        yield policy.actor(row).sum()


def _old_action(old: Any, obs: Obs) -> torch.Tensor:
    with torch.no_grad():
        return old.actor(obs, deterministic=True) if isinstance(old, SACPolicy) else old.actor(obs)


def _distill_critic(policy: Any, old: Any, obs: Obs) -> tuple[torch.Tensor, float]:
    action = _old_action(old, obs)
    with torch.no_grad():
        q_old = torch.cat(old.critic(obs, action), dim=1)
    q_new = torch.cat(policy.critic(obs, action), dim=1)
    loss = _rel_mse(q_new, q_old)
    return loss, 0.0


def _ll_critic(policy: Any, obs: Obs) -> Iterator[torch.Tensor]:
    for row in _rows(obs):
        action = _old_action(policy, row)
        yield torch.cat(policy.critic(row, action), dim=1).sum()


# --------------------------------------------------------------------------- dispatch


def parts_for(model: BaseAlgorithm, critic: bool = True) -> list[Part]:
    """The parts retention acts on for ``model``'s algorithm (see the module docstring); with
    ``critic=False``, the actor's alone."""
    policy: Any = model.policy
    family = algos.of(model).family
    opts = algos.optimizers(policy)
    if family == "actor_critic":
        opt = opts["policy"]
        if not critic:
            return [Part("policy", opt, _named(policy, opt), _distill_actor, [_ll_actions])]
        return [Part("policy", opt, _named(policy, opt), _distill_actor_critic, [_ll_actions, _ll_value])]
    if family == "q":
        opt = opts["policy"]
        return [Part("policy", opt, _named(policy.q_net, opt), _distill_q, [_ll_q])]
    actor_distill, actor_ll = (
        (_distill_sac_actor, _ll_sac_actor) if family == "sac" else (_distill_td3_actor, _ll_td3_actor)
    )
    actor_opt, critic_opt = opts["actor"], opts["critic"]
    actor = Part("actor", actor_opt, _named(policy.actor, actor_opt), actor_distill, [actor_ll])
    if not critic:
        return [actor]
    critic_part = Part("critic", critic_opt, _named(policy.critic, critic_opt), _distill_critic, [_ll_critic])
    return [actor, critic_part]


def has_critic(model: BaseAlgorithm) -> bool:
    """Whether ``model`` has a critic apart from its policy (DQN's Q-network is its policy)."""
    return algos.of(model).family != "q"


def _reinit(module: nn.Module, gain: float | None) -> None:
    """Initialise ``module`` afresh as it was built: NB2 networks by their own init, every other
    layer by torch's default, then SB3's orthogonal init with ``gain`` where given (actor-critic
    policies with ``ortho_init``)."""
    nets = [m for m in module.modules() if isinstance(m, NB2)]
    inside = {id(m) for net in nets for m in net.modules()}
    for net in nets:
        net.reset_parameters()
    for m in module.modules():
        if id(m) in inside or next(m.children(), None) is not None:
            continue  # NB2's own, or a container
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
        if gain is not None:
            BasePolicy.init_weights(m, gain)  # Linear / Conv2d only, as SB3's _build does


def reset_critic(model: BaseAlgorithm) -> int:
    """Re-initialise the critic of ``model`` and drop its optimizer state: Continual World's
    ``reset_critic_on_task_change``. The actor-critic families' value head (and the critic's own
    encoder when it has one, ``share_encoder=False``); SAC's and TD3's Q-networks, their encoder
    when not shared with the actor, and the target copied from them. Returns the number of
    parameters reset (0 for DQN, which has no critic apart from its policy)."""
    policy: Any = model.policy
    family = algos.of(model).family
    if family == "q":
        return 0
    if family == "actor_critic":
        heads = policy.mlp_extractor
        vf = heads.vf if hasattr(heads, "vf") else heads.value_net  # NB2Heads or SB3's MlpExtractor
        gain = math.sqrt(2) if policy.ortho_init else None
        plan: list[tuple[nn.Module, float | None]] = [(vf, gain), (policy.value_net, 1.0 if gain else None)]
        if not policy.share_features_extractor:
            plan.append((policy.vf_features_extractor, gain))
        optimizer = policy.optimizer
    else:
        critic = policy.critic
        plan = [(q, None) for q in critic.q_networks]
        if not policy.share_features_extractor:
            plan.append((critic.features_extractor, None))
        optimizer = critic.optimizer
    params = [p for module, _ in plan for p in module.parameters()]
    for module, module_gain in plan:
        _reinit(module, module_gain)
    for p in params:
        optimizer.state.pop(p, None)  # Adam's moments belonged to the old critic
    if family != "actor_critic":
        policy.critic_target.load_state_dict(policy.critic.state_dict())
    return sum(p.numel() for p in params)


def snapshot(policy: BasePolicy) -> BasePolicy:
    """A frozen copy of ``policy`` (no gradients, eval mode, no optimizer), rebuilt from its
    constructor parameters as SB3's ``BasePolicy.load`` does, then given its weights."""
    frozen = type(policy)(**policy._get_constructor_parameters()).to(policy.device)
    frozen.load_state_dict(policy.state_dict())
    for module in frozen.modules():  # the rebuilt policy made optimizers of its own
        if isinstance(getattr(module, "optimizer", None), torch.optim.Optimizer):
            setattr(module, "optimizer", None)  # noqa: B010 (a Module attribute mypy types as Tensor | Module)
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen.eval()  # type: ignore[no-any-return]
