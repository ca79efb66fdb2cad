"""Hierarchical encoder: groups, levels, masks, and what each output may depend on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from nb2_agents import get_config
from nb2_agents.nn import encoder as encoder_module
from nb2_agents.nn.config import NB2Config
from nb2_agents.nn.encoder import HierarchicalEncoder, Memory
from nb2_agents.nn.tokenizer import TASK_KEY, Tokenizer, TokenSet


@pytest.fixture(autouse=True)
def _sample_small_observations(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests check what sampling computes on small observations, which the time rule
    (``MIN_SAMPLED_TOKENS``, tested in ``test_sampling.py``) would otherwise switch it off for."""
    monkeypatch.setattr(encoder_module, "MIN_SAMPLED_TOKENS", 1)


NANO = get_config("nano")


def image(shape: tuple[int, ...]) -> spaces.Box:
    return spaces.Box(0, 255, shape, dtype=np.uint8)


def sample_obs(space: spaces.Space, batch: int) -> torch.Tensor | dict[str, torch.Tensor]:
    """Random SB3-preprocessed observations (floats; one-hot for Discrete)."""
    if isinstance(space, spaces.Dict):
        return {k: sample_obs(s, batch) for k, s in space.spaces.items()}  # type: ignore[misc]
    if isinstance(space, spaces.Discrete):
        return torch.eye(int(space.n))[torch.randint(0, int(space.n), (batch,))]
    return torch.rand(batch, *space.shape)


def token_set(space: spaces.Space, cfg: NB2Config, batch: int = 2) -> tuple[Tokenizer, TokenSet]:
    tok = Tokenizer(space, cfg)
    return tok, tok(sample_obs(space, batch))


def perturb_zero_inits(enc: HierarchicalEncoder) -> None:
    """Give the zero-initialised global token, task table and pooling seeds some values."""
    with torch.no_grad():
        enc.global_token.normal_(0, 0.5)
        enc.task_embed.weight.normal_(0, 0.5)
        for level in enc.levels:
            level.pool.seed.normal_(0, 0.5)


# --- the level structure --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_groups", "group_size", "n_levels"),
    [(1, 16, 0), (2, 16, 1), (16, 16, 1), (17, 16, 2), (256, 16, 2), (257, 16, 3), (1000, 16, 3), (63, 2, 6)],
)
def test_levels_cover_every_group_once(n_groups: int, group_size: int, n_levels: int) -> None:
    cfg = NANO.replace(group_size=group_size)
    enc = HierarchicalEncoder(cfg, n_groups, group_size)
    assert enc.single_group == (n_groups == 1)
    assert len(enc.levels) == n_levels
    assert len(enc.level_masks) == max(0, n_levels - 1)
    below = n_groups
    for mask in enc.level_masks:
        n, size = mask.shape
        assert size == group_size
        assert n == math.ceil(below / group_size)
        assert int(mask.sum()) == below  # each summary of the level below in exactly one slot
        flat = mask.flatten()
        assert flat[:below].all() and not flat[below:].any()  # padding only at the end
        assert mask.any(dim=1).all()  # no group of pure padding
        below = n
    assert below <= group_size  # the global stage sees at most one group's worth of summaries


def n_fine(mem: Memory, enc: HierarchicalEncoder, n_groups: int) -> int:
    """Fine tokens at the front of the memory: what is left after the summaries and the top stage."""
    if enc.single_group:
        return mem.tokens.shape[1] - 2
    summaries = [n_groups] + [m.shape[0] for m in enc.level_masks]
    return mem.tokens.shape[1] - sum(summaries[:-1]) - 2 - summaries[-1]


