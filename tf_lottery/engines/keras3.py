"""The Keras 3 engine: masks are variables, enforced through each pruned weight's constraint.

Keras 3 optimizers assign ``variable.constraint(variable)`` after every update (TensorFlow
and JAX backends, compiled steps included). A prepared model is a
:class:`Keras3LotteryModel` that holds the user's model (``network``: Sequential,
functional, subclassed, custom layers alike; nothing is cloned), a 0/1 mask variable per
pruned weight and an optimizer-step counter; each pruned weight's constraint multiplies
it by its mask after the user's own constraint, so pruned weights are exactly 0 in every
step's forward pass.

On the JAX backend a compiled step sees variables only through its state: the model's
``train_step`` binds the masks' values from that state for the constraints to read, and
advances the step counter in it. Callbacks read and assign variables through
``callback.model``, which brings the state back into the variables first (Keras 3).
"""

from __future__ import annotations

import collections
import contextlib
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tf_lottery.engines.base import Engine, PrunedWeight
from tf_lottery.errors import SettingError, SettingTypeError
from tf_lottery.rewind import masked
from tf_lottery.wrap import LotteryModel

BACKENDS = ("tensorflow", "jax")

# Layer class -> the weights (by short name) pruned by default; all others stay dense.
_PRUNABLE = (
    ((keras.layers.Dense, keras.layers.EinsumDense), ("kernel",)),
    ((keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
      keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
      keras.layers.Conv3DTranspose), ("kernel",)),
    ((keras.layers.SeparableConv1D, keras.layers.SeparableConv2D), ("pointwise_kernel",)),
    ((keras.layers.Embedding,), ("embeddings",)),
    ((keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell),
     ("kernel", "recurrent_kernel")),
)


class MaskSource:
    """Where a model's constraints read its masks: the mask variables, or, while a JAX step
    is traced, the masks' values in that step's state."""

    def __init__(self):
        self.bound = None  # id(mask variable) -> traced value

    def value(self, mask):
        if self.bound is not None and id(mask) in self.bound:
            return self.bound[id(mask)]
        return mask.value


class MaskConstraint(keras.constraints.Constraint):
    """The user's constraint (if any), then the mask: pruned entries become exactly 0."""

    def __init__(self, mask, source: MaskSource, inner=None):
        self.mask, self.source, self.inner = mask, source, inner

    def __call__(self, weight):
        if self.inner is not None:
            weight = self.inner(weight)
        return weight * ops.cast(self.source.value(self.mask), weight.dtype)


@keras.saving.register_keras_serializable(package="tf_lottery")
class Keras3LotteryModel(LotteryModel, keras.Model):
    """A Keras 3 model that trains ``network`` (shared, not copied) under masks and counts
    its optimizer steps; with a round controller attached, its ``fit`` runs IMP rounds."""

    def __init__(self, network, pruned, name=None, **kwargs):
        super().__init__(name=name or network.name, **kwargs)
        self.network = network
        self.pruned = list(pruned)
        weights = ENGINE.model_weights(network)
        self.mask_variables = [
            keras.Variable(np.ones(weights[path].shape, dtype=weights[path].dtype),
                           trainable=False, name="mask") for path in self.pruned]
        self.step_variable = keras.Variable(0, dtype="int32", trainable=False, name="imp_step")
        self._mask_source = MaskSource()
        for path, mask in zip(self.pruned, self.mask_variables):
            weight = weights[path]
            inner = weight.constraint
            if isinstance(inner, MaskConstraint):
                raise SettingError(f"{path} is already masked by another tf_lottery model; "
                                   "prepare the original model once")
            weight.constraint = MaskConstraint(mask, self._mask_source, inner)
        self.built = True

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    if keras.backend.backend() == "jax":
        def train_step(self, state, data):
            """Keras's stateless step with the masks bound from ``state``; counts the step."""
            trainable, non_trainable, optimizer_state, metrics = state
            values = {id(v): value for v, value in zip(self.non_trainable_variables,
                                                       non_trainable)}
            self._mask_source.bound = {id(m): values[id(m)] for m in self.mask_variables}
            try:
                logs, (trainable, non_trainable, optimizer_state, metrics) = \
                    super().train_step(state, data)
            finally:
                self._mask_source.bound = None
            index = [id(v) for v in self.non_trainable_variables].index(id(self.step_variable))
            non_trainable = list(non_trainable)
            non_trainable[index] = non_trainable[index] + 1
            return logs, (trainable, non_trainable, optimizer_state, metrics)
    else:
        def train_step(self, data):
            """Keras's training step, then the step count: once per optimizer step."""
            logs = super().train_step(data)
            self.step_variable.assign_add(1)
            return logs

    def get_config(self):
        return {"name": self.name, "pruned": self.pruned,
                "network": keras.saving.serialize_keras_object(self.network),
                **self.lottery_config()}

    @classmethod
    def from_config(cls, config):
        network = keras.saving.deserialize_keras_object(config["network"])
        model = cls(network, config["pruned"], name=config.get("name"))
        model.restore_lottery(config)
        return model


def _children(layer) -> list:
    return layer._flatten_layers(include_self=False, recursive=False)


def _short_name(variable) -> str:
    return variable.name.rsplit("/", 1)[-1]


