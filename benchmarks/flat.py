"""Flat-attention transformer baseline, built from NB2's own :class:`Block`.

The only difference from NB2 is the attention pattern: every token attends to every other
token (plus a global token) in each layer, instead of attending inside local groups and then
across group summaries. Width, heads, MLP ratio and gated residuals are NB2's.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from nb2_agents.nn.blocks import Block, init_weights
from nb2_agents.nn.config import NB2Config, get_config
from nb2_agents.sb3.actor_critic import NB2Heads


class FlatEncoder(nn.Module):
    """Tokens (B, N, C) → (B, 1 + N, C): a global token, then N tokens, after full self-attention.

    :param cfg: width and heads; depth defaults to ``n_local_layers + n_global_layers``,
        NB2's depth when the observation spans several groups
    :param n_layers: override the depth
    """

    def __init__(self, cfg: NB2Config, n_layers: int | None = None) -> None:
        super().__init__()
        depth = cfg.n_local_layers + cfg.n_global_layers if n_layers is None else n_layers
        args = (cfg.d_model, cfg.n_heads, cfg.mlp_ratio, cfg.gate_bias)
        self.global_token = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.blocks = nn.ModuleList(Block(*args) for _ in range(depth))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` (N,) bool keeps real tokens; None when nothing is padded."""
        b = tokens.shape[0]
        x = torch.cat([self.global_token.expand(b, -1, -1), tokens], dim=1)  # (B, 1+N, C)
        key_mask = None
        if mask is not None:
            keep = torch.cat([mask.new_ones(1), mask])  # the global token is always real
            key_mask = keep[None, None, None, :]  # (1, 1, 1, 1+N)
        for blk in self.blocks:
            x = blk(x, mask=key_mask)
        return x


class FlatTransformerExtractor(BaseFeaturesExtractor):
    """Box observation → per-scalar tokens → :class:`FlatEncoder` → 2 learned queries → (B, 2C).

    Tokens are ``value * weight[i] + feature[i]`` per scalar, as NB2 tokenizes short vectors;
    the actor and critic queries read the encoder output through one cross-attention block
    (NB2's decoder without head gates or token sampling).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        config: NB2Config,
        n_queries: int = 2,
        n_layers: int | None = None,
    ) -> None:
        super().__init__(observation_space, features_dim=n_queries * config.d_model)
        c = config.d_model
        self.n_inputs = get_flattened_obs_dim(observation_space)
        self.weight = nn.Parameter(torch.randn(self.n_inputs, c) * 0.02)
        self.feature = nn.Parameter(torch.randn(self.n_inputs, c) * 0.02)
        self.encoder = FlatEncoder(config, n_layers)
        self.queries = nn.Parameter(torch.randn(1, n_queries, c) * 0.02)
        self.decoder = Block(c, config.n_heads, config.mlp_ratio, config.gate_bias, cross=True)
        self.ln_out = nn.LayerNorm(c)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """NB2's init: small normal weights, gated residuals near the identity, zero global token."""
        self.apply(init_weights)
        nn.init.zeros_(self.encoder.global_token)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = observations.reshape(observations.shape[0], -1)  # (B, N)
        tokens = torch.addcmul(self.feature, x.unsqueeze(-1), self.weight)  # (B, N, C)
        memory = self.encoder(tokens)  # (B, 1+N, C)
        q = self.queries + memory[:, :1]  # (B, nq, C): queries offset by the global token
        return self.ln_out(self.decoder(q, memory)).flatten(1)  # (B, nq*C)


class FlatTransformerPolicy(ActorCriticPolicy):
    """PPO / A2C policy on :class:`FlatTransformerExtractor`, set up like NB2's.

    Same heads (:class:`NB2Heads`: the actor and critic halves of the features, no hidden
    layers by default), same init and the same fused Adam (eps 1e-5), so a throughput
    comparison with NB2 differs only in the encoder.

    :param preset: NB2 preset (or config) giving width and depth
    :param n_layers: encoder depth (default ``n_local_layers + n_global_layers``)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        preset: str | NB2Config = "nano",
        n_layers: int | None = None,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.flat_config = get_config(preset)
        if kwargs.get("optimizer_kwargs") is None:
            kwargs["optimizer_kwargs"] = {"eps": 1e-5, "fused": True}
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch if net_arch is not None else [],
            features_extractor_class=FlatTransformerExtractor,
            features_extractor_kwargs={"config": self.flat_config, "n_layers": n_layers},
            **kwargs,
        )

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = NB2Heads(  # type: ignore[assignment]  # SB3 annotates MlpExtractor
            self.flat_config.d_model, self.net_arch, self.activation_fn
        )

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        # SB3's orthogonal init (gain sqrt 2) would overwrite the transformer's init, as NB2 avoids
        for module in self.modules():
            if isinstance(module, FlatTransformerExtractor):
                module.reset_parameters()
