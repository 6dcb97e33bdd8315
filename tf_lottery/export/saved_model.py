"""The SavedModel format: a stripped ticket for TensorFlow Serving, checked bit for bit."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_lottery.engines import engine_for
from tf_lottery.export.pipeline import ExportFormat, export_model, register_format
from tf_lottery.export.report import ExportReport
from tf_lottery.foundations.errors import ExportError, SettingError


@register_format
class SavedModelFormat(ExportFormat):
    """``serving_default`` SavedModel; its variables must equal the model's bit for bit."""

    name, label = "saved_model", "SavedModel"

    def options(self, **options) -> dict:
        if options:
            raise SettingError(
                f"a SavedModel stores the float32 weights as they are: "
                f"{', '.join(sorted(options))} apply to TFLite exports only (format='tflite'); "
                "leave them out. Nothing was written.")
        return {}

    def write(self, model, staged, options) -> None:
        engine_for(model).save_serving(model, staged)

    def run(self, model, staged, x, options):
        loaded = tf.saved_model.load(str(staged))
        _check_variables(loaded, model)
        signature = loaded.signatures["serving_default"]
        (name,) = signature.structured_input_signature[1]
        (output,) = signature(**{name: tf.constant(x)}).values()
        return output.numpy(), {}


def _check_variables(loaded, model) -> None:
    """Every weight of ``model`` is stored, bit for bit (so the kernels hold the masks' zeros)."""
    stored = sorted((v.numpy().shape, v.numpy().tobytes()) for v in loaded.variables)
    for variable in model.weights:
        value = np.asarray(variable.numpy())
        if (value.shape, value.tobytes()) not in stored:
            raise ExportError(f"the SavedModel does not hold {variable.name} as the model "
                              "has it.")


def export_saved_model(model, path=None, test_data=None, *, verbose: bool = True) -> ExportReport:
    """Write ``model`` stripped of its masking as a SavedModel, verified after writing.

    The SavedModel has a ``serving_default`` signature. Before it is moved into place it is
    loaded with ``tf.saved_model.load``: its variables must equal the stripped model's bit
    for bit (so its kernels hold the masks' zeros) and its predictions the Keras model's.

    Args:
      model: a LotteryModel, a tf_keras model with TF-MOT wrappers, or a plain Keras model
        (tf_keras, or Keras 3 on the TensorFlow backend); one input, one output.
      path: a directory that does not exist yet (default ``saved_models/<model name>`` in
        the working directory).
      test_data: ``(x, y)`` or ``x`` to verify on (and measure accuracy with, given ``y``);
        default: uniform random inputs in [0, 1).
      verbose: print the report.

    Example::

        report = tfl.export_saved_model(pruned, "saved_models/lenet", test_data=(x, y))
        served = tf.saved_model.load("saved_models/lenet").signatures["serving_default"]
    """
    return export_model(model, "saved_model", path, test_data, verbose=verbose)
