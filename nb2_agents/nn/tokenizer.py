"""Turn any observation SB3 accepts into grouped tokens.

The tokenizer works on observations *after* SB3's ``preprocess_obs``: Box values as float
(images divided by 255 when ``normalize_images``), Discrete / MultiDiscrete as one-hot,
MultiBinary as float. Each observation part (a "segment": the whole observation, or one
key of a Dict) becomes tokens arranged in local groups:

* Box vector: one token per scalar (value x per-feature weight + feature-id embedding);
  vectors longer than ``max_vector_tokens`` are cut into chunks of ``chunk_size`` scalars.
  Groups are contiguous runs of at most ``group_size`` tokens.
* Box image (uint8, HWC or CHW): patches; groups are square spatial windows (Swin-style).
* Discrete: one token. MultiDiscrete: one token per dimension. MultiBinary: one per bit.
* Dict: per-key tokens plus a key embedding; each key forms its own group(s).

The layout is fixed by the observation space, so the padding mask is static, with one
exception: a Dict key ``<k>_mask`` (same size as vector key ``k``) marks, per sample, which
of ``k``'s scalars are real. Tokens made only of unmarked scalars are masked out of attention;
curricula use it to pad smaller observations to the largest (see
:mod:`nb2_agents.curriculum.adapter`). A key ``action_mask`` is read by the policy, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from torch import nn

from nb2_agents.nn.config import NB2Config

SUPPORTED_SPACES = (
    "Box (vector or uint8 image), Discrete, MultiDiscrete, MultiBinary, or a flat Dict of these"
)
TASK_KEY = "task_id"
"""A Dict key with this name and a Discrete space is read as the task id, not tokenized."""
ACTION_MASK_KEY = "action_mask"
"""A Dict key with this name holds the valid actions; the policy applies it, the tokenizer skips it."""
MASK_SUFFIX = "_mask"
"""``<k>_mask``: per-sample validity of vector key ``k``'s scalars (1 real, 0 padding)."""
EMBED_STD = 1.0
"""Embedding tables start at unit scale, so tokens are O(1) like an MLP's first layer (why:
``encoder.py``); image patches get a fan-in init for the same reason."""

FLAT_GROUP_SIZE = 1 << 30
"""``group_size`` under flat attention: larger than any segment, so each forms a single group."""


@dataclass
class TokenSet:
    """Tokens grouped for hierarchical attention.

    ``tokens`` is (B, n_groups, group_len, C); ``mask`` (n_groups, group_len) is True
    for real tokens and False for padding; ``task_ids`` (B,) or None (task 0).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    task_ids: torch.Tensor | None
    full: bool = False
    """True when ``mask`` has no padding, so attention can skip masking."""
    sample_mask: torch.Tensor | None = None
    """(B, n_groups, G) per-sample keep-mask (already combined with ``mask``), or None."""

    def keep_mask(self, b: int) -> torch.Tensor | None:
        """(B*n_groups, G) keep-mask for the grouped tokens, None when nothing is masked.

        A group whose tokens are all padding for some sample keeps its first slot, so its
        attention and pooling stay finite; that slot's token is built from zeros (the
        tokenizer zeroes padded scalars), so padding never changes the output.
        """
        if self.sample_mask is None:
            return None if self.full else self.mask.repeat(b, 1)  # (B*g, G)
        m = self.sample_mask.reshape(-1, self.sample_mask.shape[-1]).clone()  # (B*g, G)
        m[:, 0] |= ~m.any(dim=-1)
        return m


def _grouped(tokens: torch.Tensor, n_groups: int, group_len: int) -> torch.Tensor:
    """(B, N, C) → (B, n_groups, G, C): contiguous groups, the last one zero-padded."""
    b, n, c = tokens.shape
    pad = n_groups * group_len - n
    if pad:
        tokens = F.pad(tokens, (0, 0, 0, pad))  # (B, n_groups * G, C)
    return tokens.view(b, n_groups, group_len, c)


def _contiguous_mask(n_tokens: int, n_groups: int, group_len: int) -> torch.Tensor:
    """(n_groups, G) keep-mask of :func:`_grouped`: True for the first ``n_tokens`` slots."""
    return (torch.arange(n_groups * group_len) < n_tokens).view(n_groups, group_len)


class Segment(nn.Module):
    """One observation part's embedder: ``forward(x) -> (B, n_groups, group_len, C)``."""

    n_tokens: int
    n_groups: int
    group_len: int
    mask: torch.Tensor  # (n_groups, group_len) keep-mask, a buffer

    def reset_parameters(self) -> None:
        """Re-draw this segment's own embedding tables at unit scale (see ``encoder.py``)."""
        for param in self.parameters(recurse=False):
            nn.init.normal_(param, std=EMBED_STD)


