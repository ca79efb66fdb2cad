"""The NB2 network end to end: gradients, initialisation, deterministic token sampling, presets."""

from __future__ import annotations

import dataclasses
import math
from typing import cast

import numpy as np
import pytest
import torch
from gymnasium import spaces

from nb2_agents import NB2, PRESETS, NB2Config, get_config
from nb2_agents.nn import encoder as encoder_module
from nb2_agents.nn.blocks import MLP, GatedResidual
from nb2_agents.nn.dormant import dormant_fraction
from nb2_agents.nn.model import preset_param_counts
from nb2_agents.nn.probes import kept_share, recording
from nb2_agents.nn.tokenizer import TASK_KEY


@pytest.fixture(autouse=True)
def _sample_small_observations(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests check what sampling computes on small observations, which the time rule
    (``MIN_SAMPLED_TOKENS``, tested in ``test_sampling.py``) would otherwise switch it off for."""
    monkeypatch.setattr(encoder_module, "MIN_SAMPLED_TOKENS", 1)


def image(shape: tuple[int, ...]) -> spaces.Box:
    return spaces.Box(0, 255, shape, dtype=np.uint8)


def sample_obs(space: spaces.Space, batch: int, scale: torch.Tensor | None = None):
    """Random SB3-preprocessed observations; ``scale`` (B, 1) varies Box vectors per row."""
    if isinstance(space, spaces.Dict):
        return {k: sample_obs(s, batch, scale) for k, s in space.spaces.items()}
    if isinstance(space, spaces.Discrete):
        return torch.eye(int(space.n))[torch.randint(0, int(space.n), (batch,))]
    if isinstance(space, spaces.MultiDiscrete):
        return torch.cat([torch.eye(int(n))[torch.randint(0, int(n), (batch,))] for n in space.nvec], dim=1)
    if isinstance(space, spaces.MultiBinary):
        return torch.randint(0, 2, (batch, *space.shape)).float()
    if space.dtype == np.uint8:
        return torch.rand(batch, *space.shape)  # images after SB3's division by 255
    x = torch.randn(batch, *space.shape)
    if scale is not None:
        x = x * scale.view(batch, *([1] * len(space.shape)))
    return x


def rows(obs, idx):
    if isinstance(obs, dict):
        return {k: v[idx] for k, v in obs.items()}
    return obs[idx]


DICT_SPACE = spaces.Dict(
    {
        "vec": spaces.Box(-1, 1, (20,)),
        "img": image((1, 12, 12)),
        "cat": spaces.MultiDiscrete([3, 4]),
        "bits": spaces.MultiBinary(5),
        "d": spaces.Discrete(4),
        TASK_KEY: spaces.Discrete(3),
    }
)

# name -> (space, config)
CASES = {
    "vec4-nano-single-group": (spaces.Box(-1, 1, (4,)), get_config("nano")),
    "vec10-small-single-group": (spaces.Box(-1, 1, (10,)), get_config("small")),
    "vec40-nano": (spaces.Box(-1, 1, (40,)), get_config("nano")),
    "vec200-small-group-sampling": (spaces.Box(-1, 1, (200,)), get_config("small")),
    "vec1000-nano-multilevel": (spaces.Box(-1, 1, (1000,)), get_config("nano", group_size=4)),
    "image-hwc-nano": (image((36, 36, 3)), get_config("nano")),
    "image-chw-small": (image((1, 36, 36)), get_config("small")),
    "multidiscrete-nano": (spaces.MultiDiscrete([3] * 20), get_config("nano")),
    "multibinary-nano": (spaces.MultiBinary(24), get_config("nano")),
    "discrete-nano": (spaces.Discrete(5), get_config("nano")),
    "dict-task-nano": (DICT_SPACE, get_config("nano")),
    "dict-task-base": (DICT_SPACE, get_config("base")),
}


def perturb_zero_inits(net: NB2) -> None:
    """Move the parameters that start at exactly zero (global token, task table, pool seeds)."""
    with torch.no_grad():
        net.encoder.global_token.normal_(0, 0.1)
        net.encoder.task_embed.weight.normal_(0, 0.1)
        for level in net.encoder.levels:
            level.pool.seed.normal_(0, 0.1)


def grad_norms(net: NB2, obs) -> dict[str, float | None]:
    net.zero_grad(set_to_none=True)
    out = net(obs)
    # Not out.sum(): the output goes through a LayerNorm, whose outputs sum to a constant, so
    # out.sum() sends only rounding noise (~1e-11) back. A fixed random readout does not.
    readout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * readout).sum().backward()
    return {n: None if p.grad is None else float(p.grad.abs().max()) for n, p in net.named_parameters()}


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_reach_every_parameter(name: str) -> None:
    space, cfg = CASES[name]
    net = NB2(space, cfg)
    obs = sample_obs(space, 4)
    out = net(obs)
    assert out.shape == (4, 2, cfg.d_model)

    norms = grad_norms(net, obs)
    if not (isinstance(space, spaces.Dict) and "task_id" in space.spaces):
        # per-task output adapters only act when observations carry a task id
        assert norms.pop("decoder.task_film") is None
    missing = [n for n, g in norms.items() if g is None]
    assert not missing, f"parameters outside the graph: {missing}"
    # At initialisation the pooling seeds are zero (mean pooling), so the pooling query
    # q = W·seed + b does not depend on W yet: only W's gradient is zero, and only then.
    zero = {n for n, g in norms.items() if g is not None and g < 1e-8}
    assert zero <= {n for n in norms if n.endswith("pool.attn.q.weight")}, zero

    perturb_zero_inits(net)
    norms = grad_norms(net, obs)
    if not (isinstance(space, spaces.Dict) and "task_id" in space.spaces):
        norms.pop("decoder.task_film")
    zero = [n for n, g in norms.items() if g is None or g < 1e-8]
    assert not zero, f"parameters without gradient: {zero}"


def test_sampling_selection_does_not_block_gradients() -> None:
    space, cfg = CASES["vec200-small-group-sampling"]
    net = NB2(space, cfg)
    x = sample_obs(space, 3).requires_grad_(True)
    kept = kept_share(net, x)
    assert kept is not None and (kept < 1).all()
    net(x).pow(3).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# --- initialisation -------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("gate_bias", [-2.0, -3.5])
def test_gates_start_open(preset: str, gate_bias: float) -> None:
    cfg = get_config(preset, gate_bias=gate_bias)
    net = NB2(DICT_SPACE, cfg)
    with torch.no_grad(), recording(net) as rec:
        net(sample_obs(DICT_SPACE, 5))
    gates = rec.gates
    assert gates is not None
    assert gates.shape == (5, cfg.n_decoder_layers, cfg.n_heads)
    assert torch.equal(gates, torch.ones_like(gates))
    residuals = [m for m in net.modules() if isinstance(m, GatedResidual)]
    assert residuals
    for m in residuals:
        assert torch.equal(m.logit, torch.full_like(m.logit, gate_bias))


def test_zero_initialised_parts() -> None:
    net = NB2(DICT_SPACE, get_config("nano"))
    assert not net.encoder.global_token.any()
    assert not net.encoder.task_embed.weight.any()
    assert all(not level.pool.seed.any() for level in net.encoder.levels)
    assert not net.decoder.head_gate.weight.any() and not net.decoder.head_gate.bias.any()
    assert not net.decoder.queries.any()
    # hence every task starts with the same output
    obs = sample_obs(DICT_SPACE, 1)
    obs = {k: v.expand(3, *v.shape[1:]) for k, v in obs.items()}
    obs[TASK_KEY] = torch.eye(3)
    with torch.no_grad():
        out = net(obs)
    torch.testing.assert_close(out[0], out[1])
    torch.testing.assert_close(out[0], out[2])
    # ... and a trained task table tells them apart
    perturb_zero_inits(net)
    with torch.no_grad():
        out = net(obs)
    assert not torch.allclose(out[0], out[1])


def test_reset_parameters_restores_gates_and_zero_inits() -> None:
    cfg = get_config("small")
    net = NB2(DICT_SPACE, cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.reset_parameters()
    for m in net.modules():
        if isinstance(m, GatedResidual):
            assert torch.equal(m.logit, torch.full_like(m.logit, cfg.gate_bias))
    assert not net.decoder.head_gate.weight.any()
    assert not net.encoder.global_token.any()
    assert not net.decoder.queries.any()
    with torch.no_grad(), recording(net) as rec:
        net(sample_obs(DICT_SPACE, 2))
    assert rec.gates is not None and torch.equal(rec.gates, torch.ones_like(rec.gates))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_output_depends_on_the_observation_at_init(seed: int) -> None:
    """Prevents the TD3 Pendulum defect (issue 13): with random decoder queries the features
    were 97.5 % one constant vector at init (spread / mean norm 0.025), so TD3's actor learned
    a single action for every state. Zero queries start each one at the observation's summary."""
    torch.manual_seed(seed)
    space = spaces.Box(-8.0, 8.0, (3,))  # Pendulum's scale
    net = NB2(space, get_config("nano"), n_queries=1)
    obs = torch.rand(256, 3) * 16.0 - 8.0
    with torch.no_grad():
        out = net(obs)[:, 0]  # (B, C)
    spread = (out - out.mean(0)).norm(dim=-1).mean()
    assert float(spread / out.mean(0).norm()) > 0.5


def test_reset_parameters_reinitialises_every_weight() -> None:
    net = NB2(DICT_SPACE, get_config("nano"))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(100.0)
    net.reset_parameters()
    stale = [n for n, p in net.named_parameters() if (p == 100.0).any()]
    assert not stale, f"not re-initialised: {stale}"


# --- token sampling: deterministic, per observation ------------------------------------------------

SAMPLING_CASES = [
    "vec40-nano",
    "vec200-small-group-sampling",
    "image-chw-small",
    "dict-task-nano",
    "dict-task-base",
]


@pytest.mark.parametrize("name", SAMPLING_CASES)
def test_sampling_is_deterministic(name: str) -> None:
    space, cfg = CASES[name]
    net = NB2(space, cfg)
    obs = sample_obs(space, 6, scale=torch.rand(6, 1) * 3)
    with torch.no_grad(), recording(net) as rec:
        first = net(obs)
        kept = rec.kept
        second = net(obs)
    assert torch.equal(first, second)
    assert kept is not None and rec.kept is not None and torch.equal(kept, rec.kept)
    net.train()
    with torch.no_grad():
        assert torch.equal(first, net(obs))  # no dropout, no noise: modes agree


@pytest.mark.parametrize("name", SAMPLING_CASES)
def test_sampling_does_not_depend_on_the_batch(name: str) -> None:
    space, cfg = CASES[name]
    net = NB2(space, cfg)
    batch = 12
    obs = sample_obs(space, batch, scale=torch.rand(batch, 1) * 3)
    with torch.no_grad():
        together = net(obs)
        kept = kept_share(net, obs)
        assert kept is not None
        assert (kept < 1).any(), "sampling should drop tokens here, or the test proves nothing"
        for i in range(batch):
            alone = net(rows(obs, slice(i, i + 1)))
            torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=1e-5)
        # and inside a different batch, at a different position
        order = torch.randperm(batch)
        shuffled = net(rows(obs, order))
        torch.testing.assert_close(shuffled, together[order], atol=1e-5, rtol=1e-5)
        pair = net(rows(obs, torch.tensor([3, 3])))
        torch.testing.assert_close(pair, together[[3, 3]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["vec40-nano", "image-chw-small", "dict-task-base"])
def test_sampling_off_keeps_everything(name: str) -> None:
    space, cfg = CASES[name]
    net = NB2(space, cfg.replace(sampling=False))
    assert not net.encoder.sample
    assert kept_share(net, sample_obs(space, 3)) is None


@pytest.mark.parametrize(
    ("space", "cfg"),
    [
        (spaces.Box(-1, 1, (12,)), get_config("small")),  # one group: nothing to save
        (spaces.Box(-1, 1, (40,)), get_config("nano", min_keep=16)),  # groups no larger than min_keep
    ],
    ids=["single-group", "groups-within-min-keep"],
)
def test_no_sampling_when_nothing_to_drop(space: spaces.Space, cfg: NB2Config) -> None:
    net = NB2(space, cfg)
    assert not net.encoder.sample
    assert kept_share(net, sample_obs(space, 2)) is None
    net = NB2(space, cfg.replace(min_keep=2))
    assert (kept_share(net, sample_obs(space, 2)) is None) == (net.tokenizer.n_groups == 1)


def test_sampling_on_and_off_share_parameters() -> None:
    """The ablation changes only which tokens are read: the same weights but the router (the
    scores of sampling), the same output shapes."""
    space, cfg = CASES["dict-task-nano"]
    on, off = NB2(space, cfg), NB2(space, cfg.replace(sampling=False))
    result = off.load_state_dict(on.state_dict(), strict=False)
    assert not result.missing_keys and result.unexpected_keys == [
        "encoder.levels.0.router.weight",
        "encoder.levels.0.router.bias",
    ]
    obs = sample_obs(space, 2)
    with torch.no_grad():
        assert on(obs).shape == off(obs).shape


def test_kept_share_counts_real_tokens() -> None:
    # 20 tokens in 2 groups of 16 (12 padded slots); each group keeps 8 slots, real tokens first:
    # 8 of the first group, all 4 of the second: 12 of 20
    net = NB2(spaces.Box(-1, 1, (20,)), get_config("nano", keep_ratio=0.5))
    assert net.encoder.sample and net.encoder.keep == 8
    kept = kept_share(net, torch.randn(4, 20))
    assert kept is not None
    torch.testing.assert_close(kept, torch.full((4,), 0.6))


def test_kept_share_does_not_depend_on_the_batch() -> None:
    space = spaces.Box(-1, 1, (200,))
    net = NB2(space, get_config("small", min_keep=2, keep_ratio=0.25))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        obs = torch.randn(32, 200) * torch.rand(32, 1) * 3
    together = kept_share(net, obs)
    alone = torch.cat([cast(torch.Tensor, kept_share(net, obs[i : i + 1])) for i in range(32)])
    assert together is not None
    assert (together < 1).all(), "sampling should drop tokens here, or the test proves nothing"
    torch.testing.assert_close(alone, together)


# --- diagnostics ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "levels"),
    [
        ("vec4-nano-single-group", ["global", "decoder"]),
        ("vec200-small-group-sampling", ["level0", "global", "decoder"]),
        ("vec1000-nano-multilevel", ["level0", "level1", "level2", "global", "decoder"]),
        ("dict-task-nano", ["level0", "global", "decoder"]),
    ],
)
def test_diagnostics(name: str, levels: list[str]) -> None:
    space, cfg = CASES[name]
    net = NB2(space, cfg)
    obs = sample_obs(space, 5)
    with torch.no_grad():
        before = net(obs)
    diag = net.diagnostics(obs)
    mlps = {name for name, m in net.named_modules() if isinstance(m, MLP)}
    dormant = {f"dormant_frac/{name}" for name in mlps} | {"dormant_frac"}
    expected = {f"attention_entropy/{lvl}" for lvl in levels} | {"kept_fraction", "head_gate_mean"}
    assert set(diag) == expected | dormant
    assert all(0.0 <= diag[key] <= 1.0 for key in dormant)
    for lvl in levels:
        assert 0.0 <= diag[f"attention_entropy/{lvl}"] <= np.log(net.tokenizer.n_tokens + 64)
    assert diag["head_gate_mean"] == pytest.approx(1.0)  # gates start open
    if net.encoder.sample:
        assert 0.0 < diag["kept_fraction"] <= 1.0
        kept = kept_share(net, obs)
        assert kept is not None and diag["kept_fraction"] == pytest.approx(float(kept.mean()))
    else:
        assert diag["kept_fraction"] == 1.0
    # one extra forward: same outputs, recording switched off again
    with torch.no_grad():
        torch.testing.assert_close(net(obs), before)
    assert not any(m._forward_hooks for m in net.modules())  # the recording hooks are gone
    assert net.traced_inference  # switched back on


