"""Adaptive token sampling primitives: significance, deterministic selection, gathering."""

from __future__ import annotations

import pytest
import torch

from nb2_agents.nn.sampling import gather_tokens, select_tokens, significance


def kept_sets(index: torch.Tensor, keep: torch.Tensor) -> list[list[int]]:
    return [index[b][keep[b]].tolist() for b in range(index.shape[0])]


@pytest.mark.parametrize(
    ("keep_mass", "min_keep", "expected"),
    [
        (0.7, 1, [0, 1]),  # 0.5 + 0.3 covers 0.7
        (0.5, 1, [0]),  # the first token alone covers 0.5
        (0.85, 1, [0, 1, 2]),
        (1.0, 1, [0, 1, 2, 3]),
        (0.1, 3, [0, 1, 2]),  # never fewer than min_keep
        (0.1, 10, [0, 1, 2, 3]),  # min_keep above the token count keeps everything
    ],
)
def test_select_tokens_keep_mass_and_min_keep(keep_mass: float, min_keep: int, expected: list[int]) -> None:
    scores = torch.tensor([[0.5, 0.3, 0.1, 0.1]])
    index, keep = select_tokens(scores, None, keep_mass, min_keep)
    assert kept_sets(index, keep) == [expected]


def test_select_tokens_most_significant_first() -> None:
    scores = torch.tensor([[0.1, 0.4, 0.2, 0.3]])
    index, keep = select_tokens(scores, None, 1.0, 1)
    assert index.tolist() == [[1, 3, 2, 0]]
    assert keep.all()


def test_select_tokens_never_keeps_invalid() -> None:
    scores = torch.tensor([[0.9, 0.05, 0.05, 0.7]])
    valid = torch.tensor([[False, True, True, True]])
    index, keep = select_tokens(scores, valid, 0.5, 3)
    assert sorted(kept_sets(index, keep)[0]) == [1, 2, 3]
    # a static (1, N) mask broadcasts over the batch
    index, keep = select_tokens(scores.expand(2, 4), valid[0:1], 0.5, 1)
    assert kept_sets(index, keep) == [[3], [3]]


def test_select_tokens_rows_do_not_depend_on_their_batch() -> None:
    torch.manual_seed(1)
    peaked = torch.softmax(torch.randn(1, 32) * 4, dim=-1)  # keeps few
    flat = torch.rand(1, 32) + 1.0  # keeps many
    alone = [kept_sets(*select_tokens(row, None, 0.9, 2))[0] for row in (peaked, flat)]
    index, keep = select_tokens(torch.cat([peaked, flat]), None, 0.9, 2)
    assert len(alone[0]) < len(alone[1]) == index.shape[1]
    assert kept_sets(index, keep) == alone
    # the padding of the shorter row is masked, at the end
    assert keep[0].tolist() == [True] * len(alone[0]) + [False] * (index.shape[1] - len(alone[0]))


def test_select_tokens_is_deterministic_with_ties() -> None:
    scores = torch.ones(3, 10)
    results = [select_tokens(scores, None, 0.45, 2) for _ in range(3)]
    for index, keep in results[1:]:
        assert torch.equal(index, results[0][0]) and torch.equal(keep, results[0][1])
    assert kept_sets(*results[0]) == [[0, 1, 2, 3, 4]] * 3  # stable: ties keep their order


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
    # no autograd through the choice
    q.requires_grad_(True)
    assert not significance(q, k, v, None).requires_grad


def test_gather() -> None:
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    index = torch.tensor([[4, 0], [1, 1]])
    out = gather_tokens(x, index)
    assert out.shape == (2, 2, 3)
    assert torch.equal(out[0, 0], x[0, 4]) and torch.equal(out[1, 1], x[1, 1])
