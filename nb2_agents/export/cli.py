"""``nb2 export PATH --format onnx|torchscript [--int8] [--out FILE]``: its arguments and handler."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from nb2_agents.cli_common import add_trust_option
from nb2_agents.export.formats import FORMATS


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``export`` on the ``nb2`` subparsers."""
    p = sub.add_parser(
        "export",
        parents=[common],
        help="export a model's deterministic policy to ONNX or TorchScript",
        description="Export the deterministic policy of a run folder or model .zip, observation "
        "preprocessing and Box action rescaling included, with a metadata sidecar <file>.json. "
        "Run it with `nb2 evaluate FILE` or nb2_agents.export.ExportedPolicy.",
    )
    p.add_argument("path", metavar="PATH", help="a run folder or a model .zip")
    p.add_argument(
        "--format",
        choices=list(FORMATS),
        default=None,
        help="onnx (onnxruntime; the default, or what --out's suffix names) or torchscript",
    )
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantization of the Linear layers")
    p.add_argument(
        "--out",
        metavar="FILE",
        help="the file (.onnx; .pt or .ts) or a folder; default: next to the model, e.g. model.onnx",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_trust_option(p)


def run(args: argparse.Namespace) -> int:
    """The ``export`` command's handler."""
    import torch

    from nb2_agents.export.exporter import export

    torch.set_num_threads(1)  # small graphs: more threads only add contention
    result = export(
        args.path, format=args.format, int8=args.int8, out=args.out, trust_pickle=args.trust_pickle
    )
    if args.json:
        print(json.dumps({k: str(v) if k in ("path", "sidecar") else v for k, v in asdict(result).items()}))
    else:
        print(result.summary())
    return 0
