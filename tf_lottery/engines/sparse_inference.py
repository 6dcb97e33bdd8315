"""Which layers of a Keras model XNNPACK's sparse inference would run sparse, from its graph.

XNNPACK (LiteRT's CPU backend) on ARM runs a float NHWC convolutional network in a
channels-first layout with sparse 1x1-convolution kernels when the network from its first
convolution to a GlobalAveragePooling with keepdims is made only of layers it can run that
way (on x86 with AVX it never does). Those are the conditions TF-MOT's
``PruneForLatencyOnXNNPack`` policy encodes, checked here on either Keras's layers:

- every layer channels_last;
- the first weighted layer a 3x3 Conv2D, stride 2, padding "valid", on 3 input channels,
  after ZeroPadding2D(1) (MobileNet's stem; it stays dense);
- a GlobalAveragePooling2D(keepdims=True) ending the part that runs sparse;
- between them only 1x1 Conv2D (stride 1, no dilation or groups), DepthwiseConv2D 3x3 or
  5x5 (stride 1 "same", or stride 1 or 2 "valid" after ZeroPadding2D of half the kernel),
  BatchNormalization over the last axis, Add, Multiply, ZeroPadding2D, Dropout, ReLU,
  LeakyReLU, ELU, bilinear UpSampling2D and relu / relu6 / leaky_relu / elu / sigmoid
  activations.

Example::

    layout = sparse_inference_layout(model)
    layout.sparse    # ('pw1', 'pw2'): the 1x1 Conv2D layers XNNPACK runs sparse
    layout.dense     # ('stem', 'head'): the other layers IMP would prune
"""

from __future__ import annotations

from typing import NamedTuple

from tf_lottery.engines.registry import engine_for
from tf_lottery.foundations.errors import SettingError

ACTIVATIONS = ("linear", "relu", "relu6", "leaky_relu", "elu", "sigmoid")
_STEM = ("start the network with ZeroPadding2D(1) and Conv2D(filters, 3, strides=2, "
         "padding='valid') on the 3-channel image, as MobileNet does")


class SparseInferenceLayout(NamedTuple):
    """The names of the 1x1 Conv2D layers XNNPACK's sparse inference runs sparse, and of
    every other layer with weights IMP prunes by default (the first convolution, the
    head)."""

    sparse: tuple
    dense: tuple


def sparse_inference_layout(model) -> SparseInferenceLayout:
    """The layout of ``model`` (Sequential or functional, either Keras) under XNNPACK's
    sparse inference; a SettingError naming the layer at fault and the fix where the model
    does not meet its conditions (see the module's docstring)."""
    engine = engine_for(model)
    engine.check_model(model)
    if not getattr(model, "inputs", None):
        raise SettingError(f"{type(model).__name__} {model.name!r} has no functional graph (a "
                           "subclassed model): build it with Sequential or Model(inputs, "
                           "outputs), so its layers' order can be checked")
    layers = [layer for _, layer in engine.layers(model)]
    kinds = engine.keras.layers
    first = [layer.name for layer in layers
             if getattr(layer, "data_format", "channels_last") != "channels_last"]
    if first:
        raise SettingError(f"layer {first[0]!r} is channels_first; XNNPACK's sparse inference "
                           "takes float NHWC networks: build every layer with "
                           "data_format='channels_last'")
    weighted = [layer for layer in layers if engine.default_prunable(layer)]
    if not weighted:
        raise SettingError(f"{model.name!r} has no weighted layer: nothing to run sparse")
    stem = weighted[0]
    problem = _stem_problem(stem, engine)
    if problem:
        raise SettingError(f"the first weighted layer {stem.name!r} ({type(stem).__name__}) "
                           f"{problem}; XNNPACK's sparse inference starts at such a dense "
                           f"first convolution: {_STEM}")
    pools = [layer for layer in layers if isinstance(layer, kinds.GlobalAveragePooling2D)]
    if not pools:
        raise SettingError(f"{model.name!r} has no GlobalAveragePooling2D, where XNNPACK's "
                           "sparse inference ends: put GlobalAveragePooling2D(keepdims=True) "
                           "and Flatten() before the head")
    if not pools[0].keepdims:
        raise SettingError(f"GlobalAveragePooling2D {pools[0].name!r} drops the spatial axes; "
                           "XNNPACK's sparse inference ends only at one that keeps them: build "
                           "it with keepdims=True and put Flatten() after it (the head sees "
                           "the same values)")
    between = layers[layers.index(stem) + 1:layers.index(pools[0])]
    for layer in between:
        problem = _unsupported(layer, engine)
        if problem:
            raise SettingError(
                f"layer {layer.name!r} ({type(layer).__name__}) between the first convolution "
                f"and the GlobalAveragePooling2D {problem}, so XNNPACK would run the whole "
                "network dense: replace it (see tf_lottery.engines.sparse_inference for what "
                "XNNPACK's sparse inference runs)")
    sparse = tuple(engine.layer_name(layer) for layer in between
                   if isinstance(layer, kinds.Conv2D) and not _depthwise(layer, kinds))
    return SparseInferenceLayout(sparse, tuple(
        engine.layer_name(layer) for layer in weighted
        if engine.layer_name(layer) not in sparse))


