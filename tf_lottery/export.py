"""Export a ticket: a stripped SavedModel, or a sparse TFLite file verified in LiteRT.

Every export strips the TF-MOT wrappers (the masks stay as exact zeros), writes into a
temporary path beside the target, loads what it wrote back (``tf.saved_model.load``, or
the LiteRT interpreter on one thread with its default XNNPACK delegate, the way a phone
runs it), compares the outputs with the Keras model's, and only then moves the result
into place. A failed check deletes the temporary copy and raises :class:`ExportError`:
an export never leaves a file that does not load, run and agree. Nothing is overwritten.

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

Every export returns an :class:`ExportReport`, prints it and saves it as JSON beside the
export (``<export>.report.json``).

Example::

    report = tfl.export_tflite(ticket, "saved_models/lenet.tflite", quantize="int8",
                               representative_data=x_train[:500], test_data=(x_test, y_test))
    report.speedup, report.size_reduction, report.exported_accuracy
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import tarfile
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from tf_lottery import _compat
from tf_lottery.atomic import replacing
from tf_lottery.masks import Masks
from tf_lottery.wrap import strip_pruning

SAVED_MODELS_DIR = Path(__file__).resolve().parent.parent / "saved_models"
QUANTIZE = (None, "dynamic", "int8")
_PRECISION = {None: "float32", "dynamic": "dynamic-range int8", "int8": "int8"}
CALIBRATION_SAMPLES = 500   # representative_data samples the int8 calibration uses
RANDOM_SAMPLES = 64         # uniform [0, 1) inputs verified when no data is given
FLOAT_TOLERANCE = 1e-4      # max |TFLite - Keras| of a float export, relative to max |Keras|
SPARSE_BLOCK = {"int8": 16, None: 4}  # the 1 x n blocks TFLite's sparse kernels take
MIN_SPARSITY = 0.3          # TFLiteConverter stores a kernel with fewer zeros dense
_DENSE_FORMAT = ("pass sparse=False for a dense-format file (gzip shrinks its zeros to about "
                 "the sparse size)")


class ExportError(RuntimeError):
    """An export did not convert, load, run or agree with Keras; nothing was written."""


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What one export wrote and how it measured.

    Sizes are in bytes (``gzip_bytes``: the file gzipped, or a SavedModel directory as a
    .tar.gz), latencies the median in milliseconds of single-image invocations on one
    thread. ``weights_kept`` and ``layer_sparsity`` count the nonzero kernels of the
    prunable layers; ``kernel_block`` is the largest TFLite block size (16, 4, else 1) in
    which every kernel's zeros come. ``agreement`` is the fraction of the ``samples``
    verification inputs on which the export's arg-max output equals the Keras model's.
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
        lines.append(f"  agrees with Keras on {self.agreement:.2%} of {self.samples} inputs, "
                     f"max |difference| {self.max_abs_diff:.3g}")
        if self.keras_accuracy is not None:
            lines.append(f"  test accuracy: Keras {self.keras_accuracy:.2%}, "
                         f"{self.format} {self.exported_accuracy:.2%}")
        return "\n".join(lines)


def report_path(export_path) -> Path:
    """Where an export's JSON report goes: ``<export>.report.json``."""
    export_path = Path(export_path)
    return export_path.with_name(export_path.name + ".report.json")


def export_saved_model(model, path=None, test_data=None, *, verbose: bool = True) -> ExportReport:
    """Write ``model`` stripped of its pruning wrappers as a SavedModel, verified after writing.

    The SavedModel has a ``serving_default`` signature (and loads back as a tf_keras model
    too). Before it is moved into place it is loaded with ``tf.saved_model.load``: its
    variables must equal the stripped model's bit for bit (so its kernels hold the masks'
    zeros) and its predictions the Keras model's.

    Args:
      model: a LotteryModel, any tf_keras model with TF-MOT wrappers, or a plain tf_keras
        model; one input, one output.
      path: a directory that does not exist yet (default ``saved_models/<model name>``).
      test_data: ``(x, y)`` or ``x`` to verify on (and measure accuracy with, given ``y``);
        default: uniform random inputs in [0, 1).
      verbose: print the report.

    Example::

        report = tfl.export_saved_model(pruned, "saved_models/lenet", test_data=(x, y))
        served = tf.saved_model.load("saved_models/lenet").signatures["serving_default"]
    """
    ticket = _plain_model(model)
    x, y = _verification_data(ticket, test_data, None)
    path = _target(path, ticket.name)
    expected = _keras_outputs(ticket, x)
    with _staged(path, fix="") as staged:
        ticket.save(staged, save_format="tf", include_optimizer=False)
        loaded = tf.saved_model.load(str(staged))
        _check_variables(loaded, ticket)
        outputs = _serve(loaded.signatures["serving_default"], x)
        _check_outputs(outputs, expected, "float32 SavedModel", min_agreement=None)
        report = _report(ticket, path, staged, "SavedModel", "float32", y, expected, outputs)
    return _finish(report, verbose)


