"""The NB2 network: tokenizer, hierarchical encoder, decoder."""

from typing import TYPE_CHECKING

from nb2_agents.lazy import lazy_exports

if TYPE_CHECKING:
    from nb2_agents.nn.config import PRESETS, NB2Config, get_config
    from nb2_agents.nn.model import NB2

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "PRESETS": "nb2_agents.nn.config",
        "NB2Config": "nb2_agents.nn.config",
        "get_config": "nb2_agents.nn.config",
        "NB2": "nb2_agents.nn.model",
    },
)

__all__ = ["NB2", "PRESETS", "NB2Config", "get_config"]
