"""The NB2 network: tokenizer, hierarchical encoder, decoder."""

from nb2_agents.nn.config import PRESETS, NB2Config, get_config
from nb2_agents.nn.model import NB2

__all__ = ["NB2", "PRESETS", "NB2Config", "get_config"]
