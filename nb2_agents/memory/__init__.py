"""Memory over time: each env's last K steps, carried in its observation, read by NB2.

``PPO(NB2Policy, MemoryWindow(venv, 8), policy_kwargs=dict(memory=8))``: NB2 encodes each past
step into its summary, and the current step's global stage attends over them
(``nn/temporal.py``). ``nb2 train`` and curricula wrap the env themselves when an entry sets
``policy_kwargs.memory``.
"""

from nb2_agents.memory.layout import MEMORY_ALGOS, MemoryLayout, check_k, memory_space
from nb2_agents.memory.window import ObsWindow
from nb2_agents.memory.wrapper import MemoryWindow

__all__ = ["MEMORY_ALGOS", "MemoryLayout", "MemoryWindow", "ObsWindow", "check_k", "memory_space"]
