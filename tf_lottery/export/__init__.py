"""Export a ticket: a stripped SavedModel, or a sparse TFLite file verified in LiteRT.

One pipeline (:mod:`tf_lottery.export.pipeline`) with a format adapter per format
(:data:`FORMATS`: ``saved_model``, ``tflite``). Every export strips tf_lottery's masking
(the masks stay as exact zeros), writes into a temporary path beside the target, loads
what it wrote back, compares the outputs with the Keras model's, and only then moves the
result into place; a failed check raises :class:`ExportError` and leaves nothing behind.
Every export returns an :class:`ExportReport`, prints it and saves it as JSON beside the
export (``<export>.report.json``).

Example::

    report = tfl.export_tflite(ticket, "saved_models/lenet.tflite", quantize="int8",
                               representative_data=x_train[:500], test_data=(x_test, y_test))
    report.speedup, report.size_reduction, report.exported_accuracy
"""

from tf_lottery.export.pipeline import (
    FLOAT_TOLERANCE,
    FORMATS,
    RANDOM_SAMPLES,
    SAVED_MODELS_DIR,
    ExportFormat,
    export_model,
)
from tf_lottery.export.report import ExportReport, report_path
from tf_lottery.export.saved_model import export_saved_model
from tf_lottery.export.tflite import CALIBRATION_SAMPLES, QUANTIZE, export_tflite
from tf_lottery.foundations.errors import ExportError

__all__ = ["CALIBRATION_SAMPLES", "FLOAT_TOLERANCE", "FORMATS", "QUANTIZE", "RANDOM_SAMPLES",
           "SAVED_MODELS_DIR", "ExportError", "ExportFormat", "ExportReport", "export_model",
           "export_saved_model", "export_tflite", "report_path"]
