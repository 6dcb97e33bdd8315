"""The paper's architectures as tf_keras models, with its Gaussian Glorot initialisation."""

from __future__ import annotations

from tf_lottery._compat import keras


def lenet_300_100(input_dim: int = 784, classes: int = 10, seed: int | None = None):
    """Lenet-300-100: fully connected 784-300-100-10, ReLU, logits out (Frankle & Carbin).

    Example::

        model = lenet_300_100(seed=0)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    """
    def init(index):
        return keras.initializers.GlorotNormal(seed=None if seed is None else seed + index)

    return keras.Sequential([
        keras.Input(shape=(input_dim,)),
        keras.layers.Dense(300, activation="relu", kernel_initializer=init(0), name="hidden_1"),
        keras.layers.Dense(100, activation="relu", kernel_initializer=init(1), name="hidden_2"),
        keras.layers.Dense(classes, kernel_initializer=init(2), name="output"),
    ], name="lenet_300_100")
