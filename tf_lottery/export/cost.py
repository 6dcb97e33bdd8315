"""Will a ticket run faster? Multiply-adds per layer, and which sparsity can pay, before the
long search.

:func:`cost_estimate` counts the multiply-adds of one image (batch 1) through every Dense,
Conv1D/2D/3D, DepthwiseConv1D/2D and SeparableConv1D/2D layer from static shapes, and says
per layer and sparsity whether pruning at each granularity can make LiteRT faster on this
machine. The verdicts are measurements of this machine (x86 with AVX-512, LiteRT 2.3,
2026-12; ``DESIGN.md``, "Sparse inference for convolutional networks" and the TFLite
table), not laws; another CPU (an ARM phone, where XNNPACK's sparse path is on) differs:

- unstructured sparsity never pays in a convolution: the file stores the weights sparse,
  DENSIFY expands them at load and XNNPACK runs them dense (its sparse path is off on x86
  with AVX). In a Dense layer an unstructured float kernel runs at dense speed, unless the
  converter finds 1x4 blocks in it (a trained Lenet ticket at 3.6% of weights: 2.3x).
- 1x4 blocks (float) pay in Dense layers only, through TFLite's sparse fully connected
  kernel: 1.8-2.3x slower than dense XNNPACK at 80% sparsity, 1.1-1.2x slower at 90%,
  1.1-2.1x faster at 95% (measured on 1x1 convolutions as fully connected layers); Lenet's
  Dense ticket at 3.6% of weights ran 5.8x faster.
- 1x16 blocks (int8) shrink the file but run slower than the dense int8 file of the same
  network (3.8x against 4.5x faster than dense float at 3.6% of weights).
- whole channels pay in full, in every layer: 75/50/35% of the channels ran 1.65/3.4/5.3x
  faster.

Example::

    estimate = tfl.cost_estimate(model, granularity="1x4", sparsities=(0.9, 0.95))
    print(estimate)                      # the table
    estimate.skippable("1x4", 0.95)      # share of the multiply-adds a faster kernel skips
"""

from __future__ import annotations

import math
import numbers
import textwrap
from typing import NamedTuple

from tf_lottery.engines import engine_for
from tf_lottery.foundations.checks import one_of
from tf_lottery.foundations.errors import SettingError

GRANULARITIES = ("unstructured", "1x4", "1x16", "channels")
SPARSITIES = (0.8, 0.9, 0.95)
MEASURED_ON = ("this machine (x86 with AVX-512, LiteRT 2.3, 2026-12): another CPU, an ARM "
               "phone above all, differs")

# verdicts, and whether a faster kernel skips the pruned multiply-adds
_PAYS = {"yes": True, "faster": True, "maybe": False, "even": False, "slower": False,
         "no": False}
_BLOCKS_EVEN, _BLOCKS_FASTER = 0.9, 0.95  # measured thresholds of TFLite's sparse FC, 1x4
_CONVOLUTIONS = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D",
                 "SeparableConv1D", "SeparableConv2D")
_KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel")


class LayerCost(NamedTuple):
    """One layer's multiply-adds per image; ``convolution`` tells its kernels apart from a
    Dense layer's (TFLite's FULLY_CONNECTED)."""

    name: str
    kind: str
    multiply_adds: int
    convolution: bool


def verdict(convolution: bool, granularity: str, sparsity: float) -> str:
    """Whether pruning ``sparsity`` of a layer's weights at ``granularity`` makes it run
    faster in LiteRT on this machine: "yes", "faster", "maybe", "even", "slower" or "no"
    (see the module's measurements)."""
    if granularity == "channels":
        return "yes"
    if convolution or granularity == "1x16":
        return "no"
    if granularity == "unstructured":
        return "maybe" if sparsity >= _BLOCKS_FASTER else "no"
    if sparsity >= _BLOCKS_FASTER:
        return "faster"
    return "even" if sparsity >= _BLOCKS_EVEN else "slower"


