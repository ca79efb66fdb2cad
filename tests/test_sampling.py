"""Adaptive token sampling primitives: keep count, significance, deterministic top-k, gathering,
and the rule that switches sampling off where it cannot save time."""

from __future__ import annotations

import pytest
import torch

from nb2_agents.nn.config import get_config
from nb2_agents.nn.encoder import MIN_SAMPLED_TOKENS, sampling_off_reason
from nb2_agents.nn.sampling import gather_tokens, keep_count, rank_tokens, significance


@pytest.mark.parametrize(
    ("group_len", "ratio", "min_keep", "expected"),
    [(16, 0.5, 8, 8), (16, 0.5, 2, 8), (16, 0.25, 2, 4), (16, 0.3, 2, 5), (16, 0.1, 3, 3), (4, 0.5, 8, 4)],
)
def test_keep_count(group_len: int, ratio: float, min_keep: int, expected: int) -> None:
    assert keep_count(group_len, ratio, min_keep) == expected


def top_tokens(scores: torch.Tensor, valid: torch.Tensor | None, k: int) -> torch.Tensor:
    """The ``k`` tokens sampling keeps: the first ``k`` of the ranking."""
    return rank_tokens(scores, valid)[:, :k]


def test_top_tokens_most_significant_first() -> None:
    scores = torch.tensor([[0.1, 0.4, 0.2, 0.3]])
    assert top_tokens(scores, None, 4).tolist() == [[1, 3, 2, 0]]
    assert top_tokens(scores, None, 2).tolist() == [[1, 3]]


def test_top_tokens_ranks_padding_last() -> None:
    scores = torch.tensor([[0.9, 0.0, 0.05, 0.7]])
    valid = torch.tensor([[False, True, True, True]])
    assert top_tokens(scores, valid, 3).tolist() == [[3, 2, 1]]
    # a static (1, N) mask broadcasts over the batch
    assert top_tokens(scores.expand(2, 4), valid, 1).tolist() == [[3], [3]]


def test_top_tokens_rows_do_not_depend_on_their_batch() -> None:
    torch.manual_seed(1)
    rows = torch.rand(5, 16)
    alone = torch.cat([top_tokens(rows[i : i + 1], None, 6) for i in range(5)])
    assert torch.equal(top_tokens(rows, None, 6), alone)


def test_top_tokens_is_deterministic_with_ties() -> None:
    scores = torch.ones(3, 10)
    assert top_tokens(scores, None, 5).tolist() == [[0, 1, 2, 3, 4]] * 3  # stable: ties keep their order


def test_significance() -> None:
    b, nh, n, hs = 2, 3, 7, 4
    q, k, v = torch.randn(b, nh, 1, hs), torch.randn(b, nh, n, hs), torch.randn(b, nh, n, hs)
    s = significance(q, k, v, None)
    assert s.shape == (b, n)
    assert (s > 0).all()
    attn = ((q @ k.transpose(-2, -1)).squeeze(2) / hs**0.5).softmax(-1)
    torch.testing.assert_close(s, (attn * v.norm(dim=-1)).mean(1))
    valid = torch.tensor([[True] * 5 + [False] * 2])
    s = significance(q, k, v, valid)
    assert (s[:, 5:] == 0).all() and (s[:, :5] > 0).all()


def test_gather() -> None:
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    index = torch.tensor([[4, 0], [1, 1]])
    out = gather_tokens(x, index)
    assert out.shape == (2, 2, 3)
    assert torch.equal(out[0, 0], x[0, 4]) and torch.equal(out[1, 1], x[1, 1])


def test_switch_off_rule() -> None:
    """Sampling runs on multi-group observations of >= MIN_SAMPLED_TOKENS slots with tokens to
    drop, and otherwise says why it is off; asked for nothing, it says nothing."""
    cfg = get_config("nano", sampling=True)
    assert sampling_off_reason(cfg, False, MIN_SAMPLED_TOKENS, 16) is None
    assert "fewer than the 64" in str(sampling_off_reason(cfg, False, 32, 16))
    assert "single group" in str(sampling_off_reason(cfg, True, 256, 256))
    assert "nothing to drop" in str(sampling_off_reason(cfg, False, 80, 8))
    assert "flat" in str(sampling_off_reason(cfg.replace(attention="flat"), True, 256, 256))
    assert sampling_off_reason(cfg.replace(sampling=False), False, 32, 16) is None
