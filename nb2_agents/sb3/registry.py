"""Short policy names: ``PPO("NB2Policy", env)`` works for every supported algorithm."""

from __future__ import annotations

from nb2_agents.sb3.algos import POLICY_FOR_CLASS
from nb2_agents.sb3.names import SHORT_NAME

POLICY_FOR_ALGO = POLICY_FOR_CLASS
"""Each SB3 class's NB2 policy (``algos.py``'s table)."""


def register_policies() -> None:
    """Add ``"NB2Policy"`` to each algorithm's ``policy_aliases`` (idempotent).

    A new dict is assigned on each class rather than mutating the inherited one, so no other
    algorithm sharing that dict sees the name.
    """
    for algo, policy in POLICY_FOR_ALGO.items():
        if algo.__dict__.get("policy_aliases", {}).get(SHORT_NAME) is not policy:
            algo.policy_aliases = {**algo.policy_aliases, SHORT_NAME: policy}  # type: ignore[misc]
