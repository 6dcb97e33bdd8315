"""LiteRT, where exports are converted and run: TFLiteConverter in memory, and one TFLite
model in LiteRT's interpreter, run one image at a time."""

from __future__ import annotations

import re
import tempfile
import warnings

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from tf_lottery.foundations.errors import ExportError


def convert(exported, quantize=None, calibration=None, sparse: bool = False,
            encoding: str = "dense float32") -> bytes:
    """The TFLite flatbuffer of an ExportedModel (default: dense float32), in memory."""
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
                          f"{converter_error(error)}.") from error


class LiteRT:
    """One TFLite model in the LiteRT interpreter (default delegates: XNNPACK), run one
    image at a time on ``threads`` threads."""

    def __init__(self, model, encoding: str = "dense float32", threads: int = 1):
        source = {"model_content": model} if isinstance(model, bytes) else \
            {"model_path": str(model)}
        try:
            self.interpreter = Interpreter(num_threads=threads, **source)
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as error:
            raise ExportError(f"the {encoding} TFLite model fails to load in LiteRT: "
                              f"{first_line(error)}.") from error
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
                              f"{first_line(error)}.") from error

    def predict(self, x: np.ndarray) -> np.ndarray:
        scale, zero_point = self.output["quantization"]
        outputs = []
        for sample in x:
            self.set_input(sample)
            self.invoke()
            output = self.interpreter.get_tensor(self.output["index"])[0]
            outputs.append((output.astype(np.float32) - zero_point) * scale if scale else output)
        return np.stack(outputs)


def first_line(error) -> str:
    text = str(error).strip()
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__


def converter_error(error) -> str:
    """The converter's first line without MLIR's locations (``<unknown>:0: error:
    loc(callsite(...)): ``), which name graph nodes, not what went wrong."""
    return re.sub(r"\s*(<[^>]*>|/\S*?):\d+(:\d+)?: error: (loc\(.*?\)+: )?", " ",
                  first_line(error)).strip()