@pytest.mark.parametrize(
    ("space", "cfg", "n_levels"),
    [
        (spaces.Box(-1, 1, (1000,)), NANO.replace(group_size=4), 3),  # 125 tokens, 32 groups -> 8 -> 2
        (spaces.Box(-1, 1, (1000,)), NANO.replace(group_size=2), 6),  # 63 groups -> 32 -> ... -> 2
        (spaces.Box(-1, 1, (1000,)), get_config("small", group_size=4, min_keep=2), 3),  # with sampling
        (image((1, 64, 64)), NANO.replace(group_size=4), 3),  # 256 patches, 64 windows of 2x2 -> 16 -> 4
    ],
    ids=["vec1000-g4", "vec1000-g2", "vec1000-g4-sampling", "image64-g4"],
)
def test_multi_level_runs(space: spaces.Space, cfg: NB2Config, n_levels: int) -> None:
    tok, ts = token_set(space, cfg, batch=3)
    enc = HierarchicalEncoder(cfg, tok.n_groups, tok.group_len)
    assert len(enc.levels) == n_levels > 1
    mem = enc(ts)
    assert isinstance(mem, Memory)
    b, t, c = mem.tokens.shape
    assert (b, c) == (3, cfg.d_model)
    assert mem.global_token.shape == mem.task.shape == (3, cfg.d_model)
    assert torch.isfinite(mem.tokens).all()
    # memory = fine tokens, the summaries of every level but the last, then [global, task, top summaries]
    fine = n_fine(mem, enc, tok.n_groups)
    assert 0 < fine <= tok.n_groups * tok.group_len
    assert fine % tok.n_groups == 0  # every group keeps the same number of slots
    summaries = [tok.n_groups] + [m.shape[0] for m in enc.level_masks]
    torch.testing.assert_close(mem.global_token, mem.tokens[:, fine + sum(summaries[:-1])])
    if mem.mask is not None:
        assert mem.mask.shape[-1] == t
        assert mem.mask[..., fine:].all()  # summaries are never masked


def test_single_group() -> None:
    cfg = get_config("small")  # 2 local layers, 1 global layer: one extra block
    tok, ts = token_set(spaces.Box(-1, 1, (10,)), cfg, batch=4)
    assert tok.n_groups == 1
    enc = HierarchicalEncoder(cfg, tok.n_groups, tok.group_len)
    assert enc.single_group
    assert not enc.sample  # one group: never sampled
    assert len(enc.levels) == 0
    assert len(enc.local_blocks or []) == 1
    mem = enc(ts)
    assert mem.tokens.shape == (4, 2 + 10, cfg.d_model)  # global, task, then the group's tokens
    assert mem.mask is None
    assert mem.kept is None
    torch.testing.assert_close(mem.global_token, mem.tokens[:, 0])
    # nano has as many local as global layers: no extra block
    assert len(HierarchicalEncoder(NANO, 1, 10).local_blocks or []) == 0


@pytest.mark.parametrize(
    ("space", "n_tokens"),
    [(spaces.Box(-1, 1, (40,)), 40), (image((3, 56, 56)), 196)],
    ids=["vector", "image"],
)
def test_flat_attention_is_one_sequence_at_nb2s_depth(space: spaces.Space, n_tokens: int) -> None:
    """``attention: flat``: one group of every token, n_local + n_global blocks, no sampling."""
    cfg = get_config("nano-flat")
    tok, ts = token_set(space, cfg, batch=3)
    assert (tok.n_groups, tok.group_len) == (1, n_tokens)
    enc = HierarchicalEncoder(cfg, tok.n_groups, tok.group_len)
    assert enc.single_group and not enc.sample and len(enc.levels) == 0
    assert len(enc.local_blocks) + len(enc.global_blocks) == cfg.n_local_layers + cfg.n_global_layers
    mem = enc(ts)
    assert mem.tokens.shape == (3, 2 + n_tokens, cfg.d_model) and mem.mask is None
    # every token reaches the global token in one block: full attention, not local groups
    obs = sample_obs(space, 1)
    assert isinstance(obs, torch.Tensor)
    obs.requires_grad_(True)
    enc(tok(obs)).global_token.sum().backward()
    assert obs.grad is not None
    per_token = obs.grad.abs().flatten(1).sum(0)
    assert (per_token > 0).float().mean() > 0.99


