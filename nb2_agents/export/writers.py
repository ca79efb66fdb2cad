"""Writing a :class:`~.module.PolicyGraph` to disk: ONNX and TorchScript, fp32 or int8.

* ONNX: ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter; it needs
  onnxscript), one dynamic ``batch`` axis shared by every input, weights inside the file, the
  exporter's per-node stack traces stripped (they held two thirds of a nano file, and local
  paths). ``int8``: onnxruntime's dynamic quantization (int8 weights of MatMul / Gemm, i.e. the
  Linear layers, and of constant Gather tables; activations quantized on the fly).
* TorchScript: ``torch.jit.trace`` (sizes are traced, so the batch axis stays free). ``int8``:
  ``torch.ao.quantization.quantize_dynamic`` of the Linear layers before tracing.

Both exporters print deprecation notes and internal logs for things that do not concern the
user (TorchScript itself is deprecated upstream); :func:`quiet` keeps them off the terminal.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from nb2_agents.errors import UsageError
from nb2_agents.export.loader import ONNX_INSTALL
from nb2_agents.export.module import PolicyGraph


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' deprecation / tracer warnings and INFO-WARNING logs."""
    loggers = [
        logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")
    ]
    levels = [logger.level for logger in loggers]
    disabled = logging.root.manager.disable
    try:
        with warnings.catch_warnings():
            for category in (DeprecationWarning, FutureWarning, torch.jit.TracerWarning):
                warnings.simplefilter("ignore", category)
            # torch's quantized tensors (behind quantize_dynamic) are deprecated upstream
            warnings.filterwarnings("ignore", ".*quantized tensor creation functions", UserWarning)
            # every input shares one batch axis: the ONNX exporter notes that it keeps one name
            warnings.filterwarnings("ignore", ".*shares the same shape constraints", UserWarning)
            for logger in loggers:
                logger.setLevel(logging.ERROR)
            logging.disable(logging.WARNING)  # onnxruntime's quantizer warns on the root logger
            yield
    finally:
        logging.disable(disabled)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def require_onnx() -> None:
    """Raise :class:`UsageError` unless the ONNX exporter's packages are installed."""
    missing = []
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UsageError(f"--format onnx needs {', '.join(missing)}, not installed: {ONNX_INSTALL}")


def write_onnx(
    graph: PolicyGraph, examples: list[torch.Tensor], names: list[str], path: Path, int8: bool
) -> None:
    """Export ``graph`` to ONNX at ``path``; ``examples`` are batched inputs in graph order."""
    import onnx

    batch = torch.export.Dim("batch", min=1)
    with quiet(), torch.no_grad():
        program = torch.onnx.export(
            graph,
            tuple(examples),
            input_names=names,
            output_names=graph.output_names,
            dynamic_shapes={"inputs": tuple({0: batch} for _ in names)},
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    assert program is not None
    model = program.model_proto
    for node in model.graph.node:  # stack traces and module paths of the exporting process
        del node.metadata_props[:]
    model.producer_name = "nb2-agents (torch.onnx)"
    if not int8:
        onnx.save(model, str(path))
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        onnx.save(model, str(fp32))
        with quiet():
            quantize_dynamic(fp32, path, weight_type=QuantType.QInt8)


def write_torchscript(graph: PolicyGraph, examples: list[torch.Tensor], path: Path, int8: bool) -> None:
    """Trace ``graph`` (int8: its Linear layers quantized first) and save it at ``path``."""
    module: nn.Module = graph
    with quiet(), torch.no_grad():
        if int8:
            module = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(graph), {nn.Linear}, dtype=torch.qint8
            )
        traced = torch.jit.trace(module, tuple(examples), check_trace=False)
        torch.jit.save(traced, str(path))
