"""The paper's architectures, with its Gaussian Glorot initialisation, for either Keras.

Lenet-300-100 for MNIST-sized inputs and Conv-2/4/6 (Frankle & Carbin, figure 2) for
CIFAR-10-sized ones, built with tf_keras (``keras=2``, the default) or Keras 3
(``keras=3``). ``build(name, ...)`` looks them up by the names configs use.

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


MODELS = {"lenet_300_100": lenet_300_100,
          **{name: functools.partial(conv_net, name) for name in _CONV_BLOCKS}}


def build(name: str, input_shape, classes: int, seed: int | None = None, keras: int = 2):
    """The zoo model ``name`` for inputs of ``input_shape`` and ``classes`` outputs."""
    if name not in MODELS:
        raise SettingError(f"unknown model {name!r}.{did_you_mean(name, MODELS)} "
                           f"Known: {', '.join(MODELS)}")
    return MODELS[name](input_shape=tuple(input_shape), classes=classes, seed=seed, keras=keras)