class CostEstimate:
    """The multiply-adds of a model's layers and where each granularity of sparsity can pay.

    ``layers`` are :class:`LayerCost`; ``skipped`` names the layers with weights that are
    not counted (Embedding, recurrent, normalization layers).
    """

    def __init__(self, name: str, layers: tuple, skipped: tuple, granularities: tuple,
                 sparsities: tuple):
        self.name, self.layers, self.skipped = name, layers, skipped
        self.granularities, self.sparsities = granularities, sparsities

    @property
    def multiply_adds(self) -> int:
        return sum(layer.multiply_adds for layer in self.layers)

    def skippable(self, granularity: str, sparsity: float) -> float:
        """The share of all multiply-adds a faster kernel skips when every counted layer has
        ``sparsity`` of its weights pruned at ``granularity`` (only where it pays; for
        channels a lower bound: the next layer's inputs shrink too)."""
        skipped = sum(sparsity * layer.multiply_adds for layer in self.layers
                      if _PAYS[verdict(layer.convolution, granularity, sparsity)])
        return skipped / max(self.multiply_adds, 1)

    def cannot_pay(self, granularity: str = "unstructured") -> list:
        """The layers where ``granularity`` runs no faster at any of the sparsities."""
        return [layer.name for layer in self.layers
                if not any(_PAYS[verdict(layer.convolution, granularity, sparsity)]
                           for sparsity in self.sparsities)]

    def table(self) -> str:
        """The multiply-adds per layer and each granularity's verdict at each sparsity."""
        at = "/".join(f"{s:.0%}".rstrip("%") for s in self.sparsities) + "%"
        headers = ["layer", "kind", "multiply-adds", "share",
                   *(f"{g} at {at}" for g in self.granularities)]
        total = max(self.multiply_adds, 1)
        rows = [[layer.name, layer.kind, f"{layer.multiply_adds:,}",
                 f"{layer.multiply_adds / total:.1%}",
                 *("/".join(verdict(layer.convolution, g, s) for s in self.sparsities)
                   for g in self.granularities)] for layer in self.layers]
        rows.append(["total", "", f"{self.multiply_adds:,}", "100.0%", *([""] * len(
            self.granularities))])
        rows.append(["skipped where it pays", "", "", "",
                     *("/".join(f"{self.skippable(g, s):.0%}".rstrip("%")
                                for s in self.sparsities) + "%" for g in self.granularities)])
        widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
        lines = [*_wrapped(f"Multiply-adds per image of {self.name!r} (batch 1), and whether "
                           "pruning each granularity makes LiteRT faster on " + MEASURED_ON
                           + ":"), ""]
        lines += ["  ".join(cell.rjust(width) if 1 < i < 4 else cell.ljust(width)
                            for i, (cell, width) in enumerate(zip(row, widths))).rstrip()
                  for row in [headers, *rows]]
        lines.append("")
        if "unstructured" in self.granularities and self.cannot_pay():
            lines += _wrapped(f"Unstructured sparsity cannot pay in: "
                              f"{', '.join(self.cannot_pay())} (convolutions: weights "
                              "densified at load, XNNPACK's sparse path is off on x86 with "
                              "AVX; Dense layers: unstructured float runs at dense speed).")
        for note in _NOTES:
            lines += _wrapped(note, indent="    ")
        if self.skipped:
            lines += _wrapped(f"Not counted: {', '.join(self.skipped)}.")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


_NOTES = (
    "yes: fewer channels pay in full (75/50/35% of channels: 1.65/3.4/5.3x measured)",
    "faster / even / slower: TFLite's sparse fully connected kernel, 1x4 blocks, against "
    "dense XNNPACK: 1.1-2.1x faster at 95%, 1.1-1.2x slower at 90%, 1.8-2.3x slower at 80% "
    "(Lenet's Dense ticket at 3.6% of weights: 5.8x faster)",
    "maybe: the converter may find 1x4 blocks in a trained unstructured Dense ticket (Lenet "
    "at 3.6%: 2.3x faster); random unstructured weights ran at dense speed",
    "no: 1x16 blocks (int8) run slower than the dense int8 file; unstructured or blocks in a "
    "convolution run dense (weights densified at load)",
)


def _wrapped(text: str, indent: str = "") -> list:
    return textwrap.wrap(text, 100, initial_indent=indent[:-2] + "- " if indent else "",
                         subsequent_indent=indent)


def cost_estimate(model, granularity=None, sparsities=SPARSITIES) -> CostEstimate:
    """Multiply-adds per layer of ``model`` and where sparsity can make it faster here.

    Args:
      model: a built Keras model (tf_keras or Keras 3, a LotteryModel too) whose layers have
        static output shapes (built from ``keras.Input`` of a fixed shape).
      granularity: one of :data:`GRANULARITIES` ("unstructured", "1x4", "1x16",
        "channels"), or None for all.
      sparsities: fractions of weights pruned, each in (0, 1).

    Example::

        print(tfl.cost_estimate(lenet, sparsities=(0.9, 0.964)))
    """
    granularities = GRANULARITIES if granularity is None else \
        (one_of(granularity, "granularity", GRANULARITIES),)
    sparsities = _sparsities(sparsities)
    engine = engine_for(model)
    counted, skipped = [], []
    for shape in engine.layer_shapes(model):
        if shape.kind in _CONVOLUTIONS or shape.kind == "Dense":
            counted.append(LayerCost(shape.path, shape.kind, _multiply_adds(shape),
                                     shape.kind in _CONVOLUTIONS))
        else:
            skipped.append(f"{shape.path} ({shape.kind})")
    if not counted:
        raise SettingError(f"{model.name!r} has no Dense or convolutional layer to estimate")
    return CostEstimate(model.name, tuple(counted), tuple(skipped), granularities, sparsities)


def _sparsities(sparsities) -> tuple:
    """``sparsities`` (one number or several) as a tuple of fractions in (0, 1)."""
    given = (sparsities,) if isinstance(sparsities, numbers.Real) else tuple(sparsities)
    wrong = [s for s in given if isinstance(s, bool) or not isinstance(s, numbers.Real)
             or not 0 < s < 1]
    if wrong or not given:
        raise SettingError(f"sparsities must be fractions of the weights pruned, each "
                           f"strictly between 0 and 1, e.g. (0.8, 0.9, 0.95); got "
                           f"{sparsities!r}")
    return tuple(float(s) for s in given)


def _multiply_adds(shape) -> int:
    """Output positions (the output's size over its channels) times the kernels' sizes."""
    output = shape.output_shape
    if output is None or None in output[1:]:
        raise SettingError(
            f"layer {shape.path!r} ({shape.kind}) has no static output shape "
            f"({'unknown' if output is None else output}): build the model from "
            "keras.Input(shape=...) with every dimension but the batch fixed, and call each "
            "layer once")
    kernels = {name: weight for name, weight in shape.weights.items() if name in _KERNELS}
    last = kernels.get("pointwise_kernel", kernels.get("kernel", kernels.get(
        "depthwise_kernel")))
    channels = last[-2] * last[-1] if shape.kind.startswith("Depthwise") else last[-1]
    positions = math.prod(output[1:]) // channels
    return positions * sum(math.prod(weight) for weight in kernels.values())
