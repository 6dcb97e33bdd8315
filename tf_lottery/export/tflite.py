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

import tempfile
import time
import warnings
from typing import Optional

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from tf_lottery.engines import engine_for
from tf_lottery.export.pipeline import (
    SPARSE_BLOCK,
    ExportFormat,
    export_model,
    kernel_block,
    kernel_masks,
    register_format,
    split_data,
)
from tf_lottery.export.report import ExportReport
from tf_lottery.foundations.checks import one_of, whole_number
from tf_lottery.foundations.errors import ExportError, SettingError

QUANTIZE = (None, "dynamic", "int8")
_PRECISION = {None: "float32", "dynamic": "dynamic-range int8", "int8": "int8"}
CALIBRATION_SAMPLES = 500   # representative_data samples the int8 calibration uses
MIN_SPARSITY = 0.3          # TFLiteConverter stores a kernel with fewer zeros dense
_DENSE_FORMAT = ("pass sparse=False for a dense-format file (gzip shrinks its zeros to about "
                 "the sparse size)")


@register_format
class TFLiteFormat(ExportFormat):
    """A TFLite flatbuffer, verified image by image in the LiteRT interpreter."""

    name, label = "tflite", "TFLite"

    def options(self, quantize=None, representative_data=None, sparse=True,
                min_agreement=0.98, latency_runs=200) -> dict:
        one_of(quantize, "quantize", QUANTIZE)
        if quantize == "int8" and representative_data is None:
            raise SettingError("quantize='int8' needs representative_data: a few hundred "
                               "training inputs to calibrate the activation ranges with")
        if quantize != "int8" and representative_data is not None:
            raise SettingError(f"representative_data calibrates quantize='int8' only; with "
                               f"quantize={quantize!r} leave it out (pass test_data to verify "
                               "on)")
        if isinstance(min_agreement, bool) or not 0 < min_agreement <= 1:
            raise SettingError(f"min_agreement must be in (0, 1], got {min_agreement!r}")
        return {"quantize": quantize, "representative_data": representative_data,
                "sparse": bool(sparse), "min_agreement": min_agreement,
                "latency_runs": whole_number(latency_runs, "latency_runs")}

    def prepare(self, model, options) -> dict:
        """Bind the options to the stripped model: calibration inputs shaped for it."""
        engine_for(model).check_tflite(model)
        calibration = options["representative_data"]
        if calibration is not None:
            calibration = split_data(model, calibration, "representative_data")[0]
            calibration = calibration[:CALIBRATION_SAMPLES]
        return dict(options, calibration=calibration)

    def verification_fallback(self, options):
        return options.get("calibration")

    def encoding(self, options, stored_sparse: Optional[bool] = None) -> str:
        sparse = options["sparse"] if stored_sparse is None else stored_sparse
        return f"{'sparse' if sparse else 'dense'} {_PRECISION[options['quantize']]}"

    def default_name(self, model, options) -> str:
        storage = "sparse" if options["sparse"] else "dense"
        return f"{model.name}_{storage}_{options['quantize'] or 'float32'}.tflite"

    def check(self, model, options, path) -> None:
        quantize = options["quantize"]
        if options["sparse"] and quantize in SPARSE_BLOCK and \
                kernel_block(model) % SPARSE_BLOCK[quantize] == 0:
            _check_whole_blocks(model, SPARSE_BLOCK[quantize], self.encoding(options), path)

    def write(self, model, staged, options) -> None:
        staged.write_bytes(_convert(model, options["quantize"], options["calibration"],
                                    options["sparse"], self.encoding(options)))

    def run(self, model, staged, x, options):
        runner = LiteRT(staged, self.encoding(options))
        outputs = runner.predict(x)
        dense = _convert(model, None, None, False, "dense float32")
        latency, dense_latency = _median_latencies([staged, dense], x[0],
                                                   options["latency_runs"])
        return outputs, {"encoding": self.encoding(options, runner.stores_sparse()),
                         "latency_ms": latency, "dense_latency_ms": dense_latency,
                         "dense_size_bytes": len(dense)}

    def min_agreement(self, options) -> Optional[float]:
        return options["min_agreement"] if options["quantize"] else None

    def fix(self, model, options) -> str:
        """How to get an export that runs, for an encoding LiteRT failed on."""
        quantize, sparse = options["quantize"], options["sparse"]
        block = kernel_block(model)
        if sparse and quantize == "dynamic":
            return ("Sparse dynamic-range int8 does not run correctly under XNNPACK, LiteRT's "
                    "default CPU delegate: export full-integer int8 (quantize='int8' with "
                    f"representative_data) from a block_size=16 ticket, or {_DENSE_FORMAT}. ")
        if sparse and quantize == "int8" and block < 16:
            ticket = ("Unstructured sparse int8 cannot run" if block == 1
                      else "Sparse int8 in 1x4 blocks does not run reliably")
            return (f"{ticket} under XNNPACK, LiteRT's default CPU delegate: its sparse int8 "
                    "kernels take 1x16 blocks along the input dimension. Prune with "
                    f"block_size=16, export float (quantize=None), or {_DENSE_FORMAT}. ")
        if quantize:
            return ("Calibrate with representative_data drawn from the training inputs, "
                    f"export float (quantize=None), or {_DENSE_FORMAT}. ")
        return "Export with sparse=False. " if sparse else ""


