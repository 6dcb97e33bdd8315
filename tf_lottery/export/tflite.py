"""The TFLite format: sparse (or dense) float32 / int8 files, run in LiteRT before they count.

What LiteRT runs (TF 2.21, ai-edge-litert 2.3, Lenet-300-100 tickets at 3.6% of weights;
benchmarks/export_size_latency.py):

- sparse float32: every ticket. 1x4 blocks (``block_size=4``): about 23x smaller and 6x
  faster than the dense float32 file; unstructured: about 9x smaller, 2x faster.
- sparse int8 (full integer): only 1x16 blocks (``block_size=16``) in Dense layers whose
  inputs are a multiple of 16. Unstructured sparse int8 fails to load under XNNPACK, and
  the converter drops a partial last block, so the export raises ExportError rather than
  falling back on its own: ``sparse=False`` asks for a dense-format int8 file (about 4x
  smaller and 4.5x faster than dense float32; gzip shrinks its zeros about 10x more).
- sparse dynamic-range int8: fails to load, or runs and returns NaN or wrong classes;
  refused. Use ``sparse=False`` or full-integer int8.
- The converter stores a kernel with fewer than about 30% zeros dense even when asked for
  sparse: the report's encoding says what the file holds ("dense ..." then).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

from tf_lottery.export.litert import LiteRT, convert
from tf_lottery.export.pipeline import ExportedModel, ExportFormat, register_format, split_data
from tf_lottery.export.xnnpack_target import ARM_XNNPACK_SPARSE, TARGETS, check_xnnpack_sparse
from tf_lottery.foundations.checks import one_of
from tf_lottery.foundations.errors import ExportError, SettingError

QUANTIZE = (None, "dynamic", "int8")
_PRECISION = {None: "float32", "dynamic": "dynamic-range int8", "int8": "int8"}
_SPARSE_BLOCK = {"int8": 16, None: 4}  # the 1 x n blocks TFLite's sparse kernels take
CALIBRATION_SAMPLES = 500   # representative_data samples the int8 calibration uses
_MIN_SPARSITY = 0.3          # TFLiteConverter stores a kernel with fewer zeros dense
_DENSE_FORMAT = ("pass sparse=False for a dense-format file (gzip shrinks its zeros to about "
                 "the sparse size)")


@register_format
@dataclasses.dataclass
class TFLiteFormat(ExportFormat):
    """A TFLite flatbuffer, verified image by image in the LiteRT interpreter.

    Its fields are ``export_tflite``'s options, checked here.
    """

    name: ClassVar[str] = "tflite"
    label: ClassVar[str] = "TFLite"

    quantize: Optional[str] = None
    representative_data: object = None
    sparse: bool = True
    min_agreement: float = 0.98
    target: Optional[str] = None

    def __post_init__(self):
        one_of(self.quantize, "quantize", QUANTIZE)
        one_of(self.target, "target", TARGETS)
        if self.target and (self.quantize or not self.sparse):
            raise SettingError(f"target={self.target!r} is a sparse float32 file, what "
                               "XNNPACK's sparse inference runs: leave quantize and sparse "
                               "out")
        if self.quantize == "int8" and self.representative_data is None:
            raise SettingError("quantize='int8' needs representative_data: a few hundred "
                               "training inputs to calibrate the activation ranges with")
        if self.quantize != "int8" and self.representative_data is not None:
            raise SettingError(f"representative_data calibrates quantize='int8' only; with "
                               f"quantize={self.quantize!r} leave it out (pass test_data to "
                               "verify on)")
        if isinstance(self.min_agreement, bool) or not 0 < self.min_agreement <= 1:
            raise SettingError(f"min_agreement must be in (0, 1], got {self.min_agreement!r}")
        self.sparse = bool(self.sparse)
        self.calibration = None

    def prepare(self, exported: ExportedModel) -> None:
        """Refuse a backend without TFLite; the calibration inputs shaped for the model."""
        exported.engine.check_tflite(exported.model)
        if self.representative_data is not None:
            self.calibration = split_data(exported, self.representative_data,
                                          "representative_data")[0][:CALIBRATION_SAMPLES]

    def verification_inputs(self):
        return self.calibration

    @property
    def encoding(self) -> str:
        return self._encoding(self.sparse)

    def _encoding(self, sparse: bool) -> str:
        return f"{'sparse' if sparse else 'dense'} {_PRECISION[self.quantize]}"

    @property
    def required_agreement(self) -> Optional[float]:
        return self.min_agreement if self.quantize else None

    def default_name(self, exported: ExportedModel) -> str:
        storage = "sparse" if self.sparse else "dense"
        return f"{exported.name}_{storage}_{self.quantize or 'float32'}.tflite"

    def check(self, exported: ExportedModel, path) -> None:
        size = _SPARSE_BLOCK.get(self.quantize)
        if self.sparse and size and exported.block() % size == 0:
            _check_whole_blocks(exported, size, self.encoding, path)

    def write(self, exported: ExportedModel, staged) -> None:
        staged.write_bytes(convert(exported, self.quantize, self.calibration, self.sparse,
                                    self.encoding))

    def run(self, exported: ExportedModel, staged, x):
        runner = LiteRT(staged, self.encoding)
        if self.target == ARM_XNNPACK_SPARSE:
            check_xnnpack_sparse(runner.interpreter)
        return runner.predict(x), {"encoding": self._encoding(runner.stores_sparse()),
                                   "target": self.target}

    def timed(self, exported: ExportedModel, staged) -> tuple:
        return staged, "this file"

    def fix(self, exported: ExportedModel) -> str:
        """How to get an export that runs: the known cause in the model where there is one
        (a recurrent loop, float16 layers), else by encoding; sparse=False only where it
        was not already passed."""
        known = _known_causes(exported)
        if known:
            return known
        if self.target:  # its checks name their own fix
            return ""
        quantize, sparse, block = self.quantize, self.sparse, exported.block()
        dense = f", or {_DENSE_FORMAT}" if sparse else ""
        if sparse and quantize == "dynamic":
            return ("Sparse dynamic-range int8 does not run correctly under XNNPACK, LiteRT's "
                    "default CPU delegate: export full-integer int8 (quantize='int8' with "
                    f"representative_data) from a block_size=16 ticket{dense}. ")
        if sparse and quantize == "int8" and block < 16:
            ticket = ("Unstructured sparse int8 cannot run" if block == 1
                      else "Sparse int8 in 1x4 blocks does not run reliably")
            return (f"{ticket} under XNNPACK, LiteRT's default CPU delegate: its sparse int8 "
                    "kernels take 1x16 blocks along the input dimension. Prune with "
                    f"block_size=16, export float (quantize=None){dense}. ")
        if quantize == "int8":
            return ("Calibrate with representative_data drawn from the training inputs, "
                    f"export float (quantize=None){dense}. ")
        if quantize:
            return f"Export float (quantize=None) or full-integer int8{dense}. "
        return "Export with sparse=False. " if sparse else ""


def _known_causes(exported: ExportedModel) -> str:
    """The fix for what of the model TFLite is known to fail on, or "" (see the engine's
    ``looping_recurrent_layers`` and ``half_precision_layers``)."""
    engine, model = exported.engine, exported.model
    causes = []
    looping = engine.looping_recurrent_layers(model)
    if looping:
        causes.append(f"TFLite sizes the loop of the recurrent {_layers(looping)} only for a "
                      "fixed batch size: give the model's Input batch_size=1 (the export runs "
                      "one input at a time) or build the layer with unroll=True.")
    half = engine.half_precision_layers(model)
    if half:
        causes.append(f"TFLite's kernels do not take the float16 computation (a mixed-"
                      f"precision policy) of {_layers(half)}: build the model again after "
                      "mixed_precision.set_global_policy('float32'), copy the weights in "
                      "(set_weights) and export that.")
    return " ".join(causes + ["Or export a SavedModel (export_saved_model), which takes the "
                              "model as it is. "]) if causes else ""


def _layers(names: list, shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (f"layer{'s' if len(names) > 1 else ''} {', '.join(map(repr, names[:shown]))}"
            f"{more}")


def _check_whole_blocks(exported: ExportedModel, size: int, encoding: str, path) -> None:
    """Refuse a block-sparse encoding that would silently lose kept weights.

    TFLiteConverter stores whole 1 x ``size`` blocks along a Dense kernel's inputs only: when
    the inputs are not a multiple of ``size``, the last, partial block is dropped, and with
    it the weights the ticket keeps there (measured: int8 Lenet-300-100, whose 300 and 100
    inputs are not multiples of 16, loses 0.8 points of accuracy).
    """
    lost = []
    for weight, kept in exported.kept.items():
        rows = kept.shape[0]
        partial = int(kept[rows - rows % size:].sum()) if kept.ndim == 2 and rows % size else 0
        if partial and 1 - kept.mean() >= _MIN_SPARSITY:
            lost.append(f"{weight} ({rows} inputs, {partial} weights kept in the last "
                        f"{rows % size})")
    if lost:
        instead = "export float (quantize=None), " if size > _SPARSE_BLOCK[None] else ""
        raise ExportError(
            f"the {encoding} TFLite would lose weights: TFLiteConverter stores whole 1x{size} "
            f"blocks only and drops the last, partial block of {', '.join(lost)}. Instead "
            f"{instead}{_DENSE_FORMAT}, or give those layers a multiple of {size} inputs. "
            f"Nothing was written to {path}.")