def export_tflite(model, path=None, quantize: Optional[str] = None, representative_data=None,
                  test_data=None, *, sparse: bool = True, min_agreement: float = 0.98,
                  latency_runs: int = 200, verbose: bool = True) -> ExportReport:
    """Convert ``model`` to TFLite, run the file in LiteRT, and keep it only if it agrees.

    The weights are stored sparse (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``) unless
    ``sparse=False``. The written file is loaded in ``ai_edge_litert``'s interpreter (one
    thread, default delegates), run image by image on the verification inputs (int8 inputs
    quantized and outputs dequantized with the file's scale and zero point) and compared
    with the Keras model: a float32 export must match within ``FLOAT_TOLERANCE``, a
    quantized one must pick the same class on at least ``min_agreement`` of the inputs.
    Latency is the median of ``latency_runs`` single-image runs, interleaved with the dense
    float32 TFLite of the same model, converted in memory.

    A combination LiteRT cannot run (unstructured sparse int8, sparse dynamic range) or
    that would lose weights (a partial last block) raises ExportError naming the fix and
    leaves no file; it never falls back to another encoding on its own.

    Args:
      model: a LotteryModel, any tf_keras model with TF-MOT wrappers, or a plain tf_keras
        model; one input, one output.
      path: a file that does not exist yet (default
        ``saved_models/<model name>_<sparse|dense>_<float32|dynamic|int8>.tflite``).
      quantize: None (float32), "dynamic" (int8 weights, float activations) or "int8"
        (full integer, int8 input and output).
      representative_data: ``x`` or ``(x, y)``, inputs that calibrate int8 (the first
        ``CALIBRATION_SAMPLES``); required for, and only for, ``quantize="int8"``.
      test_data: ``(x, y)`` or ``x`` to verify on and measure accuracy with; default: the
        representative data, else uniform random inputs in [0, 1).
      sparse: store the weights in TFLite's sparse format.
      min_agreement: the least arg-max agreement with Keras a quantized export must reach.
      latency_runs: timed runs per model.
      verbose: print the report.

    Example::

        report = tfl.export_tflite(ticket, quantize="int8", representative_data=x_train[:500],
                                   test_data=(x_test, y_test))
        print(report.speedup, report.size_reduction)
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    if quantize == "int8" and representative_data is None:
        raise ValueError("quantize='int8' needs representative_data: a few hundred training "
                         "inputs to calibrate the activation ranges with")
    if quantize != "int8" and representative_data is not None:
        raise ValueError(f"representative_data calibrates quantize='int8' only; with "
                         f"quantize={quantize!r} leave it out (pass test_data to verify on)")
    if not 0 < min_agreement <= 1:
        raise ValueError(f"min_agreement must be in (0, 1], got {min_agreement!r}")
    if isinstance(latency_runs, bool) or not isinstance(latency_runs, int) or latency_runs < 1:
        raise ValueError(f"latency_runs must be a whole number >= 1, got {latency_runs!r}")
    ticket = _plain_model(model)
    calibration = None
    if representative_data is not None:
        calibration, _ = _split(ticket, representative_data, "representative_data")
        calibration = calibration[:CALIBRATION_SAMPLES]
    x, y = _verification_data(ticket, test_data, calibration)
    storage = "sparse" if sparse else "dense"
    encoding = f"{storage} {_PRECISION[quantize]}"
    path = _target(path, f"{ticket.name}_{storage}_{quantize or 'float32'}.tflite")
    block = _kernel_block(ticket)
    if sparse and quantize in SPARSE_BLOCK and block % SPARSE_BLOCK[quantize] == 0:
        _check_whole_blocks(ticket, SPARSE_BLOCK[quantize], encoding, path)
    expected = _keras_outputs(ticket, x)
    with _staged(path, fix=_fix(quantize, sparse, block)) as staged:
        staged.write_bytes(_convert(ticket, quantize, calibration, sparse, encoding))
        dense = _convert(ticket, None, None, False, "dense float32")
        outputs = _LiteRT(staged, encoding).predict(x)
        _check_outputs(outputs, expected, f"{encoding} TFLite",
                       min_agreement=min_agreement if quantize else None)
        latency, dense_latency = _median_latencies([staged, dense], x[0], latency_runs)
        report = _report(ticket, path, staged, "TFLite", encoding, y, expected, outputs,
                         latency_ms=latency, dense_latency_ms=dense_latency,
                         dense_size_bytes=len(dense))
    return _finish(report, verbose)


def _fix(quantize, sparse, block) -> str:
    """How to get an export that runs, for an encoding LiteRT failed on."""
    if sparse and quantize == "dynamic":
        return ("Sparse dynamic-range int8 does not run correctly under XNNPACK, LiteRT's "
                "default CPU delegate: export full-integer int8 (quantize='int8' with "
                f"representative_data) from a block_size=16 ticket, or {_DENSE_FORMAT}. ")
    if sparse and quantize == "int8" and block < 16:
        ticket = ("Unstructured sparse int8 cannot run" if block == 1
                  else "Sparse int8 in 1x4 blocks does not run reliably")
        return (f"{ticket} under XNNPACK, LiteRT's default CPU delegate: its sparse int8 "
                "kernels take 1x16 blocks along the input dimension. Prune with block_size=16, "
                f"export float (quantize=None), or {_DENSE_FORMAT}. ")
    if quantize:
        return ("Calibrate with representative_data drawn from the training inputs, export "
                f"float (quantize=None), or {_DENSE_FORMAT}. ")
    return "Export with sparse=False. " if sparse else ""


def _block_name(block: int) -> str:
    return "unstructured" if block == 1 else f"1x{block} blocks"


def _plain_model(model):
    """The stripped tf_keras model to export: wrappers removed, masks applied as zeros."""
    _compat.check_model(model)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"export verifies models with one input and one output; "
                         f"{model.name!r} has {len(model.inputs)} inputs and "
                         f"{len(model.outputs)} outputs")
    return strip_pruning(model) if _compat.pruned_weights(model) else model


def _kernel_masks(model) -> Masks:
    """Nonzero entries of the kernels (rank >= 2 weights) of ``model``'s prunable layers."""
    return Masks({path: variable.numpy() != 0
                  for prefix, layer in _compat.walk_layers(model)
                  if _compat.has_prunable_weights(layer)
                  for path, variable in _compat.weight_paths(layer, prefix).items()
                  if len(variable.shape) >= 2})


