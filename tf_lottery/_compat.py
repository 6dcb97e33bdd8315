"""The one place that touches tf_keras and TF-MOT internals.

TF-MOT runs on tf_keras (Keras 2) only. Everything else in tf_lottery imports ``keras``
and the pruning pieces from here, so a TF-MOT or tf_keras upgrade has one file to check.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import tensorflow as tf
import tensorflow_model_optimization as tfmot  # sets TF_USE_LEGACY_KERAS=1, as TF-MOT does
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras import (
    prune_registry,
    pruning_wrapper,
)

PruningSchedule = tfmot.sparsity.keras.PruningSchedule
TFMOTPruneLowMagnitude = pruning_wrapper.PruneLowMagnitude
UpdatePruningStep = tfmot.sparsity.keras.UpdatePruningStep
strip_pruning_wrappers = tfmot.sparsity.keras.strip_pruning


def check_model(model) -> None:
    """Raise a TypeError naming the cause and the fix unless ``model`` is a graph tf_keras model."""
    if isinstance(model, keras.Model):
        if not (isinstance(model, keras.Sequential) or model._is_graph_network):
            raise TypeError(
                f"{type(model).__name__} is a subclassed Keras model; TF-MOT can only wrap "
                "Sequential and functional models. Rebuild it with keras.Sequential or "
                "keras.Model(inputs, outputs).")
        if not model.built:
            raise ValueError(
                "the model is not built, so it has no initial weights to rewind to; give its "
                "first layer an input shape (or call it on data) before wrapping it")
        return
    module = type(model).__module__
    if module.startswith("keras"):
        raise TypeError(
            f"{type(model).__name__} is a Keras 3 model; TF-MOT, and so tf_lottery, works on "
            "tf_keras (Keras 2) models only. Build the model with `import tf_keras as keras`, "
            "or set the environment variable TF_USE_LEGACY_KERAS=1 before importing TensorFlow.")
    raise TypeError(f"expected a tf_keras Model, got {type(model).__name__}")


def has_prunable_weights(layer) -> bool:
    """Whether TF-MOT can prune ``layer``: a registry layer with prunable weights or a PrunableLayer."""
    if hasattr(layer, "get_prunable_weights"):
        return True
    if not prune_registry.PruneRegistry.supports(layer):
        return False
    return bool(prune_registry.PruneRegistry.make_prunable(layer).get_prunable_weights())


def is_supported(layer) -> bool:
    """Whether TF-MOT knows ``layer`` at all (prunable or explicitly harmless, like BatchNorm)."""
    return hasattr(layer, "get_prunable_weights") or prune_registry.PruneRegistry.supports(layer)


def wrap_layer(layer, schedule):
    """Wrap one layer in tf_lottery's PruneLowMagnitude with ``schedule``; weights stay shared."""
    return PruneLowMagnitude(layer, pruning_schedule=schedule)


def walk_layers(model, prefix: str = ""):
    """Yield (path prefix, layer) for every layer of ``model``, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer, f"{prefix}{layer.name}/")
        else:
            yield prefix, layer


def _short_name(variable) -> str:
    return variable.name.split(":")[0].rsplit("/", 1)[-1]


def weight_paths(layer, prefix: str = "") -> dict:
    """The layer's own weights by path (``"dense/kernel"``); a wrapper's mask, threshold and
    step variables are not the layer's weights and never appear."""
    inner = layer.layer if isinstance(layer, TFMOTPruneLowMagnitude) else layer
    paths = {}
    for index, variable in enumerate(inner.weights):
        path = f"{prefix}{inner.name}/{_short_name(variable)}"
        paths[path if path not in paths else f"{path}_{index}"] = variable
    return paths


def model_weights(model) -> dict:
    """Every weight of every layer by path, wrapper bookkeeping excluded: what a rewind restores."""
    paths = {}
    for prefix, layer in walk_layers(model):
        paths.update(weight_paths(layer, prefix))
    return paths


