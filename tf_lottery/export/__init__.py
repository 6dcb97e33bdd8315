"""Export a ticket: a stripped SavedModel, or a sparse TFLite file verified in LiteRT.

One pipeline (:mod:`tf_lottery.export.pipeline`) with a format per format name
(:data:`FORMATS`: ``saved_model``, ``tflite``), each made with its own options. Every
export strips tf_lottery's masking (the masks stay as exact zeros), writes into a
temporary path beside the target, loads what it wrote back, compares the outputs with the
Keras model's, and only then moves the result into place; a failed check raises
:class:`ExportError` and leaves nothing behind. Every export returns an
:class:`ExportReport`, prints it and saves it as JSON beside the export
(``<export>.report.json``).

Example::

    report = tfl.export_tflite(ticket, "saved_models/lenet.tflite", quantize="int8",
                               representative_data=x_train[:500], test_data=(x_test, y_test))
    report.speedup, report.size_reduction, report.exported_accuracy
"""

from tf_lottery.export.cost import GRANULARITIES, SPARSITIES, CostEstimate, cost_estimate
from tf_lottery.export.kernels import OpKernel
from tf_lottery.export.latency import Latency
from tf_lottery.export.pipeline import (
    FLOAT_TOLERANCE,
    FORMATS,
    LATENCY_RUNS,
    RANDOM_SAMPLES,
    SAVED_MODELS_DIR,
    ExportedModel,
    ExportFormat,
    export_model,
)
from tf_lottery.export.report import ExportReport, report_path
from tf_lottery.export.saved_model import SavedModelFormat
from tf_lottery.export.tflite import CALIBRATION_SAMPLES, QUANTIZE, TFLiteFormat
from tf_lottery.foundations.declared import keyword_signature
from tf_lottery.foundations.errors import ExportError


def export_tflite(model, path=None, test_data=None, *, verbose: bool = True,
                  dense_reference=None, latency_runs: int = LATENCY_RUNS,
                  **options) -> ExportReport:
    """Convert ``model`` to TFLite, run the file in LiteRT, and keep it only if it agrees.

    The weights are stored sparse (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``) unless
    ``sparse=False``. The written file is loaded in ``ai_edge_litert``'s interpreter (one
    thread, default delegates), run image by image on the verification inputs (int8 inputs
    quantized and outputs dequantized with the file's scale and zero point) and compared
    with the Keras model: a float32 export must match within ``FLOAT_TOLERANCE``, a
    quantized one must agree (pick the same class) on at least ``min_agreement`` of the
    inputs. Latency is the median of ``latency_runs`` single-image runs on one thread and
    on all cores, interleaved with the dense float32 TFLite (converted in memory) of
    ``dense_reference``; the report also names the kernel LiteRT runs each weighted
    operator of the file with (XNNPACK dense, TFLite's sparse FULLY_CONNECTED, DENSIFY).

    A combination LiteRT cannot run (unstructured sparse int8, sparse dynamic range) or
    that would lose weights (a partial last block) raises ExportError naming the fix and
    leaves no file; it never falls back to another encoding on its own. A model TFLite
    fails on for a known cause (a recurrent layer looping over a batch of unknown size,
    float16 layers) gets that cause's fix instead.

    Args:
      model: a LotteryModel, a tf_keras model with TF-MOT wrappers, or a plain Keras model
        (tf_keras, or Keras 3 on the TensorFlow backend); one input, one output.
      path: a file that does not exist yet (default
        ``saved_models/<model name>_<sparse|dense>_<float32|dynamic|int8>.tflite`` in the
        working directory).
      test_data: ``(x, y)`` or ``x`` to verify on and measure accuracy with; default: the
        representative data, else random inputs (see ``export_saved_model``).
      verbose: print the report.
      dense_reference: the Keras model to compare latency and size with (default: ``model``
        itself converted dense), e.g. the full-size network of a ticket whose channels were
        removed; it must take the same input.
      latency_runs: timed single-image runs per model and thread count.
      **options: :class:`~tf_lottery.export.tflite.TFLiteFormat`'s: ``quantize`` (None:
        float32, "dynamic": int8 weights and float activations, "int8": full integer, int8
        input and output), ``representative_data`` (``x`` or ``(x, y)``, inputs that
        calibrate int8, the first ``CALIBRATION_SAMPLES``; required for, and only for,
        ``quantize="int8"``), ``sparse`` (store the weights in TFLite's sparse format),
        ``min_agreement`` (the least agreement with Keras a quantized export must reach),
        ``target`` ("arm_xnnpack_sparse": check that the written float32 file meets
        XNNPACK's sparse inference conditions, :mod:`~tf_lottery.export.xnnpack_target`;
        its speed-up shows on ARM devices only, not in the latency measured on x86).

    Example::

        report = tfl.export_tflite(ticket, quantize="int8", representative_data=x_train[:500],
                                   test_data=(x_test, y_test))
        print(report.speedup, report.size_reduction)
    """
    return export_model(model, "tflite", path, test_data, verbose=verbose,
                        dense_reference=dense_reference, latency_runs=latency_runs, **options)


def export_saved_model(model, path=None, test_data=None, *, verbose: bool = True,
                       dense_reference=None, latency_runs: int = LATENCY_RUNS) -> ExportReport:
    """Write ``model`` stripped of its masking as a SavedModel, verified after writing.

    The SavedModel has a ``serving_default`` signature. Before it is moved into place it is
    loaded with ``tf.saved_model.load``: its variables must equal the stripped model's bit
    for bit (so its kernels hold the masks' zeros) and its predictions the Keras model's.
    A SavedModel's kernels are dense, so its latency is that of the same model as a dense
    float32 TFLite in LiteRT, against ``dense_reference``'s (as for ``export_tflite``);
    where the model cannot become a TFLite (a JAX-backed Keras 3 model, an LSTM looping
    over an unknown batch size), the report says why nothing was timed.

    Args:
      model: a LotteryModel, a tf_keras model with TF-MOT wrappers, or a plain Keras model
        (tf_keras, or Keras 3 on the TensorFlow backend); one input, one output.
      path: a directory that does not exist yet (default ``saved_models/<model name>`` in
        the working directory).
      test_data: ``(x, y)`` or ``x`` to verify on (and measure accuracy with, given ``y``);
        default: ``RANDOM_SAMPLES`` random inputs: token ids below the least ``input_dim``
        of the Embeddings the input feeds, 0s and 1s for another integer input (the
        report's ``verified_on`` calls that a weak check), else uniform in [0, 1).
      verbose: print the report.
      dense_reference, latency_runs: as for ``export_tflite``.

    Example::

        report = tfl.export_saved_model(pruned, "saved_models/lenet", test_data=(x, y))
        served = tf.saved_model.load("saved_models/lenet").signatures["serving_default"]
    """
    return export_model(model, "saved_model", path, test_data, verbose=verbose,
                        dense_reference=dense_reference, latency_runs=latency_runs)


export_tflite.__signature__ = keyword_signature(export_tflite, TFLiteFormat)

__all__ = ["CALIBRATION_SAMPLES", "FLOAT_TOLERANCE", "FORMATS", "GRANULARITIES",
           "LATENCY_RUNS", "QUANTIZE", "RANDOM_SAMPLES", "SAVED_MODELS_DIR", "SPARSITIES",
           "CostEstimate", "ExportError", "ExportFormat", "ExportReport", "ExportedModel",
           "Latency", "OpKernel", "SavedModelFormat", "TFLiteFormat", "cost_estimate",
           "export_model", "export_saved_model", "export_tflite", "report_path"]