def test_flat_attention_masks_the_padding_between_dict_keys() -> None:
    """A Dict's shorter key leaves padded slots in the one sequence: they never reach the output."""
    cfg = get_config("nano-flat")
    space = spaces.Dict({"a": spaces.Box(-1, 1, (5,)), "b": spaces.Box(-1, 1, (20,))})
    tok, ts = token_set(space, cfg, batch=2)
    assert (tok.n_groups, tok.group_len) == (2, 20)
    enc = HierarchicalEncoder(cfg, tok.n_groups, tok.group_len)
    perturb_zero_inits(enc)
    mem = enc(ts)
    assert mem.mask is not None and int(mem.mask.sum()) == 2 + 25
    garbage = ts.tokens.clone()
    garbage[:, 0, 5:] = 100.0  # the padded slots of key "a"
    again = enc(TokenSet(garbage, ts.mask, None, ts.full))
    torch.testing.assert_close(again.global_token, mem.global_token)


def test_memory_mask_marks_padding() -> None:
    cfg = NANO.replace(sampling=False)
    tok, ts = token_set(spaces.Box(-1, 1, (20,)), cfg)  # 2 groups of 16, 12 padded slots
    assert not ts.full
    enc = HierarchicalEncoder(cfg, tok.n_groups, tok.group_len)
    mem = enc(ts)
    assert mem.mask is not None
    assert n_fine(mem, enc, tok.n_groups) == 32
    assert torch.equal(mem.mask.expand(2, -1)[0, :32], ts.mask.flatten())
    assert mem.mask.expand(2, -1)[:, 32:].all()
    # nothing padded: no mask at all
    tok, ts = token_set(spaces.Box(-1, 1, (32,)), cfg)
    assert ts.full
    assert HierarchicalEncoder(cfg, tok.n_groups, tok.group_len)(ts).mask is None


# --- dependencies: real tokens count, padding never, groups stay separate -------------------------

DEPENDENCY_CASES = {
    "vec20-padded": (spaces.Box(-1, 1, (20,)), NANO),
    "vec1000-multilevel": (spaces.Box(-1, 1, (1000,)), NANO.replace(group_size=4)),
    "vec200-small": (spaces.Box(-1, 1, (200,)), get_config("small")),
    "image-36x36-windows": (image((3, 36, 36)), NANO),
    "dict-task-id": (
        spaces.Dict(
            {"vec": spaces.Box(-1, 1, (20,)), "img": image((1, 12, 12)), TASK_KEY: spaces.Discrete(3)}
        ),
        NANO,
    ),
}


def global_token_grad(enc: HierarchicalEncoder, ts: TokenSet) -> tuple[torch.Tensor, Memory]:
    """|d global_token / d token| per token slot, (B, g, G)."""
    tokens = ts.tokens.detach().clone().requires_grad_(True)
    mem = enc(TokenSet(tokens, ts.mask, ts.task_ids, ts.full))
    (mem.global_token * torch.randn_like(mem.global_token)).sum().backward()
    assert tokens.grad is not None
    return tokens.grad.abs().sum(dim=-1), mem


@pytest.mark.parametrize("name", list(DEPENDENCY_CASES))
def test_every_real_token_reaches_the_global_token_and_padding_never(name: str) -> None:
    space, cfg = DEPENDENCY_CASES[name]
    cfg = cfg.replace(sampling=False)
    tok, ts = token_set(space, cfg, batch=2)
    enc = HierarchicalEncoder(cfg, tok.n_groups, tok.group_len)
    perturb_zero_inits(enc)
    per_slot, _ = global_token_grad(enc, ts)
    assert (per_slot[:, ts.mask] > 0).all(), "a real token does not reach the global token"
    assert (per_slot[:, ~ts.mask] == 0).all(), "padding leaks into the global token"


@pytest.mark.parametrize("name", list(DEPENDENCY_CASES))
def test_with_sampling_every_real_token_still_reaches_the_global_token(name: str) -> None:
    """Sampling drops tokens after the first block has read them as keys: every real token
    still reaches the global token, padding never does, and the memory holds K per group."""
    space, cfg = DEPENDENCY_CASES[name]
    if cfg.group_size <= cfg.min_keep:  # groups of 4: sample them down to 2
        cfg = cfg.replace(min_keep=2)
    tok, ts = token_set(space, cfg, batch=3)
    enc = HierarchicalEncoder(cfg, tok.n_groups, tok.group_len)
    assert enc.sample and enc.keep < tok.group_len
    perturb_zero_inits(enc)
    per_slot, mem = global_token_grad(enc, ts)
    assert (per_slot[:, ts.mask] > 0).all(), "a dropped token never reached the global token"
    assert (per_slot[:, ~ts.mask] == 0).all(), "padding leaks into the global token"
    assert n_fine(mem, enc, tok.n_groups) == tok.n_groups * enc.keep
    assert mem.kept is not None and mem.kept.shape == (3,)
    real_kept = ts.mask.sum(dim=-1).clamp(max=enc.keep).sum()  # padding ranks last: real first
    torch.testing.assert_close(mem.kept, (real_kept / tok.n_tokens).expand(3))


