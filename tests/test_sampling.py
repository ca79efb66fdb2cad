"""Adaptive token sampling primitives: keep count, router weights, deterministic top-k, gathering,
and the rule that switches sampling off where it cannot save time."""

from __future__ import annotations

import pytest
import torch

from nb2_agents.nn.blocks import Block
from nb2_agents.nn.config import get_config
from nb2_agents.nn.encoder import MIN_SAMPLED_TOKENS, sampled_block, sampling_off_reason
from nb2_agents.nn.sampling import gather_tokens, keep_count, rank_tokens, route_weight


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


def test_padding_ranks_last_even_below_negative_scores() -> None:
    scores = torch.tensor([[-5.0, -3.0, -9.0, -1.0]])  # router scores take any sign
    valid = torch.tensor([[True, True, True, False]])
    assert top_tokens(scores, valid, 4).tolist() == [[1, 0, 2, 3]]


def test_route_weight_is_one_at_a_zero_score_and_trains_the_score() -> None:
    scores = torch.tensor([0.0, 2.0, -2.0], requires_grad=True)
    w = route_weight(scores)
    torch.testing.assert_close(w[0], torch.tensor(1.0))
    assert 1.0 < float(w[1].detach()) < 2.0 and 0.0 < float(w[2].detach()) < 1.0
    (grad,) = torch.autograd.grad(w.sum(), scores)
    assert (grad > 0).all()


def test_the_router_learns_from_the_tokens_it_keeps() -> None:
    """Kept tokens' router scores get a gradient through their block update; the dropped
    tokens' do not (they skipped the block)."""
    cfg = get_config("nano", min_keep=2)
    blk = Block(cfg.d_model, cfg.n_heads, cfg.mlp_ratio, cfg.gate_bias)
    router = torch.nn.Linear(cfg.d_model, 1)
    x = torch.randn(3, 8, cfg.d_model)
    (kept, _), (skipped, _) = sampled_block(blk, router, x, None, 4)
    assert kept.shape == (3, 4, cfg.d_model) and skipped.shape == (3, 4, cfg.d_model)
    (kept.sum() + skipped.sum()).backward()
    assert router.weight.grad is not None and float(router.weight.grad.abs().sum()) > 0


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
