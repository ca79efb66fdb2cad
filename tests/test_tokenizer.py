"""Tokenizer: every observation space SB3 accepts becomes grouped tokens with a static keep-mask."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs

from nb2_agents import NB2, get_config
from nb2_agents.nn.tokenizer import TASK_KEY, Tokenizer, check_observation_space

CFG = get_config("nano")  # d_model 32, group_size 16, max_vector_tokens 64, chunk_size 8
C = CFG.d_model


def image(shape: tuple[int, ...]) -> spaces.Box:
    return spaces.Box(0, 255, shape, dtype=np.uint8)


def tokenize(space: spaces.Space, batch: int = 3, cfg=CFG):
    """Tokenizer for ``space`` and its TokenSet for ``batch`` sampled, SB3-preprocessed observations."""
    tok = Tokenizer(space, cfg)
    if isinstance(space, spaces.Dict):
        raw = {k: np.stack([space[k].sample() for _ in range(batch)]) for k in space.spaces}
        obs = {k: torch.as_tensor(v) for k, v in raw.items()}
    else:
        obs = torch.as_tensor(np.stack([space.sample() for _ in range(batch)]))
    return tok, tok(preprocess_obs(obs, space))


# (space, n_tokens, n_groups, group_len)
SPACES = {
    "box-short": (spaces.Box(-1, 1, (5,)), 5, 1, 5),
    "box-2d": (spaces.Box(-1, 1, (3, 4)), 12, 1, 12),
    "box-one-group-exactly": (spaces.Box(-1, 1, (16,)), 16, 1, 16),
    "box-two-groups": (spaces.Box(-1, 1, (20,)), 20, 2, 16),
    "box-at-max-vector-tokens": (spaces.Box(-1, 1, (64,)), 64, 4, 16),
    # longer than max_vector_tokens: chunks of 8 scalars, ceil(100 / 8) = 13 tokens
    "box-long-chunked": (spaces.Box(-1, 1, (100,)), 13, 1, 13),
    "box-1000-chunked": (spaces.Box(-1, 1, (1000,)), 125, 8, 16),
    # 36x36: auto patch 4 gives 9x9 = 81 patches in 3x3 windows of 4x4 patches
    "box-float-3d-is-a-vector": (spaces.Box(0, 255, (4, 4, 3)), 48, 3, 16),
    "image-hwc": (image((36, 36, 3)), 81, 9, 16),
    "image-chw": (image((1, 36, 36)), 81, 9, 16),
    "image-small-one-window": (image((4, 4, 3)), 16, 1, 16),
    "discrete": (spaces.Discrete(5), 1, 1, 1),
    "multidiscrete": (spaces.MultiDiscrete([3, 4, 2]), 3, 1, 3),
    "multidiscrete-many": (spaces.MultiDiscrete([2] * 20), 20, 2, 16),
    "multibinary": (spaces.MultiBinary(7), 7, 1, 7),
    "multibinary-2d": (spaces.MultiBinary((2, 3)), 6, 1, 6),
    "dict": (
        spaces.Dict(
            {
                "vec": spaces.Box(-1, 1, (20,)),  # 2 groups of 16
                "img": image((1, 36, 36)),  # 9 windows of 16
                "cat": spaces.MultiDiscrete([3, 3]),  # 1 group of 2
                "bits": spaces.MultiBinary(4),  # 1 group of 4
                "d": spaces.Discrete(6),  # 1 group of 1
            }
        ),
        20 + 81 + 2 + 4 + 1,
        2 + 9 + 1 + 1 + 1,
        16,
    ),
    "dict-with-task-id": (
        spaces.Dict({"vec": spaces.Box(-1, 1, (6,)), TASK_KEY: spaces.Discrete(4)}),
        6,
        1,
        6,
    ),
}


@pytest.mark.parametrize("name", list(SPACES))
def test_shapes_and_mask(name: str) -> None:
    space, n_tokens, n_groups, group_len = SPACES[name]
    tok, ts = tokenize(space, batch=3)
    assert (tok.n_tokens, tok.n_groups, tok.group_len) == (n_tokens, n_groups, group_len)
    assert ts.tokens.shape == (3, n_groups, group_len, C)
    assert ts.tokens.dtype == torch.float32
    assert ts.mask.shape == (n_groups, group_len)
    assert ts.mask.dtype == torch.bool
    assert int(ts.mask.sum()) == tok.n_tokens
    assert ts.full == bool(ts.mask.all())
    # every group holds at least one real token
    assert ts.mask.any(dim=1).all()
    assert torch.isfinite(ts.tokens).all()


def test_task_id_is_not_tokenized() -> None:
    space, *_ = SPACES["dict-with-task-id"]
    tok = Tokenizer(space, CFG)
    assert tok.keys == ["vec"]
    obs = {"vec": torch.randn(4, 6), TASK_KEY: torch.eye(4)[torch.tensor([2, 0, 3, 1])]}
    ts = tok(obs)
    assert ts.task_ids is not None
    assert ts.task_ids.tolist() == [2, 0, 3, 1]
    # without a task_id key there are no task ids (the encoder uses task 0)
    assert tokenize(spaces.Box(-1, 1, (3,)))[1].task_ids is None


def test_task_id_as_stored_by_sb3_buffers() -> None:
    space, *_ = SPACES["dict-with-task-id"]
    tok = Tokenizer(space, CFG)
    obs = {"vec": torch.randn(3, 6), TASK_KEY: torch.tensor([[2], [0], [3]])}  # (B, 1), as buffers give
    ts = tok(preprocess_obs(obs, space))
    assert ts.task_ids is not None
    assert ts.task_ids.tolist() == [2, 0, 3]


def test_task_id_that_is_not_discrete_is_an_ordinary_key() -> None:
    space = spaces.Dict({"vec": spaces.Box(-1, 1, (3,)), TASK_KEY: spaces.Box(-1, 1, (2,))})
    tok, ts = tokenize(space)
    assert tok.task_key is None
    assert tok.n_tokens == 5
    assert ts.task_ids is None


def test_too_many_task_ids() -> None:
    space = spaces.Dict({"vec": spaces.Box(-1, 1, (3,)), TASK_KEY: spaces.Discrete(CFG.max_tasks + 1)})
    with pytest.raises(ValueError, match="max_tasks"):
        Tokenizer(space, CFG)
    Tokenizer(space, CFG.replace(max_tasks=CFG.max_tasks + 1))


def test_dict_of_task_id_only() -> None:
    with pytest.raises(TypeError, match=TASK_KEY):
        Tokenizer(spaces.Dict({TASK_KEY: spaces.Discrete(3)}), CFG)


# --- grouping: every real token in exactly one slot, padding only in masked slots -----------------


def _ids(ts_tokens: torch.Tensor, mask: torch.Tensor, channel: int = 0) -> tuple[list[float], torch.Tensor]:
    """Values of ``channel`` in the real slots (row 0) and the tokens of the padded slots."""
    tokens = ts_tokens[0]  # (g, G, C)
    return tokens[mask][:, channel].tolist(), tokens[~mask]


@pytest.mark.parametrize("size", [5, 16, 20, 64, 100, 1000, 1001])
def test_vector_grouping_covers_each_scalar_once(size: int) -> None:
    tok = Tokenizer(spaces.Box(-1, 1, (size,)), CFG)
    seg = tok.segments[0]
    with torch.no_grad():
        # token n, channel k = scalar n * chunk + k (value projection = identity, no feature id)
        seg.weight.zero_()
        for k in range(seg.chunk):
            seg.weight[:, k, k] = 1.0
        seg.feature.zero_()
        x = torch.arange(1, size + 1, dtype=torch.float32).unsqueeze(0)
        ts = tok(x)
    real = ts.tokens[0][ts.mask]  # (n_tokens, C) in order
    assert real.shape[0] == math.ceil(size / seg.chunk)
    values = real[:, : seg.chunk].flatten()
    values = values[values != 0]
    assert sorted(values.tolist()) == list(range(1, size + 1))  # each scalar exactly once
    # contiguous groups: token order is scalar order
    assert values.tolist() == list(range(1, size + 1))
    assert (ts.tokens[0][~ts.mask] == 0).all()


@pytest.mark.parametrize("nvec", [[5], [3, 4, 2], [2] * 20])
def test_categorical_tokens_read_their_own_dimension(nvec: list[int]) -> None:
    space = spaces.MultiDiscrete(nvec) if len(nvec) > 1 else spaces.Discrete(nvec[0])
    tok = Tokenizer(space, CFG)
    seg = tok.segments[0]
    with torch.no_grad():
        seg.feature.zero_()
        seg.table.zero_()
        seg.table[:, 0] = torch.arange(1, sum(nvec) + 1, dtype=torch.float32)  # row r -> id r + 1
    values = np.array([n - 1 for n in nvec]) if len(nvec) > 1 else np.array(nvec[0] - 1)
    obs = torch.as_tensor(values).unsqueeze(0)
    ts = tok(preprocess_obs(obs, space))
    offsets = np.concatenate([[0], np.cumsum(nvec)])[:-1]
    real, padded = _ids(ts.tokens, ts.mask)
    assert real == [float(o + n) for o, n in zip(offsets, nvec, strict=True)]
    assert (padded == 0).all()


@pytest.mark.parametrize(
    ("shape", "patch"),
    [((36, 36, 3), 4), ((1, 36, 36), 4), ((64, 64, 1), 4), ((3, 20, 28), 2), ((12, 12, 3), 1)],
)
def test_each_patch_lands_in_exactly_one_window(shape: tuple[int, int, int], patch: int) -> None:
    space = image(shape)
    tok = Tokenizer(space, CFG)
    seg = tok.segments[0]
    chw = shape[0] < shape[2]
    h, w = (shape[1], shape[2]) if chw else (shape[0], shape[1])
    hp, wp = h // patch, w // patch
    assert (seg.hp, seg.wp) == (hp, wp)
    with torch.no_grad():
        # token of patch (i, j) = (i + 1, j + 1) in channels 0 and 1
        seg.proj.weight.zero_()
        seg.proj.bias.zero_()
        seg.row.zero_()
        seg.col.zero_()
        seg.row[:, 0, 0] = torch.arange(1, hp + 1, dtype=torch.float32)
        seg.col[0, :, 1] = torch.arange(1, wp + 1, dtype=torch.float32)
        ts = tok(torch.zeros(1, *shape))
    tokens = ts.tokens[0]  # (windows, G, C)
    assert int(ts.mask.sum()) == hp * wp
    seen = {}
    for g in range(tokens.shape[0]):
        for slot in range(tokens.shape[1]):
            i, j = int(tokens[g, slot, 0]), int(tokens[g, slot, 1])
            if not ts.mask[g, slot]:
                assert (i, j) == (0, 0), "padding must be empty"
                continue
            assert (i - 1, j - 1) not in seen, "a patch appears twice"
            seen[(i - 1, j - 1)] = g
    assert set(seen) == {(i, j) for i in range(hp) for j in range(wp)}
    if seg.win:  # square windows of win x win patches
        s = seg.win
        windows_per_row = math.ceil(wp / s)
        for (i, j), g in seen.items():
            assert g == (i // s) * windows_per_row + j // s
    else:
        assert tokens.shape[0] == 1


@pytest.mark.parametrize(
    "shape",
    [
        (36, 36, 3),
        (1, 64, 64),
        pytest.param((84, 84, 1), id="atari-84x84"),
        pytest.param((3, 50, 50), id="50x50"),
    ],
)
def test_every_pixel_reaches_a_token(shape: tuple[int, int, int]) -> None:
    tok = Tokenizer(image(shape), CFG)
    img = torch.rand(1, *shape, requires_grad=True)
    ts = tok(img)
    ts.tokens[:, ts.mask].pow(2).sum().backward()
    assert img.grad is not None
    chw = shape[0] < shape[2]
    per_pixel = img.grad[0].abs().sum(dim=0 if chw else 2)  # (H, W)
    dead = (per_pixel == 0).nonzero().tolist()
    assert not dead, f"{len(dead)} pixels never reach a token, e.g. {dead[:3]}"


@pytest.mark.parametrize("side", [7, 8, 16, 17, 31, 36, 64, 84, 96, 128, 210])
@pytest.mark.parametrize("max_image_tokens", [64, 256])
def test_auto_patch_respects_max_image_tokens(side: int, max_image_tokens: int) -> None:
    cfg = CFG.replace(max_image_tokens=max_image_tokens)
    tok = Tokenizer(image((side, side, 3)), cfg)
    seg = tok.segments[0]
    patch = seg.proj.kernel_size[0]
    assert patch & (patch - 1) == 0  # a power of two
    assert tok.n_tokens <= max_image_tokens
    if patch > 1:  # the smallest such power of two
        assert math.ceil(side / (patch // 2)) ** 2 > max_image_tokens


def test_explicit_patch_size() -> None:
    tok = Tokenizer(image((3, 36, 36)), CFG.replace(patch_size=6))
    assert tok.segments[0].proj.kernel_size == (6, 6)
    assert tok.n_tokens == 36
    with pytest.raises(ValueError, match="larger than the 36x36 image"):
        Tokenizer(image((3, 36, 36)), CFG.replace(patch_size=64))


def test_hwc_and_chw_images_give_the_same_tokens() -> None:
    hwc, chw = Tokenizer(image((36, 36, 3)), CFG), Tokenizer(image((3, 36, 36)), CFG)
    chw.load_state_dict(hwc.state_dict())
    img = torch.rand(2, 36, 36, 3)
    a, b = hwc(img), chw(img.permute(0, 3, 1, 2))
    torch.testing.assert_close(a.tokens, b.tokens)
    assert torch.equal(a.mask, b.mask)


def test_dict_grouping_each_key_forms_its_own_groups() -> None:
    space, *_ = SPACES["dict"]
    tok = Tokenizer(space, CFG)
    masks = [seg.mask for seg in tok.segments]
    # key order, each key's groups padded to the widest group
    row = 0
    for m in masks:
        g, w = m.shape
        assert torch.equal(tok.mask[row : row + g, :w], m)
        assert not tok.mask[row : row + g, w:].any()
        row += g
    assert row == tok.n_groups
    # a key's tokens only move the groups of that key
    obs = {k: torch.as_tensor(np.stack([space[k].sample() for _ in range(2)])) for k in space.spaces}
    base = tok(preprocess_obs(obs, space)).tokens
    changed = dict(obs)
    changed["cat"] = (obs["cat"] + 1) % 3
    diff = (tok(preprocess_obs(changed, space)).tokens - base).abs().sum(dim=(0, 2, 3))  # per group
    # gymnasium sorts a Dict's keys; find the group of "cat"
    i = tok.keys.index("cat")
    cat_group = sum(int(seg.n_groups) for seg in tok.segments[:i])
    assert tok.segments[i].n_groups == 1
    assert diff[cat_group] > 0
    assert (diff[torch.arange(tok.n_groups) != cat_group] == 0).all()


def test_dict_keys_get_distinct_key_embeddings() -> None:
    tok = Tokenizer(spaces.Dict({"a": spaces.Box(-1, 1, (3,)), "b": spaces.Box(-1, 1, (3,))}), CFG)
    tok.segments[1].load_state_dict(tok.segments[0].state_dict())
    ts = tok({"a": torch.ones(1, 3), "b": torch.ones(1, 3)})
    assert not torch.allclose(ts.tokens[0, 0], ts.tokens[0, 1])


# --- unsupported spaces ---------------------------------------------------------------------------

UNSUPPORTED = {
    "sequence": (spaces.Sequence(spaces.Discrete(3)), "Sequence"),
    "graph": (spaces.Graph(spaces.Box(0, 1, (2,)), None), "Graph"),
    "tuple": (spaces.Tuple((spaces.Discrete(2), spaces.Box(0, 1, (2,)))), "Tuple"),
    "text": (spaces.Text(5), "Text"),
    "oneof": (spaces.OneOf((spaces.Discrete(2), spaces.Box(0, 1, (2,)))), "OneOf"),
    "nested-dict": (spaces.Dict({"a": spaces.Dict({"b": spaces.Discrete(2)})}), "nested Dict"),
    "dict-of-tuple": (spaces.Dict({"a": spaces.Tuple((spaces.Discrete(2),))}), "nested Tuple"),
    "dict-of-sequence": (
        spaces.Dict({"x": spaces.Box(0, 1, (2,)), "s": spaces.Sequence(spaces.Discrete(3))}),
        "Sequence",
    ),
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_unsupported_space_raises_type_error_naming_it(name: str) -> None:
    space, kind = UNSUPPORTED[name]
    for build in (check_observation_space, lambda s: Tokenizer(s, CFG), lambda s: NB2(s, CFG)):
        with pytest.raises(TypeError) as info:
            build(space)
        msg = str(info.value)
        assert kind in msg
        assert "Supported" in msg and "MultiDiscrete" in msg
        if isinstance(space, spaces.Dict):
            key = next(k for k, s in space.spaces.items() if not isinstance(s, spaces.Box))
            assert repr(key) in msg


@pytest.mark.parametrize(
    "space",
    [s for s, *_ in SPACES.values()],
    ids=list(SPACES),
)
def test_supported_spaces_pass_the_check(space: spaces.Space) -> None:
    check_observation_space(space)


# --- NaN / Inf observations -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_vector_names_feature(bad: float) -> None:
    net = NB2(spaces.Box(-1, 1, (5,)), CFG)
    obs = torch.zeros(3, 5)
    obs[1, 3] = bad
    with torch.no_grad(), pytest.raises(ValueError) as info:
        net(obs)
    msg = str(info.value)
    assert "feature 3" in msg
    assert "batch row 1" in msg
    assert str(bad) in msg
    assert "check_finite=False" in msg


def test_non_finite_dict_names_key_and_feature() -> None:
    space = spaces.Dict(
        {"a": spaces.Box(-1, 1, (3,)), "b": spaces.Box(-1, 1, (2, 4)), "c": spaces.Discrete(3)}
    )
    net = NB2(space, CFG)
    obs = {"a": torch.zeros(2, 3), "b": torch.zeros(2, 2, 4), "c": torch.eye(3)[:2]}
    obs["b"][0, 1, 2] = float("inf")
    with torch.no_grad(), pytest.raises(ValueError) as info:
        net(obs)
    msg = str(info.value)
    assert "'b'" in msg
    assert "(1, 2)" in msg
    assert "'a'" not in msg


def test_check_finite_false_disables_the_check() -> None:
    net = NB2(spaces.Box(-1, 1, (5,)), CFG, check_finite=False)
    obs = torch.zeros(2, 5)
    obs[0, 0] = float("nan")
    with torch.no_grad():
        out = net(obs)
    assert out.shape == (2, 2, C)


def test_finite_check_only_without_autograd() -> None:
    """Updates re-read observations already checked during rollouts: no check with autograd on."""
    net = NB2(spaces.Box(-1, 1, (5,)), CFG)
    obs = torch.zeros(2, 5)
    obs[0, 0] = float("nan")
    net(obs)  # grad enabled: no ValueError
    with torch.inference_mode(), pytest.raises(ValueError):
        net(obs)