class Keras3Engine(Engine):
    """Keras 3 models of any kind, masked through their weights' constraints."""

    name = "keras3"
    keras = keras
    lottery_model = Keras3LotteryModel
    always_compiled = keras.backend.backend() == "jax"  # XLA whatever jit_compile says
    tensorflow_graphs = keras.backend.backend() == "tensorflow"

    def check_model(self, model) -> None:
        if not isinstance(model, keras.Model):
            raise SettingTypeError(f"expected a Keras 3 Model, got {type(model).__name__}")
        backend = keras.backend.backend()
        if backend not in BACKENDS:
            raise SettingError(
                f"the {backend} backend of Keras 3 is not supported; set KERAS_BACKEND to one "
                f"of {', '.join(BACKENDS)} before importing keras")
        if not model.built or not model.weights:
            raise SettingError(
                f"the model {model.name!r} is not built, so it has no initial weights to "
                "rewind to; call it on a batch of data (or give it an Input) before wrapping it")

    def layers(self, model, prefix: str = "") -> list:
        network = model.network if isinstance(model, Keras3LotteryModel) else model
        found, seen = [], set()

        def walk(layer, prefix):
            for child in _children(layer):
                if id(child) in seen:
                    continue
                seen.add(id(child))
                if _children(child):
                    if self.layer_weights(child):
                        found.append((prefix, child))
                    walk(child, f"{prefix}{child.name}/")
                else:
                    found.append((prefix, child))
        if self.layer_weights(network):  # a subclassed model's own weights
            found.append(("", network))
        walk(network, prefix)
        return found

    def layer_weights(self, layer) -> list:
        inner = {id(w) for child in _children(layer) for w in child.weights}
        return [(_short_name(v), v) for v in layer.weights if id(v) not in inner]

    def default_prunable(self, layer) -> list:
        for classes, names in _PRUNABLE:
            if isinstance(layer, classes):
                return [v for short, v in self.layer_weights(layer) if short in names]
        return []

    def is_supported(self, layer) -> bool:
        return True

    def prepare(self, model, schedule, settings, pruned_paths):
        if isinstance(model, Keras3LotteryModel):
            raise SettingTypeError("the model is already a LotteryModel; pass the model it "
                                   "trains (its .network) to start a new IMP run")
        return Keras3LotteryModel(model, pruned_paths)

    def pruned_weights(self, model) -> dict:
        weights = self.model_weights(model)
        return {path: PrunedWeight(path.split("/")[-2], weights[path], mask)
                for path, mask in zip(model.pruned, model.mask_variables)}

    def strip(self, model):
        self.check_model(model)
        network = model.network if isinstance(model, Keras3LotteryModel) else model
        copy = self.clone(network)
        if isinstance(model, Keras3LotteryModel):
            weights = self.model_weights(copy)
            for path, pruned in self.pruned_weights(model).items():
                weights[path].assign(masked(pruned.weight.numpy(), pruned.mask.numpy() != 0))
        return copy

    def step_counter(self, model):
        return model.step_variable

    def optimizer_variables(self, optimizer, trainable_variables) -> list:
        if not optimizer.built:
            optimizer.build(trainable_variables)
        return list(optimizer.variables)

    def steps_per_execution(self, model) -> int:
        return int(model.steps_per_execution)

    # --- export and architecture --------------------------------------------------------

    def io_counts(self, model) -> tuple:
        network = model.network if isinstance(model, Keras3LotteryModel) else model
        try:
            return len(network.inputs), len(network.outputs)
        except (AttributeError, ValueError):  # a subclassed model: from its build shape
            shape = network.get_build_config()["input_shape"]
            inputs = 1 if all(isinstance(d, (int, type(None))) for d in shape) else len(shape)
            spec = network.compute_output_spec(keras.KerasTensor(shape))
            return inputs, len(keras.tree.flatten(spec))

    def input_spec(self, model) -> tuple:
        network = model.network if isinstance(model, Keras3LotteryModel) else model
        try:
            return super().input_spec(network)
        except (AttributeError, ValueError):
            shape = network.get_build_config()["input_shape"]
            return tuple(shape[1:]), np.dtype("float32")

    def check_tflite(self, model) -> None:
        if keras.backend.backend() != "tensorflow":
            raise SettingError(
                f"TFLite conversion of a Keras 3 model needs the TensorFlow backend (this "
                f"process runs {keras.backend.backend()}); set KERAS_BACKEND=tensorflow, load "
                "the model (tfl.load_model) and export it there, or export a SavedModel")

    def save_serving(self, model, path) -> None:
        model.export(str(path), format="tf_saved_model", verbose=False)

    def tflite_converter(self, model, workdir):
        """Through a quiet SavedModel export (``from_keras_model`` prints the signature)."""
        path = Path(workdir) / "saved_model"
        self.save_serving(model, path)
        return tf.lite.TFLiteConverter.from_saved_model(str(path))

    def clone(self, model):
        """A copy of ``model`` (any kind of Keras 3 model) with the same weights."""
        try:
            copy = keras.saving.deserialize_keras_object(
                keras.saving.serialize_keras_object(model))
        except (NotImplementedError, TypeError, ValueError) as error:
            raise SettingTypeError(
                f"cannot copy {type(model).__name__}: a subclassed model needs get_config() "
                "and @keras.saving.register_keras_serializable() to be copied (for "
                f"strip_pruning, export and the random-reinit control) ({error})") from error
        if not copy.built:
            copy.build_from_config(model.get_build_config())
        source, target = self.model_weights(model), self.model_weights(copy)
        for path, variable in target.items():
            variable.assign(source[path].numpy())
        return copy

    def reseeded_clone(self, model, seed: int):
        copy = super().reseeded_clone(model, seed)
        if not copy.built:
            copy.build_from_config(model.get_build_config())
        return copy

    def load_model(self, path, **kwargs):
        return keras.models.load_model(path, **kwargs)

    @contextlib.contextmanager
    def name_counters(self):
        from keras.src.backend.common import global_state
        saved = global_state.get_global_attribute("object_name_uids")
        global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
        try:
            yield
        finally:
            global_state.set_global_attribute("object_name_uids", saved)


ENGINE = Keras3Engine()
Keras3LotteryModel.engine = ENGINE
