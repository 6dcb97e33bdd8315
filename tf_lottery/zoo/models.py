"""The paper's architectures, with its Gaussian Glorot initialisation, for either Keras.

Lenet-300-100 for MNIST-sized inputs and Conv-2/4/6 (Frankle & Carbin, figure 2) for
CIFAR-10-sized ones; for channel tickets, keras-io's MNIST convnet and a small
MobileNetV2. Built with tf_keras (``keras=2``, the default) or Keras 3 (``keras=3``).
``build(name, ...)`` looks them up by the names configs use.

Example::

    model = build("conv4", input_shape=(32, 32, 3), classes=10, seed=0, keras=3)
"""

from __future__ import annotations

import functools

from tf_lottery.engines import KERAS_VERSIONS, engine_named
from tf_lottery.foundations.checks import did_you_mean, one_of
from tf_lottery.foundations.errors import SettingError


def keras_module(version: int = 2):
    """The Keras package models of ``version`` are built with: 2 is tf_keras (through its
    engine, which loads it as tf_lottery needs), 3 is Keras 3."""
    return engine_named(KERAS_VERSIONS[one_of(version, "keras", KERAS_VERSIONS)]).keras


def _initializer(keras, seed, index):
    return keras.initializers.GlorotNormal(seed=None if seed is None else seed * 1000 + index)


def lenet_300_100(input_shape=(784,), classes: int = 10, seed: int | None = None,
                  keras: int = 2):
    """Lenet-300-100: fully connected 300-100-classes, ReLU, logits out.

    Example::

        model = lenet_300_100(seed=0, keras=3)   # layers hidden_1, hidden_2, output
    """
    keras = keras_module(keras)
    layers = [keras.Input(shape=tuple(input_shape), name="input")]
    if len(input_shape) > 1:
        layers.append(keras.layers.Flatten(name="flatten"))
    layers += [
        keras.layers.Dense(300, activation="relu",
                           kernel_initializer=_initializer(keras, seed, 0), name="hidden_1"),
        keras.layers.Dense(100, activation="relu",
                           kernel_initializer=_initializer(keras, seed, 1), name="hidden_2"),
        keras.layers.Dense(classes, kernel_initializer=_initializer(keras, seed, 2),
                           name="output"),
    ]
    return keras.Sequential(layers, name="lenet_300_100")


_CONV_BLOCKS = {"conv2": (64,), "conv4": (64, 128), "conv6": (64, 128, 256)}


def conv_net(name: str, input_shape=(32, 32, 3), classes: int = 10, seed: int | None = None,
             keras: int = 2):
    """Conv-2, Conv-4 or Conv-6: blocks of two 3x3 convolutions and a 2x2 max-pool, then
    fully connected 256-256-classes (layers conv_1.., fc_1, fc_2, output)."""
    keras = keras_module(keras)
    layers = [keras.Input(shape=tuple(input_shape), name="input")]
    index = 0
    for block, filters in enumerate(_CONV_BLOCKS[name]):
        for _ in range(2):
            index += 1
            layers.append(keras.layers.Conv2D(
                filters, 3, padding="same", activation="relu",
                kernel_initializer=_initializer(keras, seed, index), name=f"conv_{index}"))
        layers.append(keras.layers.MaxPooling2D(2, name=f"pool_{block + 1}"))
    layers.append(keras.layers.Flatten(name="flatten"))
    for fc in (1, 2):
        layers.append(keras.layers.Dense(256, activation="relu",
                                         kernel_initializer=_initializer(keras, seed, 100 + fc),
                                         name=f"fc_{fc}"))
    layers.append(keras.layers.Dense(classes, kernel_initializer=_initializer(keras, seed, 200),
                                     name="output"))
    return keras.Sequential(layers, name=name)


