"""The ARM target: a TFLite file XNNPACK's sparse inference runs faster, checked as written.

``export_tflite(ticket, target="arm_xnnpack_sparse")`` checks, in the file LiteRT loaded,
what XNNPACK's sparse inference needs (:mod:`tf_lottery.engines.sparse_inference` checks
the Keras model before the search): float32, the first CONV_2D's filter stored dense, every
1x1 CONV_2D before the GlobalAveragePooling stored sparse with at least 2/3 zeros, and the
pooling a MEAN that keeps its dimensions. XNNPACK takes that sparse path on ARM devices
only: on x86 with AVX it runs the same file dense, so the latency an export measures here
cannot show the speed-up (the report says so).

Example::

    check_xnnpack_sparse(LiteRT("ticket.tflite").interpreter)   # ExportError if not
"""

from __future__ import annotations

import numpy as np

from tf_lottery.export.kernels import densified_weights, stored_fraction
from tf_lottery.foundations.errors import ExportError

ARM_XNNPACK_SPARSE = "arm_xnnpack_sparse"
TARGETS = (None, ARM_XNNPACK_SPARSE)
MAX_STORED = 1 / 3  # XNNPACK's sparse 1x1 kernels need 2/3 zeros or more
ARM_NOTE = ("XNNPACK's sparse inference runs this file's sparse 1x1 convolutions faster on "
            "ARM devices only; on x86 with AVX (where the latency above was measured) "
            "XNNPACK runs them dense, so that latency cannot show the speed-up")
_FIX = ("Prune with the settings tfl.xnnpack_sparse_settings(model, schedule) gives (it "
        "checks the model and the schedule before the search).")


def check_xnnpack_sparse(interpreter) -> None:
    """Raise ExportError naming what XNNPACK's sparse inference misses in the file an
    allocated LiteRT ``interpreter`` holds, and how to fix it."""
    ops = interpreter._get_ops_details()
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    densified = densified_weights(ops)

    def stored(op) -> dict:  # the filter as the file stores it
        weight = int(op["inputs"][1])
        return tensors[densified.get(weight, weight)]

    convs = [op for op in ops if op["op_name"] == "CONV_2D"]
    pools = [op for op in ops if op["op_name"] == "MEAN" and _keeps_dims(tensors, op)]
    problems = []
    floats = [interpreter.get_input_details()[0]["dtype"]] + \
        [stored(op)["dtype"] for op in convs]
    if any(dtype != np.float32 for dtype in floats):
        problems.append("it is quantized; XNNPACK's sparse inference runs float32 files: "
                        "export with quantize=None")
    if not pools:
        problems.append("it has no MEAN keeping its dimensions (GlobalAveragePooling2D("
                        "keepdims=True)), where XNNPACK's sparse inference ends: build the "
                        "model with keepdims=True and Flatten() after the pooling")
    if not convs:
        problems.append("it has no CONV_2D")
    else:
        if stored_fraction(stored(convs[0])) < 1:
            problems.append(f"the first CONV_2D's filter {stored(convs[0])['name']!r} is "
                            "stored sparse; XNNPACK's sparse inference starts at a dense one: "
                            "leave the first convolution unpruned (exclude it)")
        end = ops.index(pools[0]) if pools else len(ops)
        pointwise = [op for op in convs[1:]
                     if ops.index(op) < end and tuple(stored(op)["shape"][1:3]) == (1, 1)]
        if not pointwise:
            problems.append("it has no 1x1 CONV_2D after the first convolution, the layers "
                            "XNNPACK runs sparse")
        for op in pointwise:
            kept = stored_fraction(stored(op))
            if kept > MAX_STORED + 1e-9:
                how = "is stored dense" if kept == 1 else f"stores {kept:.1%} of its weights"
                problems.append(f"the 1x1 CONV_2D filter {stored(op)['name']!r} {how}; "
                                "XNNPACK runs it sparse only with at least 2/3 zeros, "
                                "stored sparse")
    if problems:
        raise ExportError(f"the TFLite file does not meet XNNPACK's sparse inference "
                          f"conditions (target={ARM_XNNPACK_SPARSE!r}): "
                          f"{'; '.join(problems)}. {_FIX}")


def _keeps_dims(tensors: dict, op) -> bool:
    """Whether a MEAN operator averages over the spatial axes of an NHWC tensor and keeps
    them (a [1, 1, 1, C] output)."""
    shape = tuple(tensors[int(op["outputs"][0])]["shape"])
    return len(shape) == 4 and shape[1:3] == (1, 1)