def test_dormant_fraction_by_hand() -> None:
    # unit means |h|: 1, 1, 1, 0.05 -> layer mean 0.7625; the last scores 0.066 <= 0.1: dormant
    h = torch.tensor([[1.0, -1.0, 2.0, 0.1], [-1.0, 1.0, 0.0, 0.0]])
    assert dormant_fraction(h) == 0.25
    assert dormant_fraction(h, tau=0.01) == 0.0
    assert dormant_fraction(torch.zeros(3, 5)) == 1.0
    assert dormant_fraction(torch.ones(2, 7, 4)) == 0.0  # leading axes (batch, tokens) averaged


def test_diagnostics_entropy_of_uniform_pooling() -> None:
    """Zero pooling seeds attend uniformly: the pool's entropy is log(tokens per group)."""
    cfg = get_config("nano", sampling=False)
    net = NB2(spaces.Box(-1, 1, (64,)), cfg)  # 4 full groups of 16
    with torch.no_grad(), recording(net, entropy=True) as rec:
        net(torch.randn(3, 64))
    assert rec.entropy["encoder.levels.0.pool"] == pytest.approx(np.log(16), rel=1e-5)
    assert net.diagnostics(torch.randn(3, 64))["attention_entropy/level0"] > 0


# --- output, state, presets, config ---------------------------------------------------------------


