"""Where the retention strategies' base class and registry lived before :mod:`nb2_agents.retention.base`
(and the optimizer-step seam before :mod:`nb2_agents.sb3.extra_loss`): imported from here still works."""

from nb2_agents.retention.base import (
    STRATEGIES,
    Strategy,
    check_strategy,
    make_strategy,
    register_strategy,
)
from nb2_agents.sb3.extra_loss import install_extra_loss

__all__ = [
    "STRATEGIES",
    "Strategy",
    "check_strategy",
    "install_extra_loss",
    "make_strategy",
    "register_strategy",
]
