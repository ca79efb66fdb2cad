"""Knowledge retention: keep earlier tasks' skills while later tasks train.

:mod:`.replay` (compact replay memory), :mod:`.ewc` (online EWC), :mod:`.heads` (what each SB3
algorithm's retention acts on) and :mod:`.strategy` (``ewc``, ``distill``, ``nb2``, registered
as curriculum retention strategies on import).
"""

from nb2_agents.retention.strategy import RetentionConfig, RetentionStrategy

__all__ = ["RetentionConfig", "RetentionStrategy"]