@pytest.mark.parametrize("n_queries", [1, 2, 3])
def test_one_output_per_query(n_queries: int) -> None:
    net = NB2(spaces.Box(-1, 1, (6,)), get_config("nano"), n_queries=n_queries)
    assert net(torch.randn(5, 6)).shape == (5, n_queries, 32)


def test_state_dict_round_trip() -> None:
    space, cfg = CASES["dict-task-nano"]
    a, b = NB2(space, cfg), NB2(space, cfg)
    perturb_zero_inits(a)
    b.load_state_dict(a.state_dict())
    obs = sample_obs(space, 3)
    with torch.no_grad():
        assert torch.equal(a(obs), b(obs))
    # static masks are not saved: the state dict holds parameters only
    assert set(a.state_dict()) == {n for n, _ in a.named_parameters()}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_param_report(preset: str) -> None:
    net = NB2(DICT_SPACE, get_config(preset))
    report = net.param_report()
    total = sum(p.numel() for p in net.parameters())
    assert report.total == total
    assert sum(report.by_block.values()) == total
    assert set(report.by_block) == {"tokenizer", "encoder", "decoder"}
    assert report.fp32_bytes == 4 * total


def test_preset_sizes() -> None:
    space = spaces.Box(-1, 1, (8,))
    sizes = {name: NB2(space, get_config(name)).param_report() for name in ("nano", "small", "base")}
    assert sizes["nano"].fp32_bytes < 1_000_000
    assert sizes["nano"].total < sizes["small"].total < sizes["base"].total
    # a CartPole-class observation in nano: well under 1 MB even with a large image
    assert NB2(DICT_SPACE, get_config("nano")).param_report().fp32_bytes < 1_000_000
    assert NB2(image((84, 84, 3)), get_config("nano")).param_report().fp32_bytes < 1_000_000