def _check_whole_blocks(model, size: int, encoding: str, path) -> None:
    """Refuse a block-sparse encoding that would silently lose kept weights.

    TFLiteConverter stores whole 1 x ``size`` blocks along a Dense kernel's inputs only: when
    the inputs are not a multiple of ``size``, the last, partial block is dropped, and with
    it the weights the ticket keeps there (measured: int8 Lenet-300-100, whose 300 and 100
    inputs are not multiples of 16, loses 0.8 points of accuracy).
    """
    lost = []
    for weight, kept in kernel_masks(model).items():
        rows = kept.shape[0]
        partial = int(kept[rows - rows % size:].sum()) if kept.ndim == 2 and rows % size else 0
        if partial and 1 - kept.mean() >= MIN_SPARSITY:
            lost.append(f"{weight} ({rows} inputs, {partial} weights kept in the last "
                        f"{rows % size})")
    if lost:
        instead = "export float (quantize=None), " if size > SPARSE_BLOCK[None] else ""
        raise ExportError(
            f"the {encoding} TFLite would lose weights: TFLiteConverter stores whole 1x{size} "
            f"blocks only and drops the last, partial block of {', '.join(lost)}. Instead "
            f"{instead}{_DENSE_FORMAT}, or give those layers a multiple of {size} inputs. "
            f"Nothing was written to {path}.")


def _convert(model, quantize, calibration, sparse: bool, encoding: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="tf_lottery_tflite_") as workdir:
        converter = engine_for(model).tflite_converter(model, workdir)
        return _run_converter(converter, model, quantize, calibration, sparse, encoding)


def _run_converter(converter, model, quantize, calibration, sparse: bool, encoding: str) -> bytes:
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
        raise ExportError(f"TFLiteConverter could not convert {model.name!r} to {encoding}: "
                          f"{_first_line(error)}.") from error


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


def export_tflite(model, path=None, quantize: Optional[str] = None, representative_data=None,
                  test_data=None, *, sparse: bool = True, min_agreement: float = 0.98,
                  latency_runs: int = 200, verbose: bool = True) -> ExportReport:
    """Convert ``model`` to TFLite, run the file in LiteRT, and keep it only if it agrees.

    The weights are stored sparse (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``) unless
    ``sparse=False``. The written file is loaded in ``ai_edge_litert``'s interpreter (one
    thread, default delegates), run image by image on the verification inputs (int8 inputs
    quantized and outputs dequantized with the file's scale and zero point) and compared
    with the Keras model: a float32 export must match within ``FLOAT_TOLERANCE``, a
    quantized one must agree (pick the same class) on at least ``min_agreement`` of the
    inputs. Latency is the median of ``latency_runs`` single-image runs, interleaved with
    the dense float32 TFLite of the same model, converted in memory.

    A combination LiteRT cannot run (unstructured sparse int8, sparse dynamic range) or
    that would lose weights (a partial last block) raises ExportError naming the fix and
    leaves no file; it never falls back to another encoding on its own.

    Args:
      model: a LotteryModel, a tf_keras model with TF-MOT wrappers, or a plain Keras model
        (tf_keras, or Keras 3 on the TensorFlow backend); one input, one output.
      path: a file that does not exist yet (default
        ``saved_models/<model name>_<sparse|dense>_<float32|dynamic|int8>.tflite`` in the
        working directory).
      quantize: None (float32), "dynamic" (int8 weights, float activations) or "int8"
        (full integer, int8 input and output).
      representative_data: ``x`` or ``(x, y)``, inputs that calibrate int8 (the first
        ``CALIBRATION_SAMPLES``); required for, and only for, ``quantize="int8"``.
      test_data: ``(x, y)`` or ``x`` to verify on and measure accuracy with; default: the
        representative data, else uniform random inputs in [0, 1).
      sparse: store the weights in TFLite's sparse format.
      min_agreement: the least agreement with Keras a quantized export must reach.
      latency_runs: timed runs per model.
      verbose: print the report.

    Example::

        report = tfl.export_tflite(ticket, quantize="int8", representative_data=x_train[:500],
                                   test_data=(x_test, y_test))
        print(report.speedup, report.size_reduction)
    """
    return export_model(model, "tflite", path, test_data, verbose=verbose, quantize=quantize,
                  representative_data=representative_data, sparse=sparse,
                  min_agreement=min_agreement, latency_runs=latency_runs)