@pytest.mark.parametrize(
    ("space", "cfg"),
    [
        (spaces.Box(-1, 1, (20,)), NANO),
        (spaces.Box(-1, 1, (1000,)), NANO.replace(group_size=4)),
        (image((1, 36, 36)), NANO),
    ],
    ids=["vec20", "vec1000-g4", "image36"],
)
def test_local_attention_stays_inside_each_group(space: spaces.Space, cfg: NB2Config) -> None:
    """Level-0 outputs of group g depend on the real tokens of group g only (sampling off)."""
    cfg = cfg.replace(sampling=False)
    tok, ts = token_set(space, cfg, batch=1)
    enc = HierarchicalEncoder(cfg, tok.n_groups, tok.group_len)
    tokens = ts.tokens.detach().clone().requires_grad_(True)
    mem = enc(TokenSet(tokens, ts.mask, ts.task_ids, ts.full))
    g, G = ts.mask.shape
    fine = mem.tokens[:, : g * G].view(1, g, G, -1)
    for group in range(g):
        (grad,) = torch.autograd.grad(
            (fine[:, group][:, ts.mask[group]] * 1.7).sum(), tokens, retain_graph=True, allow_unused=False
        )
        touched = grad.abs().sum(dim=-1)[0] > 0  # (g, G)
        expected = torch.zeros_like(ts.mask)
        expected[group] = ts.mask[group]
        assert torch.equal(touched, expected), f"group {group}"


@pytest.mark.parametrize("preset", ["nano", "small"])
def test_tokens_that_sampling_drops_still_enter_their_group_summary(preset: str) -> None:
    """The dropped tokens skip level 0's blocks as they are and are pooled with the kept ones.
    So with every level-0 block at the identity (gates closed), the summaries with sampling are
    the summaries without it, though the fine memory keeps half the tokens."""
    cfg = get_config(preset)
    tok, ts = token_set(image((3, 7, 7)), cfg, batch=3)  # a MiniGrid view: 4 windows of 16
    on = HierarchicalEncoder(cfg, tok.n_groups, tok.group_len)
    perturb_zero_inits(on)
    with torch.no_grad():
        for blk in on.level_list[0].blocks:
            blk.gate_attn.logit.fill_(-1e4)  # sigmoid: 0, the block is the identity
            blk.gate_mlp.logit.fill_(-1e4)
    off = HierarchicalEncoder(cfg.replace(sampling=False), tok.n_groups, tok.group_len)
    off.load_state_dict(on.state_dict(), strict=False)  # all but the router
    assert on.sample and not off.sample
    mem_on, mem_off = on(ts), off(ts)
    n_on, n_off = n_fine(mem_on, on, tok.n_groups), n_fine(mem_off, off, tok.n_groups)
    assert n_on == tok.n_groups * on.keep < n_off
    torch.testing.assert_close(mem_on.tokens[:, n_on:], mem_off.tokens[:, n_off:])  # summaries, top
    torch.testing.assert_close(mem_on.global_token, mem_off.global_token)


def test_sampling_keeps_a_subset() -> None:
    cfg = get_config("small")
    tok, ts = token_set(spaces.Box(-1, 1, (200,)), cfg, batch=3)  # 13 groups of 16 > min_keep
    enc = HierarchicalEncoder(cfg, tok.n_groups, tok.group_len)
    assert enc.sample
    mem = enc(ts)
    fine = n_fine(mem, enc, tok.n_groups)
    assert fine < tok.n_groups * tok.group_len
    assert mem.kept is not None and mem.kept.shape == (3,)
    assert ((mem.kept > 0) & (mem.kept < 1)).all()
    kept_slots = torch.full((3,), fine) if mem.mask is None else mem.mask.expand(3, -1)[:, :fine].sum(dim=1)
    torch.testing.assert_close(kept_slots.float(), mem.kept * tok.n_tokens)