# the table in README.md ("Presets")
README_COUNTS = {
    "cartpole": (
        spaces.Box(-1, 1, (4,)),
        {"nano": 22_946, "small": 162_052, "base": 820_880, "nano-flat": 31_554, "small-flat": 212_164},
    ),
    "image-64x64x3": (
        image((64, 64, 3)),
        {"nano": 38_243, "small": 233_733, "base": 1_293_841, "nano-flat": 33_890, "small-flat": 216_836},
    ),
}


@pytest.mark.parametrize("name", list(README_COUNTS))
def test_preset_param_counts_match_readme(name: str) -> None:
    space, expected = README_COUNTS[name]
    counts = preset_param_counts(space)
    assert {k: r.total for k, r in counts.items()} == expected
    only_nano = preset_param_counts(space, {"nano": PRESETS["nano"]}, n_queries=1)
    assert set(only_nano) == {"nano"} and only_nano["nano"].total < expected["nano"]


def test_get_config() -> None:
    assert get_config() is PRESETS["nano"]
    assert get_config("small") is PRESETS["small"]
    assert get_config("nano", sampling=False).sampling is False
    assert get_config("nano", sampling=False).d_model == PRESETS["nano"].d_model
    custom = NB2Config(d_model=16)
    assert get_config(custom) is custom
    assert get_config(custom, n_heads=4).n_heads == 4
    # presets are frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["nano"].d_model = 8  # type: ignore[misc]