class VectorEmbed(Segment):
    """Box vector / MultiBinary: per-scalar tokens, or chunks for long vectors."""

    def __init__(self, size: int, cfg: NB2Config) -> None:
        super().__init__()
        self.size = size
        self.chunk = 1 if size <= cfg.max_vector_tokens else cfg.chunk_size
        self.n_tokens = math.ceil(size / self.chunk)
        self.group_len = min(cfg.group_size, self.n_tokens)
        # value projection per token (per feature when chunk == 1) plus a feature-id embedding
        self.weight = nn.Parameter(torch.randn(self.n_tokens, self.chunk, cfg.d_model))
        self.feature = nn.Parameter(torch.randn(self.n_tokens, cfg.d_model))
        self.n_groups = math.ceil(self.n_tokens / self.group_len)
        self.register_buffer(
            "mask", _contiguous_mask(self.n_tokens, self.n_groups, self.group_len), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)  # (B, size)
        if self.chunk == 1:
            tokens = torch.addcmul(self.feature, x.unsqueeze(-1), self.weight[:, 0])  # (B, N, C)
        else:
            x = F.pad(x, (0, self.n_tokens * self.chunk - self.size))
            x = x.view(x.shape[0], self.n_tokens, self.chunk)  # (B, N, chunk)
            tokens = torch.einsum("bnk,nkc->bnc", x, self.weight) + self.feature  # (B, N, C)
        return _grouped(tokens, self.n_groups, self.group_len)

    def token_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """Per-scalar validity (B, size) → per-token keep-mask (B, n_groups, group_len)."""
        v = valid.reshape(valid.shape[0], -1) > 0.5  # (B, size)
        if self.chunk > 1:
            v = F.pad(v, (0, self.n_tokens * self.chunk - self.size))
            v = v.view(v.shape[0], self.n_tokens, self.chunk).any(dim=-1)  # (B, N)
        pad = self.n_groups * self.group_len - self.n_tokens
        return F.pad(v, (0, pad)).view(v.shape[0], self.n_groups, self.group_len)  # (B, g, G)


class ImageEmbed(Segment):
    """uint8 image: non-overlapping patches with 2-D position embeddings, in square windows."""

    def __init__(self, space: spaces.Box, cfg: NB2Config) -> None:
        super().__init__()
        self.channels_first = is_image_space_channels_first(space)
        c, h, w = space.shape if self.channels_first else (space.shape[2], *space.shape[:2])
        patch = cfg.patch_size or self._auto_patch(h, w, cfg.max_image_tokens)
        if patch > min(h, w):
            raise ValueError(
                f"NB2Config.patch_size={patch} is larger than the {h}x{w} image; use at most {min(h, w)}"
            )
        self.proj = nn.Conv2d(c, cfg.d_model, kernel_size=patch, stride=patch)
        # partial patches at the right / bottom edge are zero-padded, so every pixel is seen
        self.hp, self.wp = math.ceil(h / patch), math.ceil(w / patch)
        self.pad = (0, self.wp * patch - w, 0, self.hp * patch - h)  # F.pad order: W then H
        self.row = nn.Parameter(torch.randn(self.hp, 1, cfg.d_model))
        self.col = nn.Parameter(torch.randn(1, self.wp, cfg.d_model))
        n = self.hp * self.wp
        # a window of win x win patches is one local group; a small image is a single group
        self.win = max(1, math.isqrt(cfg.group_size))
        if n <= cfg.group_size:
            self.win = 0
            self.group_len, self.n_groups = n, 1
            mask = torch.ones(1, n, dtype=torch.bool)
        else:
            s = self.win
            nh, nw = math.ceil(self.hp / s), math.ceil(self.wp / s)
            self.group_len, self.n_groups = s * s, nh * nw
            valid = torch.zeros(nh * s, nw * s, dtype=torch.bool)
            valid[: self.hp, : self.wp] = True
            mask = valid.view(nh, s, nw, s).permute(0, 2, 1, 3).reshape(nh * nw, s * s)
        self.register_buffer("mask", mask, persistent=False)
        self.n_tokens = n

    def reset_parameters(self) -> None:
        """Position tables at unit scale; the patch projection at fan-in scale (unit-variance
        tokens from unit-variance pixels), where ``init_weights`` left it at 0.02."""
        super().reset_parameters()
        fan_in = self.proj.weight[0].numel()  # channels * patch * patch
        nn.init.normal_(self.proj.weight, std=1.0 / math.sqrt(fan_in))
        if self.proj.bias is not None:
            nn.init.zeros_(self.proj.bias)

    @staticmethod
    def _auto_patch(h: int, w: int, max_tokens: int) -> int:
        patch = 1
        while math.ceil(h / patch) * math.ceil(w / patch) > max_tokens:
            patch *= 2
        return patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_first:
            x = x.permute(0, 3, 1, 2)  # (B, H, W, ch) → (B, ch, H, W)
        if any(self.pad):
            x = F.pad(x, self.pad)  # (B, ch, hp*patch, wp*patch)
        p = self.proj(x).permute(0, 2, 3, 1) + self.row + self.col  # (B, hp, wp, C)
        b, c = p.shape[0], p.shape[-1]
        if self.win == 0:
            return p.reshape(b, 1, self.n_tokens, c)  # (B, 1, hp*wp, C)
        s = self.win
        nh, nw = math.ceil(self.hp / s), math.ceil(self.wp / s)
        p = F.pad(p, (0, 0, 0, nw * s - self.wp, 0, nh * s - self.hp))  # (B, nh*s, nw*s, C)
        p = p.view(b, nh, s, nw, s, c).permute(0, 1, 3, 2, 4, 5)  # (B, nh, nw, s, s, C)
        return p.reshape(b, nh * nw, s * s, c)  # (B, windows, s*s, C)


