"""ExportReport: what one export wrote and how it measured, printed and saved as JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from tf_lottery.export.kernels import OpKernel, kernel_summary
from tf_lottery.export.latency import Latency
from tf_lottery.export.xnnpack_target import ARM_NOTE

BLOCK_SIZES = (16, 4)  # the 1 x n blocks a report names: those LiteRT's sparse kernels take


def _block_name(block: int) -> str:
    return "unstructured" if block == 1 else f"1x{block} blocks"


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What one export wrote and how it measured.

    Sizes are in bytes (``gzip_bytes``: the file gzipped, or a SavedModel directory as a
    .tar.gz). ``latencies`` holds a :class:`~tf_lottery.export.latency.Latency` per thread
    count (1 and all cores): the median in milliseconds of ``latency_runs`` single-image
    invocations in LiteRT of what ``latency_of`` names (the file; for a SavedModel the same
    model as a dense float32 TFLite, or why nothing was timed), against the dense float32
    TFLite of ``dense_reference`` (the same model, or a given full-size dense network);
    ``latency_ms``, ``dense_latency_ms`` and ``speedup`` are the one-thread figures.
    ``kernels`` names, per weighted operator of the timed TFLite, the kernel LiteRT runs it
    with (:mod:`~tf_lottery.export.kernels`; ``kernel_summary`` counts them).
    ``weights_kept`` and ``layer_sparsity`` count the nonzero kernels of the
    prunable layers; ``kernel_block`` is the largest TFLite block size (16, 4, else 1) in
    which every kernel's zeros come. ``agreement`` is the fraction of the ``samples``
    verification inputs on which the export's arg-max output equals the Keras model's;
    ``verified_on`` says what those inputs were (``test_data``, ``representative_data`` or
    which random inputs; "a weak check" where the valid range of an integer input is
    unknown).
    ``dense_size_bytes`` (the dense reference's dense float32 TFLite) is None for a
    SavedModel; the accuracies are None without labels. ``target`` is the device an
    export was checked for (``"arm_xnnpack_sparse"``: see
    :mod:`~tf_lottery.export.xnnpack_target`), else None.

    Example::

        report.save()                       # <export path>.report.json
        ExportReport.from_json(report.to_json()) == report
        [(latency.threads, latency.speedup) for latency in report.latencies]
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
    latency_of: str = ""
    dense_reference: str = "the same model"
    latency_runs: int = 0
    latencies: tuple = ()
    kernels: tuple = ()
    dense_size_bytes: Optional[int] = None
    target: Optional[str] = None

    @property
    def latency_ms(self) -> Optional[float]:
        """Median ms per image on one thread (None where nothing was timed)."""
        return self.latencies[0].ms if self.latencies else None

    @property
    def dense_latency_ms(self) -> Optional[float]:
        """The dense reference's median ms per image on one thread."""
        return self.latencies[0].dense_ms if self.latencies else None

    @property
    def kernel_summary(self) -> str:
        """The kernels LiteRT runs the operators with, counted (see ``kernels``)."""
        return kernel_summary(self.kernels)

    @property
    def size_reduction(self) -> Optional[float]:
        """How many times smaller than the dense float32 TFLite."""
        return self.dense_size_bytes / self.size_bytes if self.dense_size_bytes else None

    @property
    def speedup(self) -> Optional[float]:
        """How many times faster than the dense reference at batch 1 on one thread."""
        return self.latencies[0].speedup if self.latencies else None

    def to_json(self) -> str:
        """The fields, ``latencies`` and ``kernels`` as lists of objects, and the derived
        figures (``size_reduction``, ``speedup``, ``latency_ms``, ``dense_latency_ms``,
        ``kernel_summary``; ``from_json`` ignores them)."""
        fields = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        fields["latencies"] = [latency._asdict() | {"speedup": latency.speedup}
                               for latency in self.latencies]
        fields["kernels"] = [kernel._asdict() for kernel in self.kernels]
        return json.dumps(fields | {name: getattr(self, name) for name in _DERIVED}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ExportReport:
        """The report ``to_json`` (or a saved ``.report.json``) holds."""
        fields = json.loads(text)
        fields["latencies"] = tuple(Latency(item["threads"], item["ms"], item["dense_ms"])
                                    for item in fields["latencies"])
        fields["kernels"] = tuple(OpKernel(**item) for item in fields["kernels"])
        return cls(**{field.name: fields[field.name] for field in dataclasses.fields(cls)
                      if field.name in fields})  # a report written before a field existed

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
        if self.size_reduction is not None:
            lines.append(f"  vs the dense float32 TFLite of {self.dense_reference}: "
                         f"{self.size_reduction:.1f}x smaller")
        if self.latencies:
            lines.append(f"  ms per image (batch 1, median of {self.latency_runs} runs) of "
                         f"{self.latency_of} vs the dense float32 TFLite of "
                         f"{self.dense_reference}:")
            lines += [f"    {latency.threads} thread{'s' if latency.threads > 1 else ''}: "
                      f"{latency.ms:.4f} vs {latency.dense_ms:.4f} "
                      f"({_faster(latency.speedup)})" for latency in self.latencies]
        elif self.latency_of:
            lines.append(f"  latency: {self.latency_of}")
        if self.kernels:
            lines.append(f"  kernels in LiteRT here: {self.kernel_summary}")
        if self.target:
            lines.append(f"  target {self.target}: {ARM_NOTE}")
        lines.append(f"  agrees with Keras on {self.agreement:.2%} of {self.samples} inputs "
                     f"({self.verified_on}), max |difference| {self.max_abs_diff:.3g}")
        if self.keras_accuracy is not None:
            lines.append(f"  test accuracy: Keras {self.keras_accuracy:.2%}, "
                         f"{self.format} {self.exported_accuracy:.2%}")
        return "\n".join(lines)


def _faster(speedup: float) -> str:
    return f"{speedup:.2f}x faster" if speedup >= 1 else f"{1 / speedup:.2f}x slower"


_DERIVED = ("size_reduction", "speedup", "latency_ms", "dense_latency_ms", "kernel_summary")


def report_path(export_path) -> Path:
    """Where an export's JSON report goes: ``<export>.report.json``."""
    export_path = Path(export_path)
    return export_path.with_name(export_path.name + ".report.json")
