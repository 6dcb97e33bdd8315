"""Small models and probes shared by the tests, for either Keras."""

import keras as keras3
import tf_keras

from tf_lottery.callbacks import Callback

KERASES = {"tf_keras": tf_keras, "keras3": keras3}


def compile_for_classification(model, learning_rate=1e-3):
    keras = keras_of(model)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def keras_of(model):
    """The Keras module ``model`` belongs to."""
    return tf_keras if type(model).__module__.startswith("tf_keras") or any(
        cls.__module__.startswith("tf_keras") for cls in type(model).__mro__) else keras3


def small_mlp(seed=0, input_dim=784, keras=tf_keras):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(shape=(input_dim,)),
        keras.layers.Dense(32, activation="relu", name="hidden"),
        keras.layers.Dense(10, name="output"),
    ])


def weights_by_path(model):
    """The model's layer weights keyed like tf_lottery's paths, read straight from Keras
    (a tf_keras wrapper's inner layer, a Keras 3 LotteryModel's network)."""
    out = {}
    for layer in getattr(model, "network", model).layers:
        inner = getattr(layer, "layer", layer)
        for var in inner.weights:
            out[f"{inner.name}/{var.name.split(':')[0].rsplit('/', 1)[-1]}"] = var.numpy()
    return out


class StepProbe(Callback):
    """Calls ``check(step)`` before every training step, with the number of steps so far."""

    def __init__(self, check):
        super().__init__()
        self.check = check
        self.step = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.model  # noqa: B018 -- on JAX, brings the training state into the variables
        self.check(self.step)
        self.step += 1

    def on_train_end(self, logs=None):
        self.model  # noqa: B018
        self.check(self.step)


class InterruptAt(Callback):
    """Ctrl-C at the start of the ``n``-th training a search runs (1 is round 0's)."""

    def __init__(self, n):
        super().__init__()
        self.n, self.count = n, 0

    def on_train_begin(self, logs=None):
        self.count += 1
        if self.count == self.n:
            raise KeyboardInterrupt