class CategoricalEmbed(Segment):
    select: torch.Tensor

    """Discrete / MultiDiscrete from one-hot: one token per categorical dimension."""

    def __init__(self, nvec: list[int], cfg: NB2Config) -> None:
        super().__init__()
        self.n_tokens = len(nvec)
        total = int(sum(nvec))
        # (N, total) selector: row i picks the one-hot slice of dimension i
        select = torch.zeros(self.n_tokens, total)
        offsets = np.concatenate([[0], np.cumsum(nvec)])
        for i in range(self.n_tokens):
            select[i, offsets[i] : offsets[i + 1]] = 1.0
        self.register_buffer("select", select, persistent=False)
        self.table = nn.Parameter(torch.randn(total, cfg.d_model))
        self.feature = nn.Parameter(torch.randn(self.n_tokens, cfg.d_model))
        self.group_len = min(cfg.group_size, self.n_tokens)
        self.n_groups = math.ceil(self.n_tokens / self.group_len)
        self.register_buffer(
            "mask", _contiguous_mask(self.n_tokens, self.n_groups, self.group_len), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        onehot = x.reshape(x.shape[0], 1, -1) * self.select  # (B, N, total)
        return _grouped(onehot @ self.table + self.feature, self.n_groups, self.group_len)  # (B, g, G, C)


def _segment_for(space: spaces.Space, cfg: NB2Config, where: str) -> Segment:
    if isinstance(space, spaces.Box):
        if is_image_space(space, check_channels=False):
            return ImageEmbed(space, cfg)
        return VectorEmbed(int(np.prod(space.shape)), cfg)
    if isinstance(space, spaces.Discrete):
        return CategoricalEmbed([int(space.n)], cfg)
    if isinstance(space, spaces.MultiDiscrete):
        return CategoricalEmbed([int(n) for n in np.asarray(space.nvec).ravel()], cfg)
    if isinstance(space, spaces.MultiBinary):
        return VectorEmbed(int(np.prod(space.shape)), cfg)
    raise TypeError(
        f"NB2 cannot tokenize {type(space).__name__} {where}: {space}. Supported: {SUPPORTED_SPACES}."
    )


def check_observation_space(space: spaces.Space) -> None:
    """Raise ``TypeError`` naming the space if NB2 cannot tokenize it."""
    if isinstance(space, spaces.Dict):
        for key, sub in space.spaces.items():
            if isinstance(sub, (spaces.Dict, spaces.Tuple)):
                raise TypeError(
                    f"NB2 cannot tokenize nested {type(sub).__name__} at observation key {key!r}: "
                    f"{sub}. Supported: {SUPPORTED_SPACES}."
                )
            _check_leaf(sub, f"at observation key {key!r}")
    else:
        _check_leaf(space, "as the observation space")


def _check_leaf(space: spaces.Space, where: str) -> None:
    if not isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        raise TypeError(
            f"NB2 cannot tokenize {type(space).__name__} {where}: {space}. Supported: {SUPPORTED_SPACES}."
        )


def _mask_keys(items: dict[str, spaces.Space]) -> dict[str, str]:
    """``{k: k + "_mask"}`` for each vector key ``k`` that has a same-sized ``<k>_mask`` key."""
    found = {}
    for key, space in items.items():
        if not key.endswith(MASK_SUFFIX) or key == ACTION_MASK_KEY:
            continue
        base = items.get(key[: -len(MASK_SUFFIX)])
        vector = isinstance(base, spaces.MultiBinary) or (
            isinstance(base, spaces.Box) and not is_image_space(base, check_channels=False)
        )
        if base is None or not vector:
            raise TypeError(
                f"observation key {key!r} is read as a padding mask, so {key[: -len(MASK_SUFFIX)]!r} "
                "must be a vector Box / MultiBinary key beside it"
            )
        if int(np.prod(space.shape or ())) != int(np.prod(base.shape or ())):
            raise TypeError(
                f"observation key {key!r} has shape {space.shape}; it must match "
                f"{key[: -len(MASK_SUFFIX)]!r}'s {base.shape}"
            )
        found[key[: -len(MASK_SUFFIX)]] = key
    return found


class Tokenizer(nn.Module):
    """Observation (tensor or dict of tensors, SB3-preprocessed) → :class:`TokenSet`."""

    mask: torch.Tensor

    def __init__(self, observation_space: spaces.Space, cfg: NB2Config) -> None:
        super().__init__()
        check_observation_space(observation_space)
        if cfg.attention == "flat":  # one group per segment: the encoder attends over all at once
            cfg = cfg.replace(group_size=FLAT_GROUP_SIZE)
        self.is_dict = isinstance(observation_space, spaces.Dict)
        items: list[tuple[str, spaces.Space]]
        if isinstance(observation_space, spaces.Dict):
            items = list(observation_space.spaces.items())
            task = observation_space.spaces.get(TASK_KEY)
            self.task_key = TASK_KEY if isinstance(task, spaces.Discrete) else None
            if isinstance(task, spaces.Discrete) and task.n > cfg.max_tasks:
                raise ValueError(
                    f"observation key {TASK_KEY!r} has {task.n} task ids but NB2Config.max_tasks "
                    f"is {cfg.max_tasks}; raise max_tasks"
                )
        else:
            items = [("", observation_space)]
            self.task_key = None
        self.mask_keys = _mask_keys(dict(items))  # base key -> its per-sample mask key
        skip = {self.task_key, ACTION_MASK_KEY, *self.mask_keys.values()}
        self.keys = [k for k, _ in items if k not in skip]
        self.segment_list: list[Segment] = [
            _segment_for(s, cfg, f"at observation key {k!r}" if k else "as the observation space")
            for k, s in items
            if k not in skip
        ]
        self.segments = nn.ModuleList(self.segment_list)  # registers the parameters
        if not self.keys:
            raise TypeError(f"observation Dict has no key to tokenize besides {sorted(map(str, skip))}")
        self.group_len = max(seg.group_len for seg in self.segment_list)
        self.n_groups = sum(seg.n_groups for seg in self.segment_list)
        self.n_tokens = sum(seg.n_tokens for seg in self.segment_list)
        # one embedding per Dict key tells the encoder which part a token came from
        self.key_embed = nn.Parameter(torch.randn(len(self.keys), cfg.d_model)) if self.is_dict else None
        # static (n_groups, G) keep-mask: each segment's groups, padded to the widest group
        masks = [F.pad(seg.mask, (0, self.group_len - seg.group_len)) for seg in self.segment_list]
        self.register_buffer("mask", torch.cat(masks, dim=0), persistent=False)
        self.full = bool(self.mask.all())

    def reset_parameters(self) -> None:
        for seg in self.segment_list:
            seg.reset_parameters()
        if self.key_embed is not None:
            nn.init.normal_(self.key_embed, std=EMBED_STD)

    def forward(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> TokenSet:
        if not isinstance(obs, dict):
            return TokenSet(self.segment_list[0](obs), self.mask, None, self.full)
        assert self.key_embed is not None
        for key, mask_key in self.mask_keys.items():  # padding reads as 0, whatever it held
            obs = {**obs, key: obs[key] * (obs[mask_key].reshape(obs[key].shape) > 0.5)}
        parts, masks = [], []
        for i, (key, seg) in enumerate(zip(self.keys, self.segment_list, strict=True)):
            tok = seg(obs[key])  # (B, g_i, G_i, C)
            pad = self.group_len - tok.shape[2]
            if pad:
                tok = F.pad(tok, (0, 0, 0, pad))  # (B, g_i, G, C)
            parts.append(tok + self.key_embed[i])
            if self.mask_keys:
                b = tok.shape[0]
                if key in self.mask_keys:
                    assert isinstance(seg, VectorEmbed)
                    m = seg.token_mask(obs[self.mask_keys[key]])  # (B, g_i, G_i)
                else:
                    m = seg.mask.unsqueeze(0).expand(b, -1, -1)  # (B, g_i, G_i)
                masks.append(F.pad(m, (0, pad)))  # (B, g_i, G)
        task_ids = None
        if self.task_key:  # one-hot, (B, n) or (B, 1, n) as SB3's buffers store Discrete keys
            onehot = obs[self.task_key]
            task_ids = onehot.reshape(onehot.shape[0], -1).argmax(dim=-1)  # (B,)
        tokens = torch.cat(parts, dim=1)  # (B, n_groups, G, C)
        if masks:
            return TokenSet(tokens, self.mask, task_ids, False, torch.cat(masks, dim=1))  # mask (B, g, G)
        return TokenSet(tokens, self.mask, task_ids, self.full)