def _stem_problem(layer, engine) -> str:
    """Why ``layer`` cannot be XNNPACK's dense first convolution, or ""."""
    kinds = engine.keras.layers
    if not isinstance(layer, kinds.Conv2D) or _depthwise(layer, kinds):
        return "is not a Conv2D"
    if tuple(layer.kernel_size) != (3, 3) or tuple(layer.strides) != (2, 2) \
            or layer.padding != "valid" or layer.kernel.shape[2] != 3:
        return (f"has a {'x'.join(map(str, layer.kernel_size))} kernel, strides "
                f"{tuple(layer.strides)}, padding {layer.padding!r} and "
                f"{layer.kernel.shape[2]} input channels")
    if not _padded_by(layer, engine, 1):
        return "does not follow a ZeroPadding2D(1)"
    return ""


def _unsupported(layer, engine) -> str:
    """Why XNNPACK's sparse inference cannot run ``layer``, or ""."""
    kinds = engine.keras.layers
    if isinstance(layer, (kinds.Add, kinds.Multiply, kinds.ZeroPadding2D, kinds.Dropout,
                          kinds.ReLU, kinds.LeakyReLU, kinds.ELU)):
        return ""
    if isinstance(layer, kinds.Conv2D) or _depthwise(layer, kinds):
        activation = getattr(layer.activation, "__name__", "")
        if activation not in ACTIVATIONS:
            return f"has activation {activation!r} (it runs {', '.join(ACTIVATIONS)})"
    if _depthwise(layer, kinds):
        size, strides = tuple(layer.kernel_size), tuple(layer.strides)
        same = layer.padding == "same" and strides == (1, 1)
        valid = layer.padding == "valid" and strides in ((1, 1), (2, 2)) and \
            _padded_by(layer, engine, size[0] // 2)
        if size in ((3, 3), (5, 5)) and (same or valid) and layer.depth_multiplier == 1 \
                and tuple(layer.dilation_rate) == (1, 1):
            return ""
        return ("is not a 3x3 or 5x5 depthwise convolution of stride 1 ('same') or of stride "
                "1 or 2 ('valid', after ZeroPadding2D of half the kernel), depth_multiplier 1")
    if isinstance(layer, kinds.Conv2D):
        if (tuple(layer.kernel_size), tuple(layer.strides), tuple(layer.dilation_rate),
                layer.groups) == ((1, 1), (1, 1), (1, 1), 1):
            return ""
        return "is not a 1x1 convolution of stride 1 (no dilation, no groups)"
    if isinstance(layer, kinds.BatchNormalization):
        axes = list(layer.axis) if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        return "" if axes in ([3], [-1]) else "normalizes another axis than the channels"
    if isinstance(layer, kinds.UpSampling2D):
        return "" if layer.interpolation == "bilinear" else "is not bilinear"
    if isinstance(layer, kinds.Activation):
        name = getattr(layer.activation, "__name__", "")
        return "" if name in ACTIVATIONS else f"is {name!r}, not one of {', '.join(ACTIVATIONS)}"
    return "is a layer XNNPACK's sparse inference does not run"


def _depthwise(layer, kinds) -> bool:  # a Conv2D in tf_keras, not in Keras 3
    return isinstance(layer, kinds.DepthwiseConv2D)


def _padded_by(layer, engine, pad: int) -> bool:
    """Whether ``layer``'s one input comes from a ZeroPadding2D of ``pad`` on every side."""
    inputs = [tensor for node in layer._inbound_nodes[:1]
              for tensor in engine.node_inputs(node)]
    producer = inputs[0]._keras_history[0] if len(inputs) == 1 else None
    return isinstance(producer, engine.keras.layers.ZeroPadding2D) and \
        tuple(map(tuple, producer.padding)) == ((pad, pad), (pad, pad))
