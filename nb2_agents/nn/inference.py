"""NB2's forward without autograd, traced: rollouts, ``predict`` and target networks.

At the batch sizes that act in an environment (1 to 16 observations) NB2's eager forward is
about a hundred small kernels, and Python's dispatch of each costs more than its arithmetic.
:class:`TracedForward` runs the same forward as a ``torch.jit.trace`` graph instead, one per
input signature (device, Dict keys, dtypes, shapes past the batch axis). Measured against
eager, side by side, NB2-nano without autograd, B = 1-16: 1.6-2.0x faster on CartPole,
1.3-2.8x on DoorKey cells, 1.3-2.4x on DoorKey pixels at 196 tokens; with SB3 around it, PPO
on CartPole trains 1.13x faster and DQN 1.08x (``benchmarks/throughput.py``).

Exactness: the graph holds the network's own parameters (no copy, so an optimizer step is
seen at once) and replays the eager kernels in their order, so it returns what eager returns;
PPO's rollout log-probabilities then equal its update-time ones. Each new batch size is checked
against eager once; a graph that disagrees (or fails to trace) is dropped with a warning and
that signature stays eager. A graph is rebuilt when any parameter or buffer is replaced or
moved (``.to``, a swapped submodule), since it would otherwise read the old tensors.

Training's forward + backward does not come here: at PPO's minibatch it is bound by the
kernels themselves (traced: 8.5-9 ms, eager: 8.5-9 ms at B = 256 on CartPole).
Forward hooks on NB2's submodules are not run by a graph; set ``NB2.traced_inference = False``
to run them (and for debugging in eager).
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import torch
from torch import nn

Signature = tuple[Any, ...]


class _Body(nn.Module):
    """The traced function: positional tensors (a Dict's values in ``keys`` order) → (B, nq, C)."""

    def __init__(self, net: nn.Module, keys: tuple[str, ...] | None) -> None:
        super().__init__()
        self.net = net
        self.keys = keys

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        obs = inputs[0] if self.keys is None else dict(zip(self.keys, inputs, strict=True))
        return self.net.run(obs)  # type: ignore[no-any-return, operator]


def _inputs(obs: torch.Tensor | dict[str, torch.Tensor]) -> tuple[tuple[str, ...] | None, list[torch.Tensor]]:
    if isinstance(obs, dict):
        keys = tuple(obs)
        return keys, [obs[k] for k in keys]
    return None, [obs]


def _signature(keys: tuple[str, ...] | None, inputs: list[torch.Tensor]) -> Signature:
    return (keys, tuple((x.device, x.dtype, tuple(x.shape[1:])) for x in inputs))


_registrations = 0
"""Parameters, buffers and submodules registered on any module so far (torch's global hooks,
installed when this module is imported: one Python call per registration, in any module)."""


def _count(*_: Any) -> None:
    global _registrations
    _registrations += 1


for _register in (
    nn.modules.module.register_module_parameter_registration_hook,
    nn.modules.module.register_module_buffer_registration_hook,
    nn.modules.module.register_module_module_registration_hook,
):
    _register(_count)


class _Tensors:
    """Which tensors a graph was traced on. Checking the whole module tree costs ~120 us, more
    than a traced forward saves, so it is walked again only after a registration anywhere (a
    replaced parameter or submodule); between those, the data pointers of the tensors it found
    tell whether one was moved or recast in place (``.to``, ``.double()``)."""

    def __init__(self) -> None:
        self.seen = -1
        self.tensors: list[torch.Tensor] = []
        self.ptrs: tuple[int, ...] = ()

    def changed(self, net: nn.Module) -> bool:
        if self.seen == _registrations and tuple(t.data_ptr() for t in self.tensors) == self.ptrs:
            return False
        tensors = list(itertools.chain(net.parameters(), net.buffers()))
        ptrs = tuple(t.data_ptr() for t in tensors)
        same = (
            self.seen >= 0
            and ptrs == self.ptrs
            and all(a is b for a, b in zip(tensors, self.tensors, strict=True))
        )
        self.seen, self.tensors, self.ptrs = _registrations, tensors, ptrs
        return not same


class TracedForward:
    """Per-signature traced graphs of ``net.run`` (see the module doc), built on first use."""

    def __init__(self) -> None:
        self.graphs: dict[Signature, torch.jit.ScriptModule] = {}
        self.checked: set[tuple[Signature, int]] = set()
        self.eager: set[Signature] = set()
        """Signatures that failed to trace or disagreed with eager: they stay eager."""
        self.tensors = _Tensors()

    def clear(self) -> None:
        self.graphs.clear()
        self.checked.clear()

    def __call__(self, net: nn.Module, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """``net.run(obs)``, through a graph where one can be used; call without autograd."""
        keys, inputs = _inputs(obs)
        sig = _signature(keys, inputs)
        if sig in self.eager or not inputs[0].shape[0]:
            return net.run(obs)  # type: ignore[no-any-return, operator]
        if self.tensors.changed(net):
            self.clear()
        graph = self.graphs.get(sig)
        if graph is None:
            graph = self._trace(net, sig, keys, inputs)
        if graph is None:
            return net.run(obs)  # type: ignore[no-any-return, operator]
        out: torch.Tensor = graph(*inputs)
        batch = int(inputs[0].shape[0])
        if (sig, batch) not in self.checked:
            expected: torch.Tensor = net.run(obs)  # type: ignore[operator]
            if not torch.allclose(out, expected, rtol=1e-5, atol=1e-6, equal_nan=True):
                gap = float((out - expected).abs().max())
                self._give_up(sig, f"its output differs from eager's by {gap:.2e}")
                return expected
            self.checked.add((sig, batch))
        return out

    def _trace(
        self, net: nn.Module, sig: Signature, keys: tuple[str, ...] | None, inputs: list[torch.Tensor]
    ) -> torch.jit.ScriptModule | None:
        # Traced on two rows, so that no size-1 axis can be taken for a constant; the first real
        # call then checks the graph at its own batch size.
        example = tuple(x[:1].expand(2, *x.shape[1:]).contiguous() for x in inputs)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarning, TorchScript's deprecation
                graph = torch.jit.trace(_Body(net, keys), example, check_trace=False)
        except Exception as err:
            self._give_up(sig, f"it cannot be traced ({type(err).__name__}: {err})")
            return None
        self.graphs[sig] = graph
        return graph

    def _give_up(self, sig: Signature, why: str) -> None:
        self.graphs.pop(sig, None)
        self.eager.add(sig)
        keys, inputs = sig
        shapes = ", ".join(
            f"{'' if keys is None else repr(k) + ': '}{str(dtype).removeprefix('torch.')} {shape} on {device}"
            for k, (device, dtype, shape) in zip(keys or [None], inputs, strict=False)
        )
        warnings.warn(
            f"NB2's traced forward is off for observations of {shapes} (per row), which run eager: {why}",
            RuntimeWarning,
            stacklevel=3,
        )
