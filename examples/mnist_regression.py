"""Your own model, data and loss: lottery tickets of a regressor fed by tf.data.

The task is not the paper's: a Keras 3 network reads an MNIST digit and predicts its value
as a number (mean squared error; the early stop is the best validation MAE). The data
comes as ``tf.data`` pipelines, as files on disk with augmentation would.

    tf-lottery run examples/mnist_regression.yaml            # about two minutes, 2 CPU cores
    tf-lottery run examples/mnist_regression.yaml train_size=600 rounds=1   # a quick look

The config names this file's functions: ``model: mnist_regression:build`` and
``dataset: mnist_regression:load``.
"""

import keras
import tensorflow as tf

from tf_lottery.zoo.data import load_mnist


def build(seed: int) -> keras.Model:
    """A 784-300-100-1 regressor, seeded per trial."""
    initializer = keras.initializers.GlorotNormal(seed=seed)
    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(300, activation="relu", kernel_initializer=initializer,
                           name="hidden_1")(x)
    x = keras.layers.Dense(100, activation="relu", kernel_initializer=initializer,
                           name="hidden_2")(x)
    outputs = keras.layers.Dense(1, name="value")(x)
    return keras.Model(inputs, outputs, name="digit_regressor")


def _pipeline(images, labels, batch_size, shuffle_seed=None):
    dataset = tf.data.Dataset.from_tensor_slices(
        (images.reshape(-1, 28, 28, 1), labels.astype("float32")[:, None]))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(images), seed=shuffle_seed)
    return dataset.batch(batch_size)


def load(train_size=None, validation_size=5000, test_size=None):
    """(train, validation, test) as tf.data pipelines of (image, value) batches."""
    (x, y), (x_test, y_test) = load_mnist()
    x_val, y_val = x[:validation_size], y[:validation_size]
    x, y = x[validation_size:], y[validation_size:]
    if train_size:
        x, y = x[:train_size], y[:train_size]
    if test_size:
        x_test, y_test = x_test[:test_size], y_test[:test_size]
    return (_pipeline(x, y, 60, shuffle_seed=0), _pipeline(x_val, y_val, 1000),
            _pipeline(x_test, y_test, 1000))
