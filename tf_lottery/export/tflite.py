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
import re
import tempfile
import time
import warnings
from typing import ClassVar, Optional

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from tf_lottery.export.pipeline import ExportedModel, ExportFormat, register_format, split_data
from tf_lottery.foundations.checks import one_of, whole_number
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
    latency_runs: int = 200

    def __post_init__(self):
        one_of(self.quantize, "quantize", QUANTIZE)
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
        self.latency_runs = whole_number(self.latency_runs, "latency_runs")
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
        staged.write_bytes(_convert(exported, self.quantize, self.calibration, self.sparse,
                                    self.encoding))

    def run(self, exported: ExportedModel, staged, x):
        runner = LiteRT(staged, self.encoding)
        outputs = runner.predict(x)
        dense = _convert(exported, None, None, False, "dense float32")
        latency, dense_latency = _median_latencies([staged, dense], x[0], self.latency_runs)
        return outputs, {"encoding": self._encoding(runner.stores_sparse()),
                         "latency_ms": latency, "dense_latency_ms": dense_latency,
                         "dense_size_bytes": len(dense)}

    def fix(self, exported: ExportedModel) -> str:
        """How to get an export that runs: the known cause in the model where there is one
        (a recurrent loop, float16 layers), else by encoding; sparse=False only where it
        was not already passed."""
        known = _known_causes(exported)
        if known:
            return known
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


def _convert(exported: ExportedModel, quantize, calibration, sparse: bool,
             encoding: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="tf_lottery_tflite_") as workdir:
        converter = exported.engine.tflite_converter(exported.model, workdir)
        return _run_converter(converter, exported.name, quantize, calibration, sparse,
                              encoding)


def _run_converter(converter, name: str, quantize, calibration, sparse: bool,
                   encoding: str) -> bytes:
    converter.optimizations = ([tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []) + \
        ([tf.lite.Optimize.DEFAULT] if quantize else [])
    if quantize == "int8":
        converter.representative_dataset = lambda: ([sample[None]] for sample in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    try:
        with warnings.catch_warnings():  # about TF1 quantized_input_stats, unused by int8 I/O
            warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
            return converter.convert()
    except Exception as error:  # the converter raises ConverterError and plain RuntimeErrors
        raise ExportError(f"TFLiteConverter could not convert {name!r} to {encoding}: "
                          f"{_converter_error(error)}.") from error


class LiteRT:
    """One TFLite model in the LiteRT interpreter, one thread, run one image at a time."""

    def __init__(self, model, encoding: str = "dense float32"):
        source = {"model_content": model} if isinstance(model, bytes) else \
            {"model_path": str(model)}
        try:
            self.interpreter = Interpreter(num_threads=1, **source)
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as error:
            raise ExportError(f"the {encoding} TFLite model fails to load in LiteRT: "
                              f"{_first_line(error)}.") from error
        self.encoding = encoding
        (self.input,) = self.interpreter.get_input_details()
        (self.output,) = self.interpreter.get_output_details()

    def stores_sparse(self) -> bool:
        """Whether any tensor of the file is stored in TFLite's sparse format."""
        return any(detail.get("sparsity_parameters")
                   for detail in self.interpreter.get_tensor_details())

    def set_input(self, sample: np.ndarray) -> None:
        scale, zero_point = self.input["quantization"]
        if scale:
            info = np.iinfo(self.input["dtype"])
            sample = np.clip(np.round(sample / scale + zero_point), info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], sample[None].astype(self.input["dtype"]))

    def invoke(self) -> None:
        try:
            self.interpreter.invoke()
        except RuntimeError as error:
            raise ExportError(f"the {self.encoding} TFLite model fails to run in LiteRT: "
                              f"{_first_line(error)}.") from error

    def predict(self, x: np.ndarray) -> np.ndarray:
        scale, zero_point = self.output["quantization"]
        outputs = []
        for sample in x:
            self.set_input(sample)
            self.invoke()
            output = self.interpreter.get_tensor(self.output["index"])[0]
            outputs.append((output.astype(np.float32) - zero_point) * scale if scale else output)
        return np.stack(outputs)


def _first_line(error) -> str:
    text = str(error).strip()
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__


def _converter_error(error) -> str:
    """The converter's first line without MLIR's locations (``<unknown>:0: error:
    loc(callsite(...)): ``), which name graph nodes, not what went wrong."""
    return re.sub(r"\s*(<[^>]*>|/\S*?):\d+(:\d+)?: error: (loc\(.*?\)+: )?", " ",
                  _first_line(error)).strip()


def _median_latencies(models, sample, runs: int) -> list:
    """Median ms per run of each model on ``sample``, runs interleaved so drift hits all alike.

    The median shrugs off the first, slower runs that prepare the delegate's kernels.
    """
    runners = [LiteRT(model) for model in models]
    times = [[] for _ in runners]
    for runner in runners:
        runner.set_input(sample)
    for _ in range(runs):
        for runner, elapsed in zip(runners, times):
            start = time.perf_counter()
            runner.invoke()
            elapsed.append(time.perf_counter() - start)
    return [float(np.median(elapsed)) * 1e3 for elapsed in times]
