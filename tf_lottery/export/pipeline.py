"""The one export pipeline: stage, write, load, compare, report; a format adapter per format.

:func:`export` strips the model (the masks stay as exact zeros), writes it through the
format's adapter into a temporary path beside the target, loads what it wrote back and
runs it, compares the outputs with the Keras model's, measures, and only then moves the
result into place. A failed check deletes the temporary copy and raises ExportError with
the adapter's fix: an export never leaves a file that does not load, run and agree.
Nothing is overwritten.

A new format is an :class:`ExportFormat` subclass registered in :data:`FORMATS`
(``export/saved_model.py`` and ``export/tflite.py`` are the two there are).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import tarfile
from pathlib import Path
from typing import Optional

import numpy as np

from tf_lottery.core.masks import Masks
from tf_lottery.engines import engine_for
from tf_lottery.export.report import ExportReport, report_path
from tf_lottery.foundations.atomic import replacing
from tf_lottery.foundations.checks import did_you_mean
from tf_lottery.foundations.errors import (
    AlreadyExistsError,
    ExportError,
    SettingError,
    SettingTypeError,
)

SAVED_MODELS_DIR = Path("saved_models")  # exports without a path: under the working directory
RANDOM_SAMPLES = 64         # uniform [0, 1) inputs verified when no data is given
FLOAT_TOLERANCE = 1e-4      # max |export - Keras| of a float export, relative to max |Keras|
REGRESSION_TOLERANCE = 0.05  # a quantized single-output export agrees within 5% of the range
SPARSE_BLOCK = {"int8": 16, None: 4}  # the 1 x n blocks TFLite's sparse kernels take

FORMATS: dict = {}


def register_format(cls):
    """Add an ExportFormat subclass to :data:`FORMATS` under its ``name``."""
    FORMATS[cls.name] = cls()
    return cls


class ExportFormat:
    """How one format writes, loads and runs a model; the pipeline does the rest.

    ``options(**kwargs)`` checks the format's own options and returns them as a dict,
    ``prepare(model, options)`` binds them to the stripped model. ``encoding(options)``
    names what will be written, ``default_name(model, options)`` its file name under
    ``saved_models/``, ``check(model, options, path)`` refuses what would not work before
    anything is converted, ``write(model, staged, options)`` writes it, ``run(model,
    staged, x, options)`` loads what was written and returns its outputs on ``x`` and what
    it measured (report fields), ``fix(model, options)`` says how to get an export that
    works when a check fails.
    """

    name = ""
    label = ""

    def options(self, **options) -> dict:
        if options:
            raise SettingError(f"{self.label} exports take no {', '.join(options)}")
        return {}

    def prepare(self, model, options) -> dict:
        """The options bound to the stripped ``model`` (e.g. calibration data shaped for it)."""
        return options

    def encoding(self, options) -> str:
        return "float32"

    def default_name(self, model, options) -> str:
        return model.name

    def check(self, model, options, path) -> None:
        pass

    def write(self, model, staged: Path, options) -> None:
        raise NotImplementedError

    def run(self, model, staged: Path, x, options):
        raise NotImplementedError

    def fix(self, model, options) -> str:
        return ""

    def min_agreement(self, options) -> Optional[float]:
        """None: outputs must equal Keras's within FLOAT_TOLERANCE; else the least fraction
        of inputs a (quantized) export must agree on."""
        return None

    def verification_fallback(self, options):
        """Inputs to verify on when no test_data is given (None: random inputs)."""
        return None


def export_model(model, format: str, path=None, test_data=None, *, verbose: bool = True,
           **options) -> ExportReport:
    """Export ``model`` in ``format`` (a name in :data:`FORMATS`), verified after writing.

    ``options`` are the format's own (see ``export_tflite``); ``test_data`` is ``(x, y)``
    or ``x`` to verify on and measure accuracy with.

    Example::

        report = tfl.export_model(pruned, "tflite", test_data=(x_test, y_test), quantize="int8",
                            representative_data=x_train[:500])
    """
    if format not in FORMATS:
        raise SettingError(f"unknown export format {format!r}.{did_you_mean(format, FORMATS)}"
                           f" The formats: {', '.join(FORMATS)}")
    fmt = FORMATS[format]
    options = fmt.options(**options)
    ticket = plain_model(model)
    options = fmt.prepare(ticket, options)
    x, y = verification_data(ticket, test_data, fmt.verification_fallback(options))
    path = _target(path, fmt.default_name(ticket, options))
    fmt.check(ticket, options, path)
    expected = np.asarray(ticket.predict(x, batch_size=256, verbose=0))
    with _staged(path, fix=fmt.fix(ticket, options)) as staged:
        fmt.write(ticket, staged, options)
        outputs, measured = fmt.run(ticket, staged, x, options)
        encoding = measured.pop("encoding", fmt.encoding(options))
        what = f"{encoding} {fmt.label}"
        check_outputs(outputs, expected, what, fmt.min_agreement(options))
        kept = kernel_masks(ticket)
        report = ExportReport(
            path=str(path), format=fmt.label, encoding=encoding, size_bytes=_size(staged),
            gzip_bytes=_gzip_size(staged), weights_kept=kept.fraction_kept(),
            layer_sparsity=kept.sparsity(), kernel_block=kernel_block(ticket),
            samples=len(outputs), agreement=agreement(outputs, expected),
            max_abs_diff=float(np.max(np.abs(outputs - expected))),
            keras_accuracy=accuracy(expected, y), exported_accuracy=accuracy(outputs, y),
            **measured)
    report.save()
    if verbose:
        print(report)
    return report


def plain_model(model):
    """The model to export: tf_lottery's masking stripped (masks applied as exact zeros);
    one input, one output."""
    engine = engine_for(model)
    engine.check_model(model)
    inputs, outputs = engine.io_counts(model)
    if inputs != 1 or outputs != 1:
        raise SettingError(f"export verifies models with one input and one output; "
                           f"{model.name!r} has {inputs} inputs and {outputs} outputs")
    return engine.strip(model)


def kernel_masks(model) -> Masks:
    """Nonzero entries of the prunable kernels (rank >= 2) of ``model``."""
    engine = engine_for(model)
    return Masks({path: variable.numpy() != 0
                  for prefix, layer in engine.layers(model)
                  for path, variable in engine.weight_paths(layer, prefix).items()
                  if len(variable.shape) >= 2 and any(
                      variable is prunable for prunable in engine.default_prunable(layer))})


def kernel_block(model) -> int:
    """The largest TFLite block size (16, 4, else 1) in which all of ``model``'s kernels are
    pruned: a block is 16 (or 4) consecutive weights along a kernel's input axis, the axis
    TFLite's sparse FullyConnected kernels block (and the input channels of a convolution).
    A ticket made with ``block_size=16`` reports 16; a dense kernel fits any block size."""
    kept = list(kernel_masks(model).values())
    return next((size for size in SPARSE_BLOCK.values()
                 if all(_whole_blocks(k, size) for k in kept)), 1)


def _whole_blocks(kept: np.ndarray, size: int) -> bool:
    rows = np.moveaxis(kept, -2, 0)
    rows = np.pad(rows, [(0, -rows.shape[0] % size)] + [(0, 0)] * (rows.ndim - 1), mode="edge")
    blocks = rows.reshape((-1, size) + rows.shape[1:])
    return bool(np.all(blocks.all(axis=1) == blocks.any(axis=1)))


def split_data(model, data, what: str):
    """``(x, y)`` or ``x`` -> inputs shaped for ``model`` and labels (or None)."""
    if isinstance(data, tuple) and len(data) != 2:
        raise SettingError(f"{what} must be x or a pair (x, y), got a tuple of {len(data)}")
    x, y = data if isinstance(data, tuple) else (data, None)
    shape, dtype = engine_for(model).input_spec(model)
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


def verification_data(model, test_data, fallback):
    if test_data is not None:
        return split_data(model, test_data, "test_data")
    if fallback is not None:
        return fallback, None
    shape, dtype = engine_for(model).input_spec(model)
    return np.random.default_rng(0).random((RANDOM_SAMPLES,) + tuple(shape)).astype(dtype), None


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


def is_classifier_output(outputs) -> bool:
    return outputs.ndim == 2 and outputs.shape[-1] > 1


def agreement(outputs, expected) -> float:
    """The fraction of inputs on which the export agrees with Keras: the same arg-max class
    for several outputs, within REGRESSION_TOLERANCE of Keras's output range for one."""
    if is_classifier_output(expected):
        return float(np.mean(outputs.argmax(axis=-1) == expected.argmax(axis=-1)))
    span = max(float(np.ptp(expected)), 1e-12)
    close = np.abs(outputs - expected).reshape(len(outputs), -1).max(axis=1) <= \
        REGRESSION_TOLERANCE * span
    return float(np.mean(close))


def accuracy(outputs, labels) -> Optional[float]:
    """Classification accuracy, where it means something: class scores out and integer (or
    one-hot) labels within range; else None (a regressor, or no labels)."""
    if labels is None or not is_classifier_output(outputs):
        return None
    labels = labels.argmax(axis=-1) if labels.ndim > 1 else labels
    if not np.issubdtype(labels.dtype, np.integer) and not np.all(labels == np.round(labels)):
        return None
    if labels.min() < 0 or labels.max() >= outputs.shape[-1]:
        return None
    return float(np.mean(outputs.argmax(axis=-1) == labels))


def check_outputs(outputs, expected, what: str, min_agreement: Optional[float]) -> None:
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
            how = "picks the Keras model's class" if is_classifier_output(expected) else \
                f"comes within {REGRESSION_TOLERANCE:.0%} of the Keras model's output"
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
