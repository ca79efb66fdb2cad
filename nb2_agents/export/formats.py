"""The export formats, as plain data (``nb2 export --help`` lists them without importing torch)."""

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
"""Export format → default file suffix."""