@pytest.mark.parametrize("preset", ["huge", "Nano", "", None, 3])
def test_unknown_preset_lists_valid_ones(preset) -> None:
    with pytest.raises(ValueError) as info:
        get_config(preset)
    msg = str(info.value)
    for name in PRESETS:
        assert repr(name) in msg


def test_replace_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="d_modle") as info:
        NB2Config().replace(d_modle=64)
    assert "d_model" in str(info.value)  # lists the valid keys
    with pytest.raises(ValueError, match="d_modle"):
        get_config("nano", d_modle=64)
    assert NB2Config().replace(d_model=64).d_model == 64


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"d_model": 0}, "d_model"),
        ({"d_model": 33}, "divisible"),
        ({"n_heads": 3}, "divisible"),
        ({"n_local_layers": 0}, "n_local_layers"),
        ({"group_size": 1}, "group_size"),
        ({"group_size": 2.5}, "group_size"),
        ({"min_keep": True}, "min_keep"),
        ({"patch_size": -1}, "patch_size"),
        ({"keep_ratio": 0.0}, "keep_ratio"),
        ({"keep_ratio": 1.5}, "keep_ratio"),
        ({"max_tasks": 0}, "max_tasks"),
    ],
)
def test_config_validation(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        NB2Config(**changes)
    with pytest.raises(ValueError, match=field):
        NB2Config().replace(**changes)


def _task_obs(net_tasks: int = 3) -> tuple[spaces.Dict, dict[str, torch.Tensor]]:
    space = spaces.Dict({"x": spaces.Box(-1, 1, (5,)), "task_id": spaces.Discrete(net_tasks)})
    task_ids = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1]), net_tasks).float()
    return space, {"x": torch.randn(4, 5), "task_id": task_ids}


