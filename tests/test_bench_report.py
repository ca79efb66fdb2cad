"""``make bench``'s report: the markdown table, the missed targets and one plot per benchmark."""

from __future__ import annotations

from pathlib import Path

from benchmarks import report
from benchmarks.common import Point, Row

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_writes_table_missed_targets_and_plots(tmp_path: Path) -> None:
    rows = [
        Row(
            "scaling",
            "nano 16 tokens",
            "1.90x",
            points=(Point("hier", 16, 2.5, "ms"), Point("flat", 16, 4.8, "ms")),
        ),
        Row("scaling", "nano 64 tokens", "1.50x", ">= 2x", False, points=(Point("hier", 64, 6.9, "ms"),)),
        Row("latency", "onnx b1", "0.2 ms", "< 0.3 ms", True, points=(Point("batch 1", "onnx", 0.2, "ms"),)),
        Row("sizes", "nano params", "18,949"),
    ]
    out = tmp_path / "RESULTS.md"
    plots = report.write(rows, "CPU: test", "python -m benchmarks", 3.0, out)

    text = out.read_text()
    assert "CPU: test" in text
    assert "| scaling | nano 64 tokens | 1.50x | >= 2x | **no** |" in text
    missed = text.split("## Targets missed")[1].split("## Plots")[0]
    assert "nano 64 tokens" in missed and "onnx b1" not in missed
    assert sorted(p.name for p in plots) == ["latency.png", "scaling.png"]  # "sizes" has no points
    for p in plots:
        assert p.read_bytes()[:8] == PNG_MAGIC
        assert f"plots/{p.name}" in text
