"""The SavedModel format: a stripped ticket for TensorFlow Serving, checked bit for bit."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow as tf

from tf_lottery.export.pipeline import ExportedModel, ExportFormat, register_format
from tf_lottery.foundations.errors import ExportError


@register_format
@dataclasses.dataclass
class SavedModelFormat(ExportFormat):
    """``serving_default`` SavedModel; its variables must equal the model's bit for bit. It
    has no options: it stores the float32 weights as they are."""

    name: ClassVar[str] = "saved_model"
    label: ClassVar[str] = "SavedModel"

    @classmethod
    def refusal(cls, options: list) -> str:
        verb = "applies" if len(options) == 1 else "apply"
        return (f"a SavedModel stores the float32 weights as they are: {', '.join(options)} "
                f"{verb} to TFLite exports only (format='tflite'); leave them out. Nothing was "
                "written.")

    def write(self, exported: ExportedModel, staged) -> None:
        exported.engine.save_serving(exported.model, staged)

    def run(self, exported: ExportedModel, staged, x):
        loaded = tf.saved_model.load(str(staged))
        _check_variables(loaded, exported.model)
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
