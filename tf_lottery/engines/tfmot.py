"""The tf_keras engine: TF-MOT's pruning wrappers hold the masks of tf_keras (Keras 2) models.

The one place that touches tf_keras and TF-MOT internals, imported only when a tf_keras
model is given. A prepared model is a functional clone of the user's model whose prunable
layers are wrapped in :class:`PruneLowMagnitude` (TF-MOT's wrapper, sharing the original
layers and weights); its ``train_step`` counts optimizer steps in the wrappers'
``pruning_step``.

Importing TF-MOT sets ``TF_USE_LEGACY_KERAS=1`` for the process, which would turn a later
``tf.keras`` into tf_keras. This module resolves ``tf.keras`` first and puts the variable
back, so using a tf_keras model with tf_lottery changes nothing for Keras 3 code.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import inspect
import os

import tensorflow as tf


def _import_tfmot():
    legacy = os.environ.get("TF_USE_LEGACY_KERAS")
    if legacy is None:
        _ = tf.keras.layers  # resolve tf.keras as the environment says, first
    import tensorflow_model_optimization as tfmot
    if legacy is None:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    return tfmot


tfmot = _import_tfmot()

import tf_keras as keras  # noqa: E402
from tensorflow.python.saved_model import save_context  # noqa: E402
from tensorflow_model_optimization.python.core.sparsity.keras import (  # noqa: E402
    prune_registry,
    pruning_wrapper,
)
from tf_keras.src.engine import functional  # noqa: E402

from tf_lottery.core.masks import masked  # noqa: E402
from tf_lottery.core.schedule import RewindingSchedule  # noqa: E402
from tf_lottery.engines.base import Engine, PrunedWeight, TrainingGuard  # noqa: E402
from tf_lottery.engines.lottery_model import LotteryModel  # noqa: E402
from tf_lottery.foundations.errors import SettingError, SettingTypeError  # noqa: E402

_TFMOTPruneLowMagnitude = pruning_wrapper.PruneLowMagnitude


class RoundsSchedule(tfmot.sparsity.keras.PruningSchedule):
    """A :class:`~tf_lottery.RewindingSchedule` as TF-MOT's wrappers hold it.

    It never tells TF-MOT to prune (TF-MOT would recompute masks from the current weights,
    which after a rewind are θ0's; tf_lottery sets the masks at round ends); its sparsity is
    that of the schedule's default rate. Saved as the RewindingSchedule it stands for.
    """

    def __init__(self, schedule: RewindingSchedule):
        self.schedule = schedule

    def __call__(self, step):
        schedule = self.schedule
        round_index = tf.minimum(tf.cast(step, tf.int64) // schedule.steps_per_round,
                                 schedule.rounds)
        kept = tf.pow(1.0 - schedule.prune_rate, tf.cast(round_index, tf.float32))
        return tf.constant(False), 1.0 - kept

    def get_config(self):
        return self.schedule.get_config()

    @classmethod
    def from_config(cls, config):
        return cls(RewindingSchedule.from_config(config))

    def __eq__(self, other):
        return isinstance(other, RoundsSchedule) and other.schedule == self.schedule

    def __hash__(self):
        return hash(self.schedule)


def _for_tf_keras(callback):
    """A callback of tf_lottery's (Keras 3 classes) given what tf_keras's callback list asks
    of its callbacks; tf_keras's own callbacks as they are."""
    if isinstance(callback, keras.callbacks.Callback):
        return callback

    def implements(*hooks):
        return lambda: not all(getattr(getattr(callback, hook), "_is_default", False)
                               for hook in hooks)
    callback._supports_tf_logs = False  # hand it NumPy logs
    callback._chief_worker_only = None
    callback._implements_train_batch_hooks = implements(
        "on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end")
    callback._implements_test_batch_hooks = implements("on_test_batch_begin",
                                                       "on_test_batch_end")
    callback._implements_predict_batch_hooks = implements("on_predict_batch_begin",
                                                          "on_predict_batch_end")
    return callback


class PruneLowMagnitude(_TFMOTPruneLowMagnitude):
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
    ConstantSparsity and PolynomialDecay and returns others as strings. A training call
    checks the LotteryModel's :class:`TrainingGuard` (``training_guard``): a training loop
    that no one counts steps of is refused.

    ``pruned_weights`` names the layer's weights it masks where they are not TF-MOT's
    (``["kernel", "bias"]`` of a channel ticket's Conv2D, ``["gamma", "beta"]`` of the
    BatchNormalization after it); saved with the config.
    """

    training_guard = None  # the guard of the LotteryModel it belongs to

    def __init__(self, layer, pruned_weights=None, **kwargs):
        self.pruned_weight_names = None if pruned_weights is None else list(pruned_weights)
        if pruned_weights is not None:
            names = tuple(pruned_weights)
            layer.get_prunable_weights = lambda: [
                variable for variable in layer.weights if _short_name(variable) in names]
        super().__init__(layer, **kwargs)

    def call(self, inputs, training=None, **kwargs):
        if training is None:
            training = keras.backend.learning_phase()
        if training is True and self.training_guard is not None and \
                not save_context.in_save_context():  # a SavedModel traces training calls
            self.training_guard.check()
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

    def get_config(self):
        config = super().get_config()
        if self.pruned_weight_names is not None:
            config["pruned_weights"] = self.pruned_weight_names
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        schedule = keras.utils.deserialize_keras_object(config.pop("pruning_schedule"))
        config["layer"] = keras.layers.deserialize(config.pop("layer"))
        return cls(pruning_schedule=schedule, **config)


class TfKerasLotteryModel(LotteryModel, keras.Model):
    """A functional tf_keras model with TF-MOT wrappers whose ``fit`` runs IMP rounds.

    Its constructor is not Functional's, so tf_keras's ``clone_model`` with a clone
    function (TF-MOT's ``strip_pruning``) makes a plain Model, whose files load without
    tf_lottery; its config is a Functional one all the same.
    """

    def __init__(self, *args, **kwargs):  # not Functional's signature: see above
        super().__init__(*args, **kwargs)

    def guard_wrappers(self) -> None:
        """Give every wrapper this model's :class:`TrainingGuard` to check."""
        self.training_guard = TrainingGuard(f"model {self.name!r}")
        for _, layer in ENGINE.layers(self):
            if isinstance(layer, PruneLowMagnitude):
                layer.training_guard = self.training_guard

    def train_step(self, data):
        """Keras's training step, then the step count: once per optimizer step."""
        logs = super().train_step(data)
        ENGINE.count_step(self)
        return logs

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable}
        return dict(copy.deepcopy(functional.get_network_config(self, config=config)),
                    **self.lottery_config())

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        lottery = {key: config.pop(key) for key in LotteryModel.LOTTERY_KEYS if key in config}
        model = super().from_config(config, custom_objects)
        model.guard_wrappers()
        model.restore_lottery(lottery)
        return model


def _short_name(variable) -> str:
    return variable.name.split(":")[0].rsplit("/", 1)[-1]


class TfKerasEngine(Engine):
    """tf_keras models, masked by TF-MOT's PruneLowMagnitude wrappers."""

    name = "tf_keras"
    keras = keras
    lottery_model = TfKerasLotteryModel

    def _identifier_config(self, config: dict, what: str) -> dict:
        # tf_keras reads an optimizer mapping without this key as its legacy optimizer
        # (no use_ema, no weight_decay); a name gives the current one
        return {"is_legacy_optimizer": False, **config} if what == "optimizer" else config

    def check_model(self, model) -> None:
        if not isinstance(model, keras.Model):
            raise SettingTypeError(f"expected a tf_keras Model, got {type(model).__name__}")
        if not (isinstance(model, keras.Sequential) or model._is_graph_network):
            raise SettingTypeError(
                f"{type(model).__name__} is a subclassed tf_keras model; TF-MOT can only "
                "wrap Sequential and functional models. Rebuild it with keras.Sequential or "
                "keras.Model(inputs, outputs), or build it with Keras 3 (`import keras`), "
                "whose engine takes subclassed models.")
        if not model.built:
            raise SettingError(
                "the model is not built, so it has no initial weights to rewind to; give its "
                "first layer an input shape (or call it on data) before wrapping it")

    def layers(self, model, prefix: str = "") -> list:
        found, seen = [], set()
        for layer in model.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if isinstance(layer, keras.Model):
                found += self.layers(layer, f"{prefix}{layer.name}/")
            else:
                found.append((prefix, layer))
        return found

    def layer_name(self, layer) -> str:
        return layer.layer.name if isinstance(layer, _TFMOTPruneLowMagnitude) else layer.name

    def layer_weights(self, layer) -> list:
        inner = layer.layer if isinstance(layer, _TFMOTPruneLowMagnitude) else layer
        return [(_short_name(variable), variable) for variable in inner.weights]

    def default_prunable(self, layer) -> list:
        if isinstance(layer, _TFMOTPruneLowMagnitude):
            return [weight for weight, _, _ in layer.pruning_vars]
        if hasattr(layer, "get_prunable_weights"):
            return list(layer.get_prunable_weights())
        if prune_registry.PruneRegistry.supports(layer):
            return list(prune_registry.PruneRegistry.make_prunable(layer)
                        .get_prunable_weights())
        return []

    def is_supported(self, layer) -> bool:
        return not layer.weights or isinstance(layer, _TFMOTPruneLowMagnitude) or \
            hasattr(layer, "get_prunable_weights") or prune_registry.PruneRegistry.supports(layer)

    def unsupported_message(self, layer) -> str:
        return (f"layer {layer.name!r} ({type(layer).__name__}) has weights but TF-MOT does not "
                f"know how to prune it. Leave it dense with exclude=[{layer.name!r}], make it "
                "a tfmot.sparsity.keras.PrunableLayer (define get_prunable_weights), or build "
                "the model with Keras 3, whose engine trains any layer.")

    def prepare(self, model, schedule, settings, pruned_paths):
        if settings.prunable:
            raise SettingError(
                "prunable= selects weights on Keras 3 models; on a tf_keras model TF-MOT "
                "decides what a layer prunes: make the layer a "
                "tfmot.sparsity.keras.PrunableLayer (define get_prunable_weights) instead")
        wrapped = [layer for _, layer in self.layers(model)
                   if isinstance(layer, _TFMOTPruneLowMagnitude)]
        if wrapped:
            raise SettingTypeError(
                f"layer {wrapped[0].name!r} is already wrapped by TF-MOT's "
                "prune_low_magnitude; tf_lottery wraps the plain model itself. Strip it first "
                "(tfmot.sparsity.keras.strip_pruning(model)) and pass the result.")
        pruned = set(pruned_paths)
        to_wrap = {id(layer): self._pruned_names(layer, prefix, pruned)
                   for prefix, layer in self.layers(model)
                   if pruned & set(self.weight_paths(layer, prefix))}

        def clone(layer):
            if isinstance(layer, keras.Model):
                return keras.models.clone_model(layer, clone_function=clone)
            if id(layer) in to_wrap:
                return PruneLowMagnitude(layer, pruned_weights=to_wrap[id(layer)],
                                         pruning_schedule=RoundsSchedule(schedule))
            return layer
        clone_ = keras.models.clone_model(model, clone_function=clone)
        lottery = TfKerasLotteryModel(inputs=clone_.inputs, outputs=clone_.outputs,
                                      name=model.name)
        for _, layer in self.layers(lottery):
            if isinstance(layer, _TFMOTPruneLowMagnitude):
                layer.pruning_step.assign(0)
        lottery.guard_wrappers()
        return lottery

    def _pruned_names(self, layer, prefix: str, pruned: set):
        """The short names of ``layer``'s weights in ``pruned``, or None where they are the
        ones TF-MOT prunes by default."""
        paths = self.weight_paths(layer, prefix)
        names = [path.rsplit("/", 1)[-1] for path in paths if path in pruned]
        defaults = {id(variable) for variable in self.default_prunable(layer)}
        return None if {id(paths[path]) for path in paths if path in pruned} == defaults \
            else names

    def training_guard(self, model) -> TrainingGuard:
        return model.training_guard

    def pruned_weights(self, model) -> dict:
        pruned = {}
        for prefix, layer in self.layers(model):
            if isinstance(layer, _TFMOTPruneLowMagnitude):
                by_id = {id(var): path for path, var in self.weight_paths(layer, prefix).items()}
                for weight, mask, _ in layer.pruning_vars:
                    pruned[by_id[id(weight)]] = PrunedWeight(layer.layer.name, weight, mask)
        return pruned

    def strip(self, model):
        self.check_model(model)
        pruned = self.pruned_weights(model)
        for pruned_weight in pruned.values():
            mask = pruned_weight.mask.numpy() != 0
            pruned_weight.weight.assign(masked(pruned_weight.weight.numpy(), mask))
        plain = keras.Model(model.inputs, model.outputs, name=model.name)
        stripped = tfmot.sparsity.keras.strip_pruning(plain) if pruned else plain
        return self.clone(stripped)

    def step_counter(self, model):
        for _, layer in self.layers(model):
            if isinstance(layer, _TFMOTPruneLowMagnitude):
                return layer.pruning_step
        raise SettingError("the model has no pruning wrapper")

    def count_step(self, model):
        """Advance every wrapper's ``pruning_step`` by one: once per optimizer step, so a
        layer applied several times (shared layers) counts each step once."""
        return tf.group([layer.pruning_step.assign_add(1) for _, layer in self.layers(model)
                         if isinstance(layer, _TFMOTPruneLowMagnitude)])

    def fit_callbacks(self, callbacks: list) -> list:
        """TF-MOT's UpdatePruningStep (it re-masks the weights at every epoch end, so the
        weights a fit leaves hold the masks' exact zeros), then ``callbacks``, tf_lottery's
        given what tf_keras's callback list asks of a callback."""
        return [tfmot.sparsity.keras.UpdatePruningStep(), *map(_for_tf_keras, callbacks)]

    def optimizer_variables(self, optimizer, trainable_variables) -> list:
        if isinstance(optimizer, keras.optimizers.legacy.Optimizer):
            optimizer._create_all_weights(trainable_variables)
            return list(optimizer.variables())
        optimizer.build(trainable_variables)  # a no-op once built
        return list(optimizer.variables)

    def moving_averages(self, optimizer, variables) -> list:
        if not getattr(optimizer, "use_ema", False):  # legacy optimizers have no EMA
            return []
        averages = optimizer._model_variables_moving_average
        return [(v, averages[optimizer._index_dict[optimizer._var_key(v)]]) for v in variables]

    def steps_per_execution(self, model) -> int:
        return int(model._steps_per_execution.numpy())

    def node_inputs(self, node) -> list:
        return list(node.keras_inputs)

    def save_serving(self, model, path) -> None:
        model.save(path, save_format="tf", include_optimizer=False)

    def custom_object_scope(self):
        """tf_keras's scope holding the classes a saved tf_lottery model needs to load (the
        legacy name of the LotteryModel included)."""
        return keras.utils.custom_object_scope({
            "PruneLowMagnitude": PruneLowMagnitude, "RewindingSchedule": RoundsSchedule,
            "LotteryModel": TfKerasLotteryModel, "TfKerasLotteryModel": TfKerasLotteryModel})

    def load_model(self, path, **kwargs):
        with self.custom_object_scope():
            return keras.models.load_model(path, **kwargs)

    @contextlib.contextmanager
    def name_counters(self):
        from tf_keras.src import backend
        saved = ({graph: dict(uids) for graph, uids in
                  backend.PER_GRAPH_OBJECT_NAME_UIDS.items()}, set(backend.OBSERVED_NAMES))
        backend.reset_uids()
        try:
            yield
        finally:
            backend.reset_uids()
            for graph, uids in saved[0].items():
                backend.PER_GRAPH_OBJECT_NAME_UIDS[graph] = collections.defaultdict(int, uids)
            backend.OBSERVED_NAMES.update(saved[1])


ENGINE = TfKerasEngine()
TfKerasLotteryModel.engine = ENGINE