def _kernel_block(model) -> int:
    """The largest TFLite block size (16, 4, else 1) in which all of ``model``'s kernels are pruned.

    A block is 16 (or 4) consecutive weights along a kernel's input axis, the axis TFLite's
    sparse FullyConnected kernels block (and the input channels of a convolution): a
    ticket made with ``block_size=16`` reports 16; a dense kernel fits any block size.
    """
    kept = list(_kernel_masks(model).values())
    return next((size for size in SPARSE_BLOCK.values()
                 if all(_whole_blocks(k, size) for k in kept)), 1)


def _whole_blocks(kept: np.ndarray, size: int) -> bool:
    rows = np.moveaxis(kept, -2, 0)
    rows = np.pad(rows, [(0, -rows.shape[0] % size)] + [(0, 0)] * (rows.ndim - 1), mode="edge")
    blocks = rows.reshape((-1, size) + rows.shape[1:])
    return bool(np.all(blocks.all(axis=1) == blocks.any(axis=1)))


def _check_whole_blocks(model, size: int, encoding: str, path) -> None:
    """Refuse a block-sparse encoding that would silently lose kept weights.

    TFLiteConverter stores whole 1 x ``size`` blocks along a Dense kernel's inputs only: when
    the inputs are not a multiple of ``size``, the last, partial block is dropped, and with
    it the weights the ticket keeps there (measured: int8 Lenet-300-100, whose 300 and 100
    inputs are not multiples of 16, loses 0.8 points of accuracy).
    """
    lost = []
    for weight, kept in _kernel_masks(model).items():
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


def _split(model, data, what: str):
    """``(x, y)`` or ``x`` -> float inputs shaped for ``model`` and labels (or None)."""
    if isinstance(data, tuple) and len(data) != 2:
        raise ValueError(f"{what} must be x or a pair (x, y), got a tuple of {len(data)}")
    x, y = data if isinstance(data, tuple) else (data, None)
    x = np.asarray(x, dtype=model.inputs[0].dtype.as_numpy_dtype)
    expected = tuple(model.inputs[0].shape[1:])
    if x.ndim != len(expected) + 1 or len(x) == 0 or any(
            want is not None and want != got for want, got in zip(expected, x.shape[1:])):
        raise ValueError(f"{what} inputs have shape {x.shape}; the model takes "
                         f"(N, {', '.join(str(d) for d in expected)}) with N >= 1")
    if y is not None:
        y = np.asarray(y)
        y = y.argmax(axis=-1) if y.ndim > 1 else y
        if len(y) != len(x):
            raise ValueError(f"{what} has {len(x)} inputs but {len(y)} labels")
    return x, y