def mnist_convnet(input_shape=(28, 28, 1), classes: int = 10, seed: int | None = None,
                  keras: int = 2):
    """keras-io's "Simple MNIST convnet": two 3x3 convolutions (32, 64 filters, ReLU) each
    followed by a 2x2 max-pool, dropout 0.5, logits out (layers conv_1, conv_2, output).

    Example::

        model = mnist_convnet(seed=0, keras=3)   # 34,826 parameters
    """
    keras = keras_module(keras)
    layers = [keras.Input(shape=tuple(input_shape), name="input")]
    for index, filters in enumerate((32, 64), start=1):
        layers += [keras.layers.Conv2D(filters, 3, activation="relu", name=f"conv_{index}",
                                       kernel_initializer=_initializer(keras, seed, index)),
                   keras.layers.MaxPooling2D(2, name=f"pool_{index}")]
    layers += [keras.layers.Flatten(name="flatten"),
               keras.layers.Dropout(0.5, name="dropout"),
               keras.layers.Dense(classes, kernel_initializer=_initializer(keras, seed, 100),
                                  name="output")]
    return keras.Sequential(layers, name="mnist_convnet")


# MobileNetV2's inverted-residual stages (expansion, channels, blocks, first stride),
# shortened for 32x32 inputs (Sandler et al. 2018, table 2, without the last three stages)
_MOBILENET_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2))


def mobilenet_v2(input_shape=(32, 32, 3), classes: int = 10, seed: int | None = None,
                 keras: int = 2, width: float = 0.5):
    """A small MobileNetV2 (functional): inputs padded to a multiple of 32 (28x28 ->
    32x32), a 3x3 stem, four stages of inverted residual blocks (1x1 expansion, 3x3
    depthwise, 1x1 linear projection, BatchNormalization, ReLU6, residual additions),
    a 1x1 head of 256 * ``width`` channels, global average pooling and logits.

    Example::

        model = mobilenet_v2((28, 28, 1), seed=0, keras=3)   # Fashion-MNIST sized
    """
    keras = keras_module(keras)
    layers, counter = keras.layers, iter(range(1, 1000))

    def conv(x, filters, size, name, stride=1, relu=True, depthwise=False):
        init = _initializer(keras, seed, next(counter))
        x = layers.DepthwiseConv2D(size, stride, padding="same", use_bias=False,
                                   depthwise_initializer=init, name=name)(x) if depthwise \
            else layers.Conv2D(filters, size, stride, padding="same", use_bias=False,
                               kernel_initializer=init, name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(6.0, name=f"{name}_relu")(x) if relu else x

    def channels(count):
        return max(8, int(count * width + 4) // 8 * 8)

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    pad = [(-side % 32) // 2 for side in input_shape[:2]]
    x = layers.ZeroPadding2D(((pad[0], pad[0]), (pad[1], pad[1])), name="pad")(inputs) \
        if any(pad) else inputs
    x = conv(x, channels(32), 3, "stem", stride=1)
    for stage, (expansion, filters, blocks, stride) in enumerate(_MOBILENET_STAGES, start=1):
        for block in range(1, blocks + 1):
            name, start = f"block_{stage}_{block}", x
            wide = int(x.shape[-1]) * expansion
            if expansion > 1:
                x = conv(x, wide, 1, f"{name}_expand")
            x = conv(x, wide, 3, f"{name}_depthwise", stride if block == 1 else 1,
                     depthwise=True)
            x = conv(x, channels(filters), 1, f"{name}_project", relu=False)
            if block > 1:
                x = layers.Add(name=f"{name}_add")([start, x])
    x = conv(x, channels(256), 1, "head")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(classes, kernel_initializer=_initializer(keras, seed, 999),
                           name="output")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


MODELS = {"lenet_300_100": lenet_300_100,
          **{name: functools.partial(conv_net, name) for name in _CONV_BLOCKS},
          "mnist_convnet": mnist_convnet, "mobilenet_v2": mobilenet_v2}


def build(name: str, input_shape, classes: int, seed: int | None = None, keras: int = 2):
    """The zoo model ``name`` for inputs of ``input_shape`` and ``classes`` outputs."""
    if name not in MODELS:
        raise SettingError(f"unknown model {name!r}.{did_you_mean(name, MODELS)} "
                           f"Known: {', '.join(MODELS)}")
    return MODELS[name](input_shape=tuple(input_shape), classes=classes, seed=seed, keras=keras)
