"""Which kernel runs each weighted operator of a TFLite file in LiteRT on this machine.

Read from the interpreter after it applied its default delegate (XNNPACK): an operator
inside a DELEGATE node's partition runs in XNNPACK, on dense weights (on x86 with AVX,
XNNPACK's sparse path is off); one outside it runs TFLite's built-in kernel, which for a
FULLY_CONNECTED operator with a block-sparse weight tensor is TFLite's sparse kernel (what
makes a 1x4 block Dense ticket faster). A DENSIFY operator expands sparse-stored weights to
dense ones once, at load: the file is smaller, the operator it feeds no faster.

Example::

    kernels = op_kernels(LiteRT("lenet.tflite").interpreter)
    kernel_summary(kernels)   # '2 FULLY_CONNECTED by TFLite sparse 1x4, 1 FULLY_CONNECTED ...'
"""

from __future__ import annotations

import collections
from typing import NamedTuple

import numpy as np

# the operators whose weights a ticket prunes
WEIGHTED_OPS = ("CONV_2D", "CONV_3D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED",
                "BATCH_MATMUL")
DENSIFY = "DENSIFY"
XNNPACK = "XNNPACK dense"
BUILT_IN = "TFLite built-in"
DENSIFIED = "sparse weights densified at load"


class OpKernel(NamedTuple):
    """One operator of a TFLite file: its type, the weight tensor it reads, and the kernel
    that runs it (``XNNPACK dense``, ``TFLite sparse 1x4``, ``TFLite built-in``, each
    ``from sparse weights densified at load`` where a DENSIFY op feeds it)."""

    op: str
    weight: str
    kernel: str


def op_kernels(interpreter) -> tuple:
    """The weighted and DENSIFY operators of an allocated LiteRT ``interpreter``, in order."""
    ops = interpreter._get_ops_details()
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    delegated = _delegated(ops)
    densified = densified_weights(ops)
    kernels = []
    for op in ops:
        if op["op_name"] == DENSIFY:
            kernels.append(OpKernel(DENSIFY, tensors[op["inputs"][0]]["name"], DENSIFIED))
        elif op["op_name"] in WEIGHTED_OPS:
            weight = int(op["inputs"][1])
            stored = densified.get(weight, weight)  # the sparse tensor a DENSIFY op expands
            if op["index"] in delegated:
                kernel = XNNPACK
            else:
                kernel = _tflite_kernel(tensors[weight])
            if stored != weight:
                kernel += f" from {DENSIFIED}"
            kernels.append(OpKernel(op["op_name"], tensors[stored]["name"], kernel))
    return tuple(kernels)


def densified_weights(ops) -> dict:
    """The tensors DENSIFY operators of ``ops`` (the interpreter's ``_get_ops_details()``)
    write -> the sparse-stored tensors they expand."""
    return {op["outputs"][0]: op["inputs"][0] for op in ops if op["op_name"] == DENSIFY}


def stored_fraction(tensor: dict) -> float:
    """The share of a weight tensor's entries the file stores (1.0 for a dense tensor;
    the nonzeros, or the nonzero blocks, of one in TFLite's sparse format), from the
    interpreter's tensor details."""
    sparsity = tensor.get("sparsity_parameters")
    if not sparsity:
        return 1.0
    stored = 1
    for level in sparsity["dim_metadata"]:  # a sparse level lists every entry it keeps
        stored = stored * level["dense_size"] if level["format"] == 0 else \
            len(level["array_indices"])
    return stored / max(1, int(np.prod(tensor["shape"])))


def kernel_summary(kernels) -> str:
    """``kernels`` counted by operator and kernel, e.g. '3 CONV_2D by XNNPACK dense, 1
    FULLY_CONNECTED by TFLite sparse 1x4, 2 DENSIFY (sparse weights densified at load)'."""
    counts = collections.Counter((kernel.op, kernel.kernel) for kernel in kernels)
    return ", ".join(f"{count} {op} ({kernel})" if op == DENSIFY else
                     f"{count} {op} by {kernel}" for (op, kernel), count in counts.items())


def _tflite_kernel(weight: dict) -> str:
    """TFLite's kernel for a non-delegated operator reading ``weight``: the sparse one (with
    its block) where the weight is stored sparse, else the built-in dense one."""
    sparsity = weight.get("sparsity_parameters")
    if not sparsity:
        return BUILT_IN
    blocked = len(sparsity.get("block_map", ()))
    block = [meta["dense_size"] for meta in sparsity["dim_metadata"][-blocked:]] if blocked \
        else []
    return f"TFLite sparse {'1x' + 'x'.join(map(str, block)) if block else 'unstructured'}"


def _delegated(ops: list) -> set:
    """Indices of the operators a DELEGATE node replaced: those on the paths from the
    delegate's inputs to its outputs."""
    producer = {int(out): op["index"] for op in ops if op["op_name"] != "DELEGATE"
                for out in op["outputs"]}
    by_index = {op["index"]: op for op in ops}
    delegated = set()
    for delegate in (op for op in ops if op["op_name"] == "DELEGATE"):
        inputs = {int(t) for t in delegate["inputs"]}
        pending = [int(t) for t in delegate["outputs"]]
        while pending:
            tensor = pending.pop()
            index = producer.get(tensor)
            if tensor in inputs or index is None or index in delegated:
                continue
            delegated.add(index)
            pending.extend(int(t) for t in by_index[index]["inputs"] if t >= 0)
    return delegated
