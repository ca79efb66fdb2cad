"""Hyperparameter sweeps (``nb2 sweep``): Optuna's TPE with ASHA, on Ray or in this process.

``from nb2_agents.sweep import sweep, SweepOptions`` (:mod:`nb2_agents.sweep.run`); the search
space is data, ``policies/sweeps.yaml`` (:mod:`nb2_agents.sweep.space`).
"""

from typing import TYPE_CHECKING

from nb2_agents.lazy import lazy_exports

if TYPE_CHECKING:
    from nb2_agents.sweep.run import SweepOptions, SweepResult, sweep

__all__ = ["SweepOptions", "SweepResult", "sweep"]
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, "nb2_agents.sweep.run"))
