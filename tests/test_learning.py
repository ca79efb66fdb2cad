"""Learning tier: seeded runs that must reach real return thresholds.

Budgets follow RL Zoo (CartPole-v1, Pendulum-v1) and SB3's own tests/test_identity.py
(IdentityEnv: A2C / PPO 3000 steps, DQN 4000 steps with learning_starts=0, gamma 0.4).
"""

from __future__ import annotations

import gymnasium as gym
import pytest
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnv
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import nb2_agents  # noqa: F401  (registers "NB2Policy")
from nb2_agents.hyperparams import DATA_DIR, load_hyperparams


def _mean_return(model: BaseAlgorithm, env_id: str, episodes: int, seed: int) -> float:
    env = Monitor(gym.make(env_id))
    env.reset(seed=seed)
    mean, _ = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True)
    return float(mean)


def test_ppo_cartpole_rl_zoo_budget() -> None:
    """PPO + NB2-nano: mean return >= 475 over 20 episodes after RL Zoo's 100k steps."""
    hp = load_hyperparams(PPO, "CartPole-v1", DATA_DIR / "policies" / "ppo.yaml")
    assert hp.n_timesteps == 100_000 and hp.algo_kwargs["policy_kwargs"]["preset"] == "nano"
    env = make_vec_env("CartPole-v1", n_envs=hp.n_envs, seed=0)
    model = PPO(hp.policy, env, seed=0, **hp.algo_kwargs).learn(hp.n_timesteps)
    assert _mean_return(model, "CartPole-v1", episodes=20, seed=10_000) >= 475


@pytest.mark.parametrize(("algo", "steps"), [(A2C, 3000), (PPO, 3000), (DQN, 4000)])
def test_identity_env(algo: type[BaseAlgorithm], steps: int) -> None:
    """SB3's IdentityEnv(4) at SB3's MlpPolicy budgets: reward threshold 90 over 20 episodes."""
    env = DummyVecEnv([lambda: Monitor(IdentityEnv(4))])
    kwargs = {"learning_starts": 0} if algo is DQN else {}
    model = algo("NB2Policy", env, gamma=0.4, seed=1, **kwargs).learn(steps)
    mean, _ = evaluate_policy(model, env, n_eval_episodes=20, deterministic=True)
    assert mean >= 90


@pytest.mark.slow
def test_sac_pendulum() -> None:
    """SAC + NB2-nano reaches >= -300 on Pendulum-v1 within RL Zoo's 20k steps (lr 1e-3)."""
    model = SAC("NB2Policy", "Pendulum-v1", learning_rate=1e-3, seed=0).learn(20_000)
    assert _mean_return(model, "Pendulum-v1", episodes=10, seed=10_000) >= -300
