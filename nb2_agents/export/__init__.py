"""Export trained policies for deployment: ONNX (onnxruntime) and TorchScript, fp32 or int8.

* :mod:`.graph`: NB2's forward with static shapes (token sampling by masking), for tracing;
* :mod:`.module`: a loaded SB3 policy as one module, raw observations → (action, logits);
* :mod:`.writers`: the ONNX and TorchScript writers and their int8 quantization;
* :mod:`.spaces` / :mod:`.sidecar`: the metadata written next to each file, and its checks;
* :mod:`.exporter`: :func:`export` (``nb2 export``); :mod:`.loader`: :class:`ExportedPolicy`,
  which runs a file with SB3's ``predict`` (``nb2 evaluate model.onnx``).
"""

from typing import TYPE_CHECKING

from nb2_agents.lazy import lazy_exports

if TYPE_CHECKING:
    from nb2_agents.export.exporter import ExportResult, export
    from nb2_agents.export.formats import FORMATS
    from nb2_agents.export.loader import ExportedPolicy, is_exported

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "FORMATS": "nb2_agents.export.formats",
        "ExportResult": "nb2_agents.export.exporter",
        "export": "nb2_agents.export.exporter",
        "ExportedPolicy": "nb2_agents.export.loader",
        "is_exported": "nb2_agents.export.loader",
    },
)

__all__ = ["FORMATS", "ExportResult", "ExportedPolicy", "export", "is_exported"]