def test_task_adapters_transform_each_tasks_outputs() -> None:
    space, obs = _task_obs()
    net = NB2(space, get_config("nano"))
    film = net.decoder.task_film
    net.zero_grad()
    (net(obs) * torch.randn(4, 2, 32)).sum().backward()
    assert film.grad is not None and film.grad[:3].abs().amin(dim=-1).gt(0).all()  # scales and shifts
    assert film.grad[3:].abs().max() == 0  # the tasks not in the batch
    before = net(obs).detach()
    net.decoder.soften(1, 0, 0.1)  # task 1's first query (the actor's in NB2Heads) at gain 0.1
    after = net(obs).detach()
    assert torch.allclose(after[[1, 3], 0], 0.1 * before[[1, 3], 0], atol=1e-6)
    assert torch.equal(after[[0, 2]], before[[0, 2]]) and torch.equal(after[:, 1], before[:, 1])
    # a signed scale turns a task's output around, so its logits W(-x) = -Wx flip its actions
    with torch.no_grad():
        net.decoder.task_film[2, 0, 0] = -1.0  # task 2's actor scale
    turned = net(obs).detach()
    assert torch.allclose(turned[2, 0], -before[2, 0], atol=1e-6)
    assert torch.equal(turned[[0, 1, 3]], after[[0, 1, 3]])


def test_task_state_copies_what_a_task_has_of_its_own() -> None:
    space, obs = _task_obs()
    net = NB2(space, get_config("nano"))
    perturb_zero_inits(net)  # task rows differ from one another
    out = net(obs).detach()
    assert not torch.allclose(out[0], out[2])
    net.set_task_state(2, net.task_state(0))
    same_x = {"x": obs["x"][[0, 0]], "task_id": obs["task_id"][[0, 2]]}
    copied = net(same_x).detach()
    assert torch.allclose(copied[0], copied[1], atol=1e-6)  # task 2 now acts as task 0
    assert torch.equal(net(obs).detach()[[0, 1, 3]], out[[0, 1, 3]])  # the other tasks untouched


def test_a_network_saved_with_scalar_task_gains_loads_as_scales() -> None:
    space, obs = _task_obs()
    net = NB2(space, get_config("nano"))
    state = net.state_dict()
    gains = torch.zeros(net.cfg.max_tasks, 2)
    gains[1, 0] = math.log(0.1)
    old = {k: v for k, v in state.items() if k != "decoder.task_film"}
    old["decoder.task_gain"] = gains  # the format before per-task adapters
    loaded = NB2(space, get_config("nano"))
    loaded.load_state_dict(old)
    net.decoder.soften(1, 0, 0.1)
    assert torch.allclose(loaded(obs), net(obs), atol=1e-6)
