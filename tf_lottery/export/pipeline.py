"""The one export pipeline: stage, write, load, compare, report; a format adapter per format.

:func:`export` strips the model (the masks stay as exact zeros), writes it through the
format's adapter into a temporary path beside the target, loads what it wrote back and
runs it, compares the outputs with the Keras model's, measures, and only then moves the
result into place. A failed check deletes the temporary copy and raises ExportError with
the adapter's fix: an export never leaves a file that does not load, run and agree.
Nothing is overwritten.

A new format is an :class:`ExportFormat` subclass registered in :data:`FORMATS`
(``export/saved_model.py`` and ``export/tflite.py`` are the two there are); the model it
gets is an :class:`ExportedModel`, looked at once (engine, plain model, kept kernels).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import io
import tarfile
from pathlib import Path
from typing import Optional

import numpy as np

from tf_lottery.core.masks import Masks
from tf_lottery.engines import engine_for
from tf_lottery.export.kernels import op_kernels
from tf_lottery.export.latency import measure_latencies
from tf_lottery.export.litert import LiteRT, convert
from tf_lottery.export.report import BLOCK_SIZES, ExportReport, report_path
from tf_lottery.foundations.atomic import replacing
from tf_lottery.foundations.checks import did_you_mean, whole_number
from tf_lottery.foundations.errors import (
    AlreadyExistsError,
    ExportError,
    SettingError,
    SettingTypeError,
    TfLotteryError,
)

SAVED_MODELS_DIR = Path("saved_models")  # exports without a path: under the working directory
RANDOM_SAMPLES = 64         # random inputs verified when no data is given
_UNKNOWN_RANGE = 2          # an integer input of unknown range is drawn from [0, 2)
FLOAT_TOLERANCE = 1e-4      # max |export - Keras| of a float export, relative to max |Keras|
_REGRESSION_TOLERANCE = 0.05  # a quantized single-output export agrees within 5% of the range
LATENCY_RUNS = 200          # timed single-image runs per model and thread count

FORMATS: dict = {}


def register_format(cls):
    """Add an ExportFormat subclass to :data:`FORMATS` under its ``name``."""
    FORMATS[cls.name] = cls
    return cls


class ExportedModel:
    """The model an export converts, looked at once: its engine, the plain model
    (tf_lottery's masking stripped, pruned weights exactly 0), the kept entries of its
    prunable kernels, and its one input's shape and dtype."""

    def __init__(self, model):
        self.engine = engine_for(model)
        self.engine.check_model(model)
        inputs, outputs = self.engine.io_counts(model)
        if inputs != 1 or outputs != 1:
            raise SettingError(f"export verifies models with one input and one output; "
                               f"{model.name!r} has {inputs} inputs and {outputs} outputs")
        self.model = self.engine.plain(model)
        self.name = self.model.name
        self.kept = self._kept_kernels()
        self.input_shape, self.input_dtype = self.engine.input_spec(self.model)

    def _kept_kernels(self) -> Masks:
        """Nonzero entries of the prunable kernels (rank >= 2)."""
        engine = self.engine
        return Masks({path: variable.numpy() != 0
                      for prefix, layer in engine.layers(self.model)
                      for path, variable in engine.weight_paths(layer, prefix).items()
                      if len(variable.shape) >= 2 and any(
                          variable is prunable for prunable in engine.default_prunable(layer))})

    def block(self, sizes=BLOCK_SIZES) -> int:
        """The largest of ``sizes`` in which every kernel is pruned (else 1): a block is that
        many consecutive weights along a kernel's input axis (the axis TFLite's sparse
        FullyConnected kernels block; the input channels of a convolution). A ticket made
        with ``block_size=16`` gives 16; a dense kernel fits any block size."""
        return next((size for size in sizes
                     if all(_whole_blocks(k, size) for k in self.kept.values())), 1)

    def predict(self, x) -> np.ndarray:
        return np.asarray(self.model.predict(x, batch_size=256, verbose=0))

    @functools.cached_property
    def dense_tflite(self) -> bytes:
        """The model as a dense float32 TFLite flatbuffer (converted once, in memory)."""
        self.engine.check_tflite(self.model)
        return convert(self)


class ExportFormat:
    """How one format writes, loads and runs a model; the pipeline does the rest.

    Made with the format's own options (checked there). ``prepare(exported)`` binds them
    to the model (e.g. calibration data shaped for its input), ``encoding`` names what will
    be written, ``default_name(exported)`` its file name under ``saved_models/``,
    ``check(exported, path)`` refuses what would not work before anything is converted,
    ``write(exported, staged)`` writes it, ``run(exported, staged, x)`` loads what was
    written and returns its outputs on ``x`` and what it measured (report fields),
    ``fix(exported)`` says how to get an export that works when a check fails,
    ``timed(exported, staged)`` gives the TFLite model whose latency the report gives and
    what it is. The ``exported`` argument is the :class:`ExportedModel`.
    """

    name = ""
    label = ""
    encoding = "float32"
    # None: outputs must equal Keras's within FLOAT_TOLERANCE; else the least fraction of
    # inputs a (quantized) export must agree on
    required_agreement = None

    @classmethod
    def with_options(cls, **options) -> ExportFormat:
        """The format made with ``options``; one it does not take is refused, named."""
        cls.refuse_unknown(options)
        return cls(**options)

    @classmethod
    def refuse_unknown(cls, names) -> None:
        """Refuse, named, the option ``names`` the format does not take (checked before
        anything is loaded; their values are checked by ``with_options``)."""
        unknown = sorted(set(names) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise SettingError(cls.refusal(unknown))

    @classmethod
    def refusal(cls, options: list) -> str:
        return (f"{cls.label} exports take no {', '.join(options)}; they take "
                f"{', '.join(f.name for f in dataclasses.fields(cls)) or 'no options'}")

    def prepare(self, exported: ExportedModel) -> None:
        """Bind the options to the model, refusing a model the format cannot take."""

    def default_name(self, exported: ExportedModel) -> str:
        return exported.name

    def check(self, exported: ExportedModel, path) -> None:
        pass

    def write(self, exported: ExportedModel, staged: Path) -> None:
        raise NotImplementedError

    def run(self, exported: ExportedModel, staged: Path, x):
        raise NotImplementedError

    def fix(self, exported: ExportedModel) -> str:
        return ""

    def timed(self, exported: ExportedModel, staged: Path) -> tuple:
        """The TFLite file or flatbuffer to time for this export, and what it is."""
        return exported.dense_tflite, (f"the model as a dense float32 TFLite (a {self.label} "
                                       "stores its kernels dense)")

    def verification_inputs(self):
        """Inputs to verify on when no test_data is given (None: random inputs)."""
        return None


def export_model(model, format: str, path=None, test_data=None, *, verbose: bool = True,
                 dense_reference=None, latency_runs: int = LATENCY_RUNS,
                 **options) -> ExportReport:
    """Export ``model`` in ``format`` (a name in :data:`FORMATS`), verified after writing.

    ``options`` are the format's own (see ``export_tflite``); ``test_data`` is ``(x, y)``
    or ``x`` to verify on and measure accuracy with. The report gives the latency (median
    of ``latency_runs`` single-image runs, on one thread and on all cores) against the
    dense float32 TFLite of ``dense_reference``: by default the same model, or a Keras
    model taking the same input, e.g. the full-size dense network of a ticket whose
    channels were removed.

    Example::

        report = tfl.export_model(pruned, "tflite", test_data=(x_test, y_test),
                                  quantize="int8", representative_data=x_train[:500])
        tfl.export_model(narrow, "tflite", dense_reference=full_size).speedup
    """
    if format not in FORMATS:
        raise SettingError(f"unknown export format {format!r}.{did_you_mean(format, FORMATS)}"
                           f" The formats: {', '.join(FORMATS)}")
    latency_runs = whole_number(latency_runs, "latency_runs")
    fmt = FORMATS[format].with_options(**options)
    exported = ExportedModel(model)
    reference = _dense_reference(exported, dense_reference)
    fmt.prepare(exported)
    x, y, verified_on = _verification_data(exported, test_data, fmt.verification_inputs())
    path = _target(path, fmt.default_name(exported))
    fmt.check(exported, path)
    expected = exported.predict(x)
    with _staged(path, fix=fmt.fix(exported)) as staged:
        fmt.write(exported, staged)
        outputs, measured = fmt.run(exported, staged, x)
        encoding = measured.pop("encoding", fmt.encoding)
        _check_outputs(outputs, expected, f"{encoding} {fmt.label}", fmt.required_agreement)
        report = ExportReport(
            path=str(path), format=fmt.label, encoding=encoding, size_bytes=_size(staged),
            gzip_bytes=_gzip_size(staged), weights_kept=exported.kept.fraction_kept(),
            layer_sparsity=exported.kept.sparsity(), kernel_block=exported.block(),
            samples=len(outputs), verified_on=verified_on,
            agreement=agreement(outputs, expected),
            max_abs_diff=float(np.max(np.abs(outputs - expected))),
            keras_accuracy=accuracy(expected, y), exported_accuracy=accuracy(outputs, y),
            **_timing(fmt, exported, staged, reference, x[0], latency_runs), **measured)
    report.save()
    if verbose:
        print(report)
    return report


def _dense_reference(exported: ExportedModel, dense_reference) -> ExportedModel:
    """The ExportedModel the export's latency is compared with: ``exported`` itself by
    default, else ``dense_reference``, which must take the same input."""
    if dense_reference is None:
        return exported
    reference = ExportedModel(dense_reference)
    if (reference.input_shape, reference.input_dtype) != (exported.input_shape,
                                                          exported.input_dtype):
        raise SettingError(
            f"dense_reference {reference.name!r} takes inputs of shape "
            f"{reference.input_shape} ({reference.input_dtype}), the exported "
            f"{exported.name!r} {exported.input_shape} ({exported.input_dtype}): pass the "
            "full-size dense network of the same task, or leave dense_reference out to "
            "compare with the exported model converted dense")
    return reference


def _timing(fmt: ExportFormat, exported: ExportedModel, staged: Path,
            reference: ExportedModel, sample, runs: int) -> dict:
    """The report's latency fields: the format's timed TFLite against the reference's dense
    float32 TFLite on each thread count, and the kernels LiteRT runs its operators with;
    where the model cannot become a TFLite (e.g. a JAX-backed Keras 3 SavedModel),
    ``latency_of`` says why nothing was timed."""
    described = "the same model" if reference is exported else repr(reference.name)
    try:
        timed, what = fmt.timed(exported, staged)
        dense = reference.dense_tflite
    except TfLotteryError as error:
        return {"latency_of": f"not measured: {error}", "dense_reference": described}
    return {"latency_of": what, "dense_reference": described, "latency_runs": runs,
            "latencies": measure_latencies(timed, dense, sample, runs),
            "kernels": op_kernels(LiteRT(timed).interpreter),
            # sizes compare where the written file is the one timed (a TFLite export)
            "dense_size_bytes": len(dense) if timed == staged else None}


def _whole_blocks(kept: np.ndarray, size: int) -> bool:
    rows = np.moveaxis(kept, -2, 0)
    rows = np.pad(rows, [(0, -rows.shape[0] % size)] + [(0, 0)] * (rows.ndim - 1), mode="edge")
    blocks = rows.reshape((-1, size) + rows.shape[1:])
    return bool(np.all(blocks.all(axis=1) == blocks.any(axis=1)))


def split_data(exported: ExportedModel, data, what: str):
    """``(x, y)`` or ``x`` -> inputs shaped for the exported model and labels (or None)."""
    if isinstance(data, tuple) and len(data) != 2:
        raise SettingError(f"{what} must be x or a pair (x, y), got a tuple of {len(data)}")
    x, y = data if isinstance(data, tuple) else (data, None)
    shape, dtype = exported.input_shape, exported.input_dtype
    x = np.asarray(x, dtype=dtype)
    if x.ndim != len(shape) + 1 or len(x) == 0 or any(
            want is not None and want != got for want, got in zip(shape, x.shape[1:])):
        raise SettingError(f"{what} inputs have shape {x.shape}; the model takes "
                           f"(N, {', '.join(str(d) for d in shape)}) with N >= 1")
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(x):
            raise SettingError(f"{what} has {len(x)} inputs but {len(y)} labels")
    return x, y


def _verification_data(exported: ExportedModel, test_data, fallback):
    """Inputs and labels (or None) to verify on, and what they are (``verified_on``)."""
    if test_data is not None:
        return *split_data(exported, test_data, "test_data"), "test_data"
    if fallback is not None:
        return fallback, None, "representative_data"
    x, verified_on = _random_inputs(exported)
    return x, None, verified_on


def _random_inputs(exported: ExportedModel) -> tuple:
    """RANDOM_SAMPLES inputs the model takes, and what they are: integers below the input's
    range (an Embedding's ``input_dim``); where an integer input's range is unknown, 0 and 1
    (a weak check, and the report says so); else uniform in [0, 1)."""
    shape = (RANDOM_SAMPLES,) + tuple(exported.input_shape)
    if None in shape:
        raise SettingError(f"the model's input has shape (N, {', '.join(map(str, shape[1:]))})"
                           ", with a dimension of no fixed size, so no random inputs can be "
                           "drawn to verify the export on: pass test_data")
    rng, dtype = np.random.default_rng(0), exported.input_dtype
    bound = exported.engine.input_range(exported.model)
    if bound is not None:
        return (rng.integers(0, bound, shape).astype(dtype),
                f"random integers in [0, {bound}), the input_dim of the Embedding it feeds")
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        return (rng.integers(0, _UNKNOWN_RANGE, shape).astype(dtype),
                f"random integers in [0, {_UNKNOWN_RANGE}): a weak check, the model's integer "
                "input feeds no Embedding, so its valid range is unknown; pass test_data")
    return rng.random(shape).astype(dtype), "random inputs in [0, 1)"


def _target(path, default_name: str) -> Path:
    if path is not None and not isinstance(path, (str, Path)):
        raise SettingTypeError(f"path must be a file or directory path, got {path!r}")
    path = Path(path) if path is not None else SAVED_MODELS_DIR / default_name
    for taken in (path, report_path(path)):
        if taken.exists() or taken.is_symlink():
            raise AlreadyExistsError(f"{taken} already exists; exports never overwrite: pass "
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


def _is_classifier_output(outputs) -> bool:
    return outputs.ndim == 2 and outputs.shape[-1] > 1


def agreement(outputs, expected) -> float:
    """The fraction of inputs on which the export agrees with Keras: the same arg-max class
    for several outputs, within _REGRESSION_TOLERANCE of Keras's output range for one."""
    if _is_classifier_output(expected):
        return float(np.mean(outputs.argmax(axis=-1) == expected.argmax(axis=-1)))
    span = max(float(np.ptp(expected)), 1e-12)
    close = np.abs(outputs - expected).reshape(len(outputs), -1).max(axis=1) <= \
        _REGRESSION_TOLERANCE * span
    return float(np.mean(close))


def accuracy(outputs, labels) -> Optional[float]:
    """Classification accuracy, where it means something: class scores out and integer (or
    one-hot) labels within range; else None (a regressor, or no labels)."""
    if labels is None or not _is_classifier_output(outputs):
        return None
    labels = labels.argmax(axis=-1) if labels.ndim > 1 else labels
    if not np.issubdtype(labels.dtype, np.integer) and not np.all(labels == np.round(labels)):
        return None
    if labels.min() < 0 or labels.max() >= outputs.shape[-1]:
        return None
    return float(np.mean(outputs.argmax(axis=-1) == labels))


def _check_outputs(outputs, expected, what: str, min_agreement: Optional[float]) -> None:
    """Raise ExportError unless ``outputs`` are finite and agree with Keras's ``expected``.

    ``min_agreement`` None: a float export, equal within FLOAT_TOLERANCE; else the least
    fraction of inputs on which the export must agree (the same class).
    """
    broken = int(np.sum(~np.isfinite(outputs).reshape(len(outputs), -1).all(axis=-1)))
    if broken:
        raise ExportError(f"the {what} returns NaN or inf on {broken} of {len(outputs)} inputs.")
    if min_agreement is None:
        difference = float(np.max(np.abs(outputs - expected)))
        if difference > FLOAT_TOLERANCE * max(1.0, float(np.abs(expected).max())):
            raise ExportError(f"the {what} differs from Keras by up to {difference:.3g} "
                              f"(tolerance {FLOAT_TOLERANCE} relative to the outputs).")
    else:
        agreed = agreement(outputs, expected)
        if agreed < min_agreement:
            how = "picks the Keras model's class" if _is_classifier_output(expected) else \
                f"comes within {_REGRESSION_TOLERANCE:.0%} of the Keras model's output"
            raise ExportError(f"the {what} {how} on only {agreed:.2%} of {len(outputs)} "
                              f"inputs (min_agreement={min_agreement}).")


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