@pytest.mark.parametrize(
    ("space", "cfg"),
    [
        (spaces.Box(-1, 1, (200,)), get_config("small", sampling=False)),  # switched off
        (spaces.Box(-1, 1, (12,)), NANO),  # one group
        (spaces.Box(-1, 1, (40,)), NANO.replace(min_keep=16)),  # groups no larger than min_keep
    ],
    ids=["off", "single-group", "small-groups"],
)
def test_no_sampling(space: spaces.Space, cfg: NB2Config) -> None:
    tok, ts = token_set(space, cfg)
    enc = HierarchicalEncoder(cfg, tok.n_groups, tok.group_len)
    assert not enc.sample
    mem = enc(ts)
    assert mem.kept is None
    if not enc.single_group:
        assert n_fine(mem, enc, tok.n_groups) == tok.n_groups * tok.group_len


def test_task_token() -> None:
    space = spaces.Dict({"vec": spaces.Box(-1, 1, (6,)), TASK_KEY: spaces.Discrete(3)})
    tok = Tokenizer(space, NANO)
    enc = HierarchicalEncoder(NANO, tok.n_groups, tok.group_len)
    vec = torch.randn(1, 6).expand(3, 6)
    ts = tok({"vec": vec, TASK_KEY: torch.eye(3)})
    perturb_zero_inits(enc)
    mem = enc(ts)
    torch.testing.assert_close(mem.task, enc.task_embed.weight[:3])
    assert not torch.allclose(mem.global_token[0], mem.global_token[1])
    # no task ids: task 0
    plain = enc(TokenSet(ts.tokens, ts.mask, None, ts.full))
    task0 = enc(TokenSet(ts.tokens, ts.mask, torch.zeros(3, dtype=torch.long), ts.full))
    torch.testing.assert_close(plain.tokens, task0.tokens)


def test_sampling_says_why_it_is_off() -> None:
    """Asked for but unable to drop anything, sampling switches itself off and says why."""
    cfg = NANO.replace(sampling=True)
    assert HierarchicalEncoder(cfg, 4, 16).sampling_off is None  # groups of 16: it runs
    assert "groups of 7 tokens" in str(HierarchicalEncoder(cfg, 7, 7).sampling_off)
    assert "single group" in str(HierarchicalEncoder(cfg, 1, 10).sampling_off)
    assert "flat" in str(HierarchicalEncoder(cfg.replace(attention="flat"), 4, 16).sampling_off)
    assert HierarchicalEncoder(NANO.replace(sampling=False), 7, 7).sampling_off is None  # not asked


@pytest.mark.parametrize("preset", ["nano", "small"])
def test_pooling_with_the_projections_folded_is_the_attention_read(preset: str) -> None:
    """``Pool`` folds its key and value projections out of the per-token work: the summaries and
    their gradients are those of the plain single-query attention, with and without padding."""
    cfg = get_config(preset)
    pool = encoder_module.Pool(cfg)
    with torch.no_grad():
        for p in pool.parameters():  # away from the zero-init query, which reads every token alike
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(12, 16, cfg.d_model, requires_grad=True)
    valid = torch.rand(12, 16) > 0.4
    valid[:, 0] = True
    for key_mask in (None, valid[:, None, None, :]):
        folded = pool(x, key_mask)
        (g_folded,) = torch.autograd.grad(folded.square().sum(), x)
        k, v = pool.attn.keys_values(pool.ln(x))  # the attention itself, unfolded
        plain = encoder_module.masked_mean(x, key_mask) + pool.attn(pool.query(12), k, v, key_mask)
        (g_plain,) = torch.autograd.grad(plain.square().sum(), x)
        torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-5)
        scale = float(g_plain.abs().max())  # float32 sums in another order
        torch.testing.assert_close(g_folded, g_plain, rtol=1e-4, atol=1e-5 * scale)
