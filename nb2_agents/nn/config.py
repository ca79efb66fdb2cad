"""Configuration of the NB2 network: one dataclass and the named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ATTENTION = ("hierarchical", "flat")
"""The values of :attr:`NB2Config.attention`."""


@dataclass(frozen=True)
class NB2Config:
    """Architecture of one NB2 network (tokenizer, hierarchical encoder, decoder).

    Every field is validated in ``__post_init__`` so a bad value fails at construction,
    naming the field and what is allowed.
    """

    d_model: int = 32
    """Width of every token."""
    n_heads: int = 2
    """Attention heads in every attention layer (``d_model`` must be divisible by it)."""
    n_local_layers: int = 1
    """Blocks of attention inside each local group at the finest level."""
    n_global_layers: int = 1
    """Blocks of attention across group summaries, the global token and the task token."""
    n_decoder_layers: int = 1
    """Cross-attention blocks in which the actor / critic queries read the encoder memory."""
    mlp_ratio: int = 2
    """Hidden width of each block's MLP, as a multiple of ``d_model``."""
    group_size: int = 16
    """Largest number of tokens in one local group (and summaries per group at higher levels)."""
    max_vector_tokens: int = 64
    """Box vectors up to this length get one token per scalar; longer ones are chunked."""
    chunk_size: int = 8
    """Scalars per token when a vector is longer than ``max_vector_tokens``."""
    patch_size: int = 0
    """Image patch side in pixels; 0 picks the smallest power of two giving ≤ ``max_image_tokens``."""
    max_image_tokens: int = 256
    """Upper bound on patches per image when ``patch_size`` is 0."""
    max_tasks: int = 32
    """Rows of the task-embedding table (task ids must be below this)."""
    sampling: bool = True
    """Adaptive token sampling on (True) or off (False, the ablation)."""
    keep_ratio: float = 0.5
    """Share of each local group's tokens that sampling keeps (its most significant ones)."""
    min_keep: int = 8
    """Sampling never keeps fewer tokens than this per group (and does nothing on groups this small)."""
    gate_bias: float = -2.0
    """Initial bias of the gated residuals: sigmoid(-2) ≈ 0.12, so each block starts near the identity."""
    attention: str = "hierarchical"
    """``hierarchical``: attention inside local groups, then across group summaries (NB2).
    ``flat``: the baseline it is measured against. Every token attends to every other, with
    the global and task tokens, in each of ``n_local_layers + n_global_layers`` blocks. The
    tokenizer and decoder are NB2's, and token sampling does not run."""

    def __post_init__(self) -> None:
        positive = [
            "d_model",
            "n_heads",
            "n_local_layers",
            "n_global_layers",
            "n_decoder_layers",
            "mlp_ratio",
            "group_size",
            "max_vector_tokens",
            "chunk_size",
            "max_image_tokens",
            "max_tasks",
            "min_keep",
        ]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"NB2Config.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"NB2Config.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.group_size < 2:
            raise ValueError(f"NB2Config.group_size must be at least 2, got {self.group_size}")
        if not isinstance(self.patch_size, int) or self.patch_size < 0:
            raise ValueError(
                f"NB2Config.patch_size must be 0 (auto) or a positive integer, got {self.patch_size!r}"
            )
        if self.attention not in ATTENTION:
            raise ValueError(f"NB2Config.attention must be one of {ATTENTION}, got {self.attention!r}")
        if (
            isinstance(self.keep_ratio, bool)
            or not isinstance(self.keep_ratio, (int, float))
            or not (0.0 < self.keep_ratio <= 1.0)
        ):
            raise ValueError(f"NB2Config.keep_ratio must be a number in (0, 1], got {self.keep_ratio!r}")

    def replace(self, **changes: Any) -> NB2Config:
        """Return a copy with ``changes`` applied; unknown keys raise ``ValueError``."""
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - valid)
        if unknown:
            raise ValueError(f"unknown NB2Config key(s) {unknown}; valid keys: {sorted(valid)}")
        return dataclasses.replace(self, **changes)


PRESETS_FILE = Path(__file__).resolve().parents[1] / "data" / "policies" / "presets.yaml"
"""``policies/presets.yaml``, as shipped with the package: the one place presets are defined."""


def load_presets(path: Path = PRESETS_FILE) -> dict[str, NB2Config]:
    """Read named presets from YAML; an unknown field or bad value names the file and preset."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read NB2 presets from {path}: {err}") from err
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a mapping of preset name -> NB2Config fields")
    presets = {}
    for name, fields in data.items():
        try:
            presets[str(name)] = NB2Config().replace(**(fields or {}))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path} [{name}]: {err}") from err
    return presets


PRESETS: dict[str, NB2Config] = load_presets()


def get_config(preset: str | NB2Config = "nano", **overrides: Any) -> NB2Config:
    """Resolve a preset name (or a config) plus field overrides into an :class:`NB2Config`.

    >>> get_config("nano", sampling=False).sampling
    False
    """
    if isinstance(preset, NB2Config):
        base = preset
    elif isinstance(preset, str) and preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise ValueError(f"unknown NB2 preset {preset!r}; valid presets: {sorted(PRESETS)}")
    return base.replace(**overrides) if overrides else base


@dataclass
class ParamReport:
    """Parameter counts of one network, by block."""

    total: int
    by_block: dict[str, int] = field(default_factory=dict)

    @property
    def fp32_bytes(self) -> int:
        return self.total * 4