class PrunedWeight(NamedTuple):
    layer_name: str  # the wrapped layer's own name, as RewindingSchedule.layer_rates uses it
    weight: object   # the layer's weight variable
    mask: object     # the TF-MOT wrapper's 0/1 mask variable for it


def pruned_weights(model) -> dict:
    """Path -> PrunedWeight for every weight a TF-MOT wrapper masks."""
    pruned = {}
    for prefix, layer in walk_layers(model):
        if isinstance(layer, TFMOTPruneLowMagnitude):
            by_id = {id(var): path for path, var in weight_paths(layer, prefix).items()}
            for weight, mask, _ in layer.pruning_vars:
                pruned[by_id[id(weight)]] = PrunedWeight(layer.layer.name, weight, mask)
    return pruned


def step_counter(model):
    """The first wrapper's ``pruning_step``: optimizer steps taken, counted in-graph."""
    for _, layer in walk_layers(model):
        if isinstance(layer, TFMOTPruneLowMagnitude):
            return layer.pruning_step
    raise ValueError("the model has no pruning wrapper")


def count_step(model):
    """Advance every wrapper's ``pruning_step`` by one: call once per optimizer step.

    Counting in the training step, not in the layers' calls, counts a step once however
    often a layer is applied (shared layers, a layer used on several inputs)."""
    wrappers = {id(layer): layer for _, layer in walk_layers(model)
                if isinstance(layer, TFMOTPruneLowMagnitude)}
    return tf.group([layer.pruning_step.assign_add(1) for layer in wrappers.values()])


def optimizer_variables(optimizer, trainable_variables) -> list:
    """All of ``optimizer``'s variables (step counter included), creating them if needed."""
    if isinstance(optimizer, keras.optimizers.legacy.Optimizer):
        optimizer._create_all_weights(trainable_variables)
        return list(optimizer.variables())
    optimizer.build(trainable_variables)  # a no-op once built
    return list(optimizer.variables)


class PruneLowMagnitude(TFMOTPruneLowMagnitude):
    """TF-MOT's PruneLowMagnitude for masks that change only between rounds.

    It keeps TF-MOT's class name, so layer names (``prune_low_magnitude_dense``) and saved
    configs are TF-MOT's own and either side loads the other's models.

    TF-MOT's training step runs, besides the masking, a ``tf.cond`` that asks the schedule
    whether to recompute the mask, an assert that its step callback ran, and a step count
    per *call*: a layer applied twice in one model counts every step twice. Under a
    RewindingSchedule the answer is always no, so this wrapper's call only masks (about
    0.15 ms less per step for Lenet-300-100, benchmarks/step_time.py); ``pruning_step``
    counts optimizer steps, advanced once per ``train_step`` by ``count_step``.
    Its ``from_config`` also deserializes any registered schedule, where TF-MOT's knows only
    ConstantSparsity and PolynomialDecay and returns others as strings.
    """

    def call(self, inputs, training=None, **kwargs):
        if training is None:
            training = keras.backend.learning_phase()
        self.add_update(self._apply_masks())
        if "training" in inspect.getfullargspec(self.layer.call).args:
            kwargs["training"] = training
        return self.layer.call(inputs, **kwargs)

    def _apply_masks(self):
        if tf.distribute.has_strategy():  # TF-MOT's op reduces across replicas
            return self.pruning_obj.weight_mask_op()
        updates = []
        for weight, mask, _ in self.pruning_vars:
            # under mixed precision, mask in the float32 master variable, not in a float16 read
            variable = getattr(weight, "_variable", weight)  # AutoCastVariable -> its variable
            updates.append(variable.assign(variable * tf.cast(mask, variable.dtype)))
        return tf.group(updates)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        schedule = keras.utils.deserialize_keras_object(config.pop("pruning_schedule"))
        config["layer"] = keras.layers.deserialize(config.pop("layer"))
        return cls(pruning_schedule=schedule, **config)
