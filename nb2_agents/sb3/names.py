"""The supported algorithms and the policy's short name, as plain strings: what the command line
lists and SB3's import hook needs, without importing SB3 or torch (``algos.py`` holds the classes)."""

from __future__ import annotations

ALGO_NAMES = ("ppo", "a2c", "dqn", "sac", "td3", "maskable_ppo")
"""``--algo`` names, in the order the CLI lists them (``algos.ALGOS``' keys)."""

SHORT_NAME = "NB2Policy"
"""``PPO("NB2Policy", env)``: the name each algorithm knows NB2's policy by."""

SB3_CLASSES = {
    "stable_baselines3": ("A2C", "DDPG", "DQN", "PPO", "SAC", "TD3"),
    "sb3_contrib": ("MaskablePPO",),
}
"""Per package, its algorithm classes that take an NB2 policy (``algos.POLICY_FOR_CLASS``' keys)."""
