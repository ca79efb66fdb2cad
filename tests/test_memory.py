"""Rollouts keep no autograd state: acting runs without gradients, and nothing the network keeps
between calls (attention statistics, kept-token shares, head gates) holds a graph."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

import nb2_agents  # noqa: F401  (registers "NB2Policy")


class GradModeProbe(BaseCallback):
    """Records ``torch.is_grad_enabled()`` at every forward of the policy made while collecting."""

    def __init__(self) -> None:
        super().__init__()
        self.collecting = False
        self.grad_modes: list[bool] = []
        self.handle: Any = None

    def _on_training_start(self) -> None:
        def hook(*_: Any) -> None:
            if self.collecting:
                self.grad_modes.append(torch.is_grad_enabled())

        self.handle = self.model.policy.register_forward_pre_hook(hook)
        for module in self.model.policy.modules():  # SB3 calls submodules (actor, q_net) directly
            if module is not self.model.policy:
                module.register_forward_pre_hook(hook)

    def _on_rollout_start(self) -> None:
        self.collecting = True

    def _on_rollout_end(self) -> None:
        self.collecting = False

    def _on_step(self) -> bool:
        return True


def graph_holders(model: BaseAlgorithm) -> list[str]:
    """Tensor attributes of the policy's modules (not parameters or buffers) that hold a graph."""
    found = []
    for name, module in model.policy.named_modules():
        owned = {id(t) for t in (*module.parameters(recurse=False), *module.buffers(recurse=False))}
        for attr, value in vars(module).items():
            if isinstance(value, torch.Tensor) and id(value) not in owned and value.grad_fn is not None:
                found.append(f"{name}.{attr}")
    return found


@pytest.mark.parametrize(
    ("algo", "env_id", "kwargs"),
    [
        (PPO, "CartPole-v1", {"n_steps": 64, "batch_size": 32, "n_epochs": 1}),
        (DQN, "CartPole-v1", {"learning_starts": 32, "train_freq": 4, "batch_size": 16}),
        (SAC, "Pendulum-v1", {"learning_starts": 32, "train_freq": 4, "batch_size": 16}),
    ],
)
def test_rollouts_run_without_autograd_and_keep_no_graph(
    algo: Any, env_id: str, kwargs: dict[str, Any]
) -> None:
    model = algo("NB2Policy", env_id, seed=0, device="cpu", policy_kwargs={"preset": "nano"}, **kwargs)
    probe = GradModeProbe()
    model.learn(192, callback=probe)
    assert probe.grad_modes, "no forward was seen while collecting rollouts"
    assert not any(probe.grad_modes), "a forward during rollout collection ran with gradients on"
    assert graph_holders(model) == []
