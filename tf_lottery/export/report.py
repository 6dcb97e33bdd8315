"""ExportReport: what one export wrote and how it measured, printed and saved as JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

BLOCK_SIZES = (16, 4)  # the 1 x n blocks a report names: those LiteRT's sparse kernels take


def _block_name(block: int) -> str:
    return "unstructured" if block == 1 else f"1x{block} blocks"


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What one export wrote and how it measured.

    Sizes are in bytes (``gzip_bytes``: the file gzipped, or a SavedModel directory as a
    .tar.gz), latencies the median in milliseconds of single-image invocations on one
    thread. ``weights_kept`` and ``layer_sparsity`` count the nonzero kernels of the
    prunable layers; ``kernel_block`` is the largest TFLite block size (16, 4, else 1) in
    which every kernel's zeros come. ``agreement`` is the fraction of the ``samples``
    verification inputs on which the export's arg-max output equals the Keras model's;
    ``verified_on`` says what those inputs were (``test_data``, ``representative_data`` or
    which random inputs; "a weak check" where the valid range of an integer input is
    unknown).
    The latency and ``dense_*`` fields (the dense float32 TFLite of the same model) are
    None for a SavedModel; the accuracies are None without labels.

    Example::

        report.save()                       # <export path>.report.json
        json.loads(report.to_json())["speedup"]
    """

    path: str
    format: str
    encoding: str
    size_bytes: int
    gzip_bytes: int
    weights_kept: float
    layer_sparsity: dict
    kernel_block: int
    samples: int
    verified_on: str
    agreement: float
    max_abs_diff: float
    keras_accuracy: Optional[float] = None
    exported_accuracy: Optional[float] = None
    latency_ms: Optional[float] = None
    dense_latency_ms: Optional[float] = None
    dense_size_bytes: Optional[int] = None

    @property
    def size_reduction(self) -> Optional[float]:
        """How many times smaller than the dense float32 TFLite."""
        return self.dense_size_bytes / self.size_bytes if self.dense_size_bytes else None

    @property
    def speedup(self) -> Optional[float]:
        """How many times faster than the dense float32 TFLite at batch 1 on one thread."""
        return self.dense_latency_ms / self.latency_ms if self.latency_ms else None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self) | {"size_reduction": self.size_reduction,
                                                      "speedup": self.speedup}, indent=2)

    def save(self, path=None) -> Path:
        """Write the report as JSON to ``path`` (default: beside the export); return the path."""
        path = Path(path) if path is not None else report_path(self.path)
        path.write_text(self.to_json() + "\n")
        return path

    def __str__(self):
        structure = f" ({_block_name(self.kernel_block)})" if self.weights_kept < 1 else ""
        lines = [f"{self.path}: {self.encoding} {self.format}, {self.size_bytes / 1024:.1f} KB "
                 f"(gzip {self.gzip_bytes / 1024:.1f} KB), {self.weights_kept:.2%} of weights "
                 f"kept{structure}"]
        if self.latency_ms is not None:
            lines.append(f"  vs the dense float32 TFLite: {self.size_reduction:.1f}x smaller, "
                         f"{self.latency_ms:.4f} ms vs {self.dense_latency_ms:.4f} ms per image "
                         f"({self.speedup:.1f}x faster, batch 1, one thread)")
        lines.append(f"  agrees with Keras on {self.agreement:.2%} of {self.samples} inputs "
                     f"({self.verified_on}), max |difference| {self.max_abs_diff:.3g}")
        if self.keras_accuracy is not None:
            lines.append(f"  test accuracy: Keras {self.keras_accuracy:.2%}, "
                         f"{self.format} {self.exported_accuracy:.2%}")
        return "\n".join(lines)


def report_path(export_path) -> Path:
    """Where an export's JSON report goes: ``<export>.report.json``."""
    export_path = Path(export_path)
    return export_path.with_name(export_path.name + ".report.json")
