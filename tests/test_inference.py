"""NB2's traced forward without autograd (``nn/inference.py``): same outputs as eager, always
on the network's current tensors, and eager again wherever a graph cannot be trusted."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from gymnasium import spaces

from nb2_agents import NB2, get_config
from nb2_agents.nn.tokenizer import TASK_KEY
from tests.test_model import sample_obs

VECTOR = spaces.Box(-1, 1, (4,))
CELLS = spaces.Box(0, 255, (3, 7, 7), dtype=np.uint8)  # MiniGrid's view: 49 tokens, sampling runs
DICT = spaces.Dict(
    {
        "x": spaces.Box(-1, 1, (40,)),
        "x_mask": spaces.MultiBinary(40),
        "img": spaces.Box(0, 255, (3, 16, 16), dtype=np.uint8),
        TASK_KEY: spaces.Discrete(3),
    }
)


def eager(net: NB2, obs: object) -> torch.Tensor:
    net.traced_inference = False
    try:
        with torch.no_grad():
            return net(obs)
    finally:
        net.traced_inference = True


def traced(net: NB2, obs: object) -> torch.Tensor:
    with torch.no_grad():
        return net(obs)


@pytest.mark.parametrize(
    ("space", "sampling"), [(VECTOR, True), (CELLS, True), (CELLS, False), (DICT, True)], ids=str
)
def test_traced_forward_equals_eager_at_every_batch_size(space: spaces.Space, sampling: bool) -> None:
    torch.manual_seed(0)
    net = NB2(space, get_config("nano", sampling=sampling), n_queries=2)
    for batch in (1, 3, 8):
        obs = sample_obs(space, batch)
        assert torch.equal(traced(net, obs), eager(net, obs))
    assert len(net._traced.graphs) == 1  # one graph serves every batch size
    assert not net._traced.eager


def test_traced_forward_reads_the_networks_current_weights() -> None:
    net = NB2(CELLS, get_config("nano"), n_queries=2)
    obs = sample_obs(CELLS, 4)
    before = traced(net, obs)
    with torch.no_grad():  # as an optimizer step does: in place
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    after = traced(net, obs)
    assert not torch.equal(before, after)
    assert torch.equal(after, eager(net, obs))


def test_a_replaced_submodule_or_a_recast_rebuilds_the_graph() -> None:
    net = NB2(VECTOR, get_config("nano"), n_queries=2)
    obs = sample_obs(VECTOR, 2)
    traced(net, obs)
    net.decoder.ln_out = torch.nn.LayerNorm(net.cfg.d_model, elementwise_affine=True)
    with torch.no_grad():
        net.decoder.ln_out.weight.fill_(3.0)
    assert torch.equal(traced(net, obs), eager(net, obs))
    net.double()
    out = traced(net, obs.double())
    assert out.dtype == torch.float64
    assert torch.equal(out, eager(net, obs.double()))


def test_copies_and_pickles_trace_their_own_graphs() -> None:
    net = NB2(VECTOR, get_config("nano"), n_queries=2)
    obs = sample_obs(VECTOR, 3)
    traced(net, obs)
    for other in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert not other._traced.graphs
        with torch.no_grad():
            for p in other.parameters():
                p.add_(0.05)
        assert torch.equal(traced(other, obs), eager(other, obs))
        assert not torch.equal(traced(other, obs), traced(net, obs))


def test_autograd_and_inference_mode() -> None:
    net = NB2(CELLS, get_config("nano"), n_queries=2)
    obs = sample_obs(CELLS, 2)
    out = net(obs)  # with autograd: eager, never traced
    assert out.requires_grad and not net._traced.graphs
    with torch.inference_mode():
        assert torch.equal(net(obs), eager(net, obs))
    assert len(net._traced.graphs) == 1


def test_diagnostics_still_record_on_the_modules() -> None:
    net = NB2(CELLS, get_config("nano"), n_queries=2)
    obs = sample_obs(CELLS, 4)
    traced(net, obs)
    diag = net.diagnostics(obs)
    assert 0.0 < diag["kept_fraction"] < 1.0  # sampling ran, and was recorded
    assert "attention_entropy/level0" in diag


def test_a_graph_that_fails_or_disagrees_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    net = NB2(VECTOR, get_config("nano"), n_queries=2)
    obs = sample_obs(VECTOR, 3)

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("no tracing here")

    monkeypatch.setattr(torch.jit, "trace", broken)
    with pytest.warns(RuntimeWarning, match=r"float32 \(4,\) on cpu.*cannot be traced.*no tracing here"):
        assert torch.equal(traced(net, obs), eager(net, obs))
    assert traced(net, obs).shape == (3, 2, net.cfg.d_model)  # stays eager, no second warning

    other = NB2(VECTOR, get_config("nano"), n_queries=2)
    monkeypatch.setattr(torch.jit, "trace", lambda body, example, **kw: lambda *x: torch.zeros(3, 2, 32))
    with pytest.warns(RuntimeWarning, match="differs from eager's"):
        assert torch.equal(traced(other, obs), eager(other, obs))
    assert not other._traced.graphs


def test_switched_off_it_runs_eager() -> None:
    net = NB2(VECTOR, get_config("nano"), n_queries=2)
    net.traced_inference = False
    with torch.no_grad():
        net(sample_obs(VECTOR, 2))
    assert not net._traced.graphs


def test_a_network_pickled_before_traced_inference_loads() -> None:
    net = NB2(VECTOR, get_config("nano"), n_queries=2)
    state = net.__getstate__()
    del state["traced_inference"], state["_traced"]  # what an older version pickled
    old = NB2.__new__(NB2)
    old.__setstate__(state)
    obs = sample_obs(VECTOR, 2)
    assert old.traced_inference and torch.equal(traced(old, obs), eager(net, obs))
