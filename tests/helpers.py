"""Small models and probes shared by the tests, for either Keras."""

import os
import subprocess
import sys
from pathlib import Path

import keras as keras3
import numpy as np
import tf_keras

from tf_lottery.engines.callbacks import Callback

KERASES = {"tf_keras": tf_keras, "keras3": keras3}
ROOT = Path(__file__).parent.parent


def python_with(script, *args, **env) -> str:
    """Run ``script`` with ``args`` in a Python of its own (``env`` added to the
    environment, e.g. KERAS_BACKEND=jax); the last line it printed."""
    done = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=ROOT, env=dict(os.environ, **env))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


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


def toy_data(n=60):
    """``n`` examples of 12 uniform features whose class is the largest of the first 3."""
    rng = np.random.default_rng(0)
    x = rng.random((n, 12), dtype=np.float32)
    return x, (x[:, :3].argmax(axis=1)).astype("int64")


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


LAYERS_PY = '''
import keras


@keras.saving.register_keras_serializable(package="my_layers")
class Doubled(keras.layers.Layer):
    def call(self, x):
        return 2 * x
'''


def keras_file_with_a_custom_layer(folder: Path) -> Path:
    """``folder/net.keras``: a Keras 3 MNIST classifier with a layer of ``folder/my_layers.py``,
    whose registration is then forgotten (as in a new process that has not imported it)."""
    (folder / "my_layers.py").write_text(LAYERS_PY)
    sys.path.insert(0, str(folder))
    try:
        from my_layers import Doubled
    finally:
        sys.path.remove(str(folder))
    model = keras3.Sequential([keras3.Input((28, 28, 1)), keras3.layers.Flatten(), Doubled(),
                               keras3.layers.Dense(10, name="output")])
    model.save(folder / "net.keras")
    keras3.saving.get_custom_objects().pop("my_layers>Doubled")
    sys.modules.pop("my_layers")
    return folder / "net.keras"


# --- small convolutional networks for channel tickets (either Keras) -------------------

def conv_sequential(keras):
    """conv-BN-ReLU-pool-conv-flatten-dense on 8x8x3 images."""
    layers = keras.layers
    return keras.Sequential([
        keras.Input((8, 8, 3)), layers.Conv2D(8, 3, name="conv1"),
        layers.BatchNormalization(name="bn1"), layers.ReLU(name="relu1"),
        layers.MaxPooling2D(name="pool"), layers.Conv2D(6, 3, activation="relu", name="conv2"),
        layers.Flatten(name="flatten"), layers.Dense(5, name="output")])


def residual_net(keras):
    """A stem and a block whose convolution is added back to it: one group of two kernels."""
    layers = keras.layers
    x = keras.Input((8, 8, 3))
    stem = layers.Conv2D(6, 3, padding="same", activation="relu", name="stem")(x)
    y = layers.Conv2D(10, 3, padding="same", activation="relu", name="conv_a")(stem)
    y = layers.Conv2D(6, 3, padding="same", name="conv_b")(y)
    y = layers.BatchNormalization(name="bn_b")(y)
    y = layers.ReLU(name="relu")(layers.Add(name="add")([stem, y]))
    y = layers.GlobalAveragePooling2D(name="pool")(y)
    return keras.Model(x, layers.Dense(4, name="output")(y))


def concat_net(keras):
    """Two branches concatenated with the input, a separable convolution over them (depth
    multiplier 2), a Flatten into Dense."""
    layers = keras.layers
    x = keras.Input((8, 8, 3))
    left = layers.Conv2D(4, 1, activation="relu", name="left")(x)
    right = layers.Conv2D(6, 3, padding="same", name="right")(x)
    right = layers.BatchNormalization(name="bn_right")(right)
    y = layers.Concatenate(name="concat")([left, right, x])
    y = layers.SeparableConv2D(8, 3, strides=2, depth_multiplier=2, activation="relu",
                               name="merge")(y)
    y = layers.Dense(4, activation="relu", name="hidden")(layers.Flatten(name="flatten")(y))
    return keras.Model(x, layers.Dense(3, name="output")(y))


def inverted_residual_net(keras):
    """A MobileNetV2 inverted residual block: 1x1 expand, depthwise 3x3, 1x1 project, Add."""
    layers = keras.layers
    x = keras.Input((12, 12, 3))
    stem = layers.BatchNormalization(name="stem_bn")(layers.Conv2D(8, 3, name="stem")(x))
    stem = layers.ReLU(6.0, name="stem_relu")(stem)
    y = layers.Conv2D(16, 1, use_bias=False, name="expand")(stem)
    y = layers.ReLU(6.0, name="expand_relu")(layers.BatchNormalization(name="expand_bn")(y))
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise")(y)
    y = layers.ReLU(6.0, name="depthwise_relu")(
        layers.BatchNormalization(name="depthwise_bn")(y))
    y = layers.BatchNormalization(name="project_bn")(
        layers.Conv2D(8, 1, use_bias=False, name="project")(y))
    y = layers.Add(name="add")([stem, y])
    y = layers.GlobalAveragePooling2D(name="pool")(y)
    return keras.Model(x, layers.Dense(4, name="output")(y))


CONV_NETS = {"sequential": conv_sequential, "residual": residual_net, "concat": concat_net,
             "inverted_residual": inverted_residual_net}


def mobilenet_like(keras, keepdims=True, stem_padding="valid", middle=None):
    """A tiny MobileNet-like network on 16x16x3 images: ZeroPadding2D(1) and a 3x3 stride-2
    stem, depthwise and 1x1 convolutions ('dw1', 'pw1', 'dw2', 'pw2'), GlobalAveragePooling
    (``keepdims``), a Dense head; ``middle`` (a layer) goes after 'pw1'."""
    layers = keras.layers
    x = inputs = keras.Input((16, 16, 3))
    if stem_padding == "valid":
        x = layers.ZeroPadding2D(1)(x)
    x = layers.Conv2D(8, 3, strides=2, padding=stem_padding, activation="relu", name="stem")(x)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw1")(x)
    x = layers.Conv2D(16, 1, activation="relu", name="pw1")(x)
    x = middle(x) if middle is not None else x
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw2")(x)
    x = layers.Conv2D(32, 1, activation="relu", name="pw2")(x)
    x = layers.GlobalAveragePooling2D(keepdims=keepdims)(x)
    x = layers.Flatten()(x)
    return keras.Model(inputs, layers.Dense(4, name="head")(x), name="mobilenet_like")
