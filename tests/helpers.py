"""Small models and probes shared by the tests."""

import tf_keras as keras


def compile_for_classification(model, learning_rate=1e-3):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def small_mlp(seed=0, input_dim=784):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(shape=(input_dim,)),
        keras.layers.Dense(32, activation="relu", name="hidden"),
        keras.layers.Dense(10, name="output"),
    ])


def weights_by_path(model):
    """The model's layer weights keyed like tf_lottery's paths, read straight from Keras."""
    out = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        for var in inner.weights:
            out[f"{inner.name}/{var.name.split(':')[0].rsplit('/', 1)[-1]}"] = var.numpy()
    return out


class StepProbe(keras.callbacks.Callback):
    """Calls ``check(step)`` before every training step, with the number of steps so far."""

    def __init__(self, check):
        super().__init__()
        self.check = check
        self.step = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.check(self.step)
        self.step += 1

    def on_train_end(self, logs=None):
        self.check(self.step)