def _verification_data(model, test_data, calibration):
    if test_data is not None:
        return _split(model, test_data, "test_data")
    if calibration is not None:
        return calibration, None
    shape = (RANDOM_SAMPLES,) + tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(0).random(shape).astype(np.float32), None


def _target(path, default_name: str) -> Path:
    path = Path(path) if path is not None else SAVED_MODELS_DIR / default_name
    for taken in (path, report_path(path)):
        if taken.exists() or taken.is_symlink():
            raise FileExistsError(f"{taken} already exists; exports never overwrite: pass "
                                  "another path= or remove it first")
    return path


@contextlib.contextmanager
def _staged(path: Path, fix: str):
    """A temporary path beside ``path``, moved onto it if the block succeeds, else deleted.

    An ExportError raised in the block comes out with ``fix`` (how to get an export that
    works) and the assurance that nothing was written.
    """
    try:
        with replacing(path) as staged:
            yield staged
    except ExportError as error:
        raise ExportError(f"{error} {fix}Nothing was written to {path}.") from error.__cause__


def _keras_outputs(model, x) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=256, verbose=0))


def _serve(signature, x) -> np.ndarray:
    (name,) = signature.structured_input_signature[1]
    (output,) = signature(**{name: tf.constant(x)}).values()
    return output.numpy()


def _check_variables(loaded, model) -> None:
    stored = {variable.name: variable.numpy() for variable in loaded.variables}
    for variable in model.weights:
        value = stored.get(variable.name)
        if value is None or not np.array_equal(value, variable.numpy()):
            raise ExportError(f"the SavedModel's {variable.name} differs from the model's "
                              "weight.")


def _convert(model, quantize, calibration, sparse: bool, encoding: str) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
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


class _LiteRT:
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
    runners = [_LiteRT(model) for model in models]
    times = [[] for _ in runners]
    for runner in runners:
        runner.set_input(sample)
    for _ in range(runs):
        for runner, elapsed in zip(runners, times):
            start = time.perf_counter()
            runner.invoke()
            elapsed.append(time.perf_counter() - start)
    return [float(np.median(elapsed)) * 1e3 for elapsed in times]


def _check_outputs(outputs, expected, what: str, min_agreement: Optional[float]) -> None:
    """Raise ExportError unless ``outputs`` are finite and agree with Keras's ``expected``.

    ``min_agreement`` None: a float export, equal within FLOAT_TOLERANCE; else the least
    fraction of inputs on which the arg-max output must match.
    """
    broken = int(np.sum(~np.isfinite(outputs).all(axis=-1)))
    if broken:
        raise ExportError(f"the {what} returns NaN or inf on {broken} of {len(outputs)} inputs.")
    if min_agreement is None:
        difference = float(np.max(np.abs(outputs - expected)))
        if difference > FLOAT_TOLERANCE * max(1.0, float(np.abs(expected).max())):
            raise ExportError(f"the {what} differs from Keras by up to {difference:.3g} "
                              f"(tolerance {FLOAT_TOLERANCE} relative to the outputs).")
    else:
        agreement = _agreement(outputs, expected.argmax(axis=-1))
        if agreement < min_agreement:
            raise ExportError(f"the {what} picks the Keras model's class on only "
                              f"{agreement:.2%} of {len(outputs)} inputs "
                              f"(min_agreement={min_agreement}).")


def _agreement(outputs, labels) -> float:
    return float(np.mean(outputs.argmax(axis=-1) == labels))


def _report(model, path, staged, fmt, encoding, y, expected, outputs, **measured):
    """The report of a verified export staged at ``staged``, to be moved to ``path``."""
    kept = _kernel_masks(model)
    return ExportReport(
        path=str(path), format=fmt, encoding=encoding, size_bytes=_size(staged),
        gzip_bytes=_gzip_size(staged), weights_kept=kept.fraction_kept(),
        layer_sparsity=kept.sparsity(), kernel_block=_kernel_block(model),
        samples=len(outputs), agreement=_agreement(outputs, expected.argmax(axis=-1)),
        max_abs_diff=float(np.max(np.abs(outputs - expected))),
        keras_accuracy=None if y is None else _agreement(expected, y),
        exported_accuracy=None if y is None else _agreement(outputs, y), **measured)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _gzip_size(path: Path) -> int:
    if not path.is_dir():
        return len(gzip.compress(path.read_bytes(), compresslevel=9))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=9) as archive:
        archive.add(path, arcname=path.name)
    return buffer.tell()


def _finish(report: ExportReport, verbose: bool) -> ExportReport:
    report.save()
    if verbose:
        print(report)
    return report
