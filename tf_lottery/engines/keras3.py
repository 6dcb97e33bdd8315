"""The Keras 3 engine: masks are variables, enforced through each pruned weight's constraint.

Keras 3 optimizers assign ``variable.constraint(variable)`` after every update (TensorFlow
and JAX backends, compiled steps included). A prepared model is a
:class:`Keras3LotteryModel` that holds the user's model (``network``: Sequential,
functional, subclassed, custom layers alike; nothing is cloned), a 0/1 mask variable per
pruned weight and an optimizer-step counter; each pruned weight's constraint multiplies
it by its mask after the user's own constraint, so pruned weights are exactly 0 in every
step's forward pass.

The network trains itself: compiling the LotteryModel compiles the network with the same
settings, and every training, evaluation and prediction step is the network's own
(``train_step``, ``compute_loss``, its metrics and ``add_loss`` terms, overrides
included). The LotteryModel adds only the step count: the optimizer's updates, once per
step (gradient accumulation and a loss-scale optimizer's skipped steps included).

On the JAX backend a compiled step sees variables only through its state: the model's
``train_step`` hands the network its part of the state, binds the masks' values from it
for the constraints to read, and advances the step counter in it. Callbacks read and
assign variables through ``callback.model``, which brings the state back into the
variables first (Keras 3).
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tf_lottery.core.masks import masked
from tf_lottery.engines.base import Engine, PrunedWeight, TrainingGuard
from tf_lottery.engines.lottery_model import LotteryModel
from tf_lottery.foundations.errors import SettingError, SettingTypeError

_BACKENDS = ("tensorflow", "jax")
JAX = keras.backend.backend() == "jax"
_COMPILE = inspect.signature(keras.Model.compile)
_EXECUTION = ("run_eagerly", "steps_per_execution", "jit_compile")  # the LotteryModel's own

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


class _MaskSource:
    """Where a model's constraints read its masks: the mask variables, or, while a JAX step
    is traced, the masks' values in that step's state. It holds the model's guard."""

    def __init__(self, guard: TrainingGuard):
        self.bound = None  # id(mask variable) -> traced value
        self.guard = guard

    def value(self, mask):
        if self.bound is not None and id(mask) in self.bound:
            return self.bound[id(mask)]
        return mask.value


class MaskConstraint(keras.constraints.Constraint):
    """The user's constraint (if any), then the mask: pruned entries become exactly 0."""

    def __init__(self, mask, source: _MaskSource, inner=None):
        self.mask, self.source, self.inner = mask, source, inner

    def __call__(self, weight):
        self.source.guard.check()
        if self.inner is not None:
            weight = self.inner(weight)
        return weight * ops.cast(self.source.value(self.mask), weight.dtype)


def _iteration_counter(optimizer):
    """The variable counting an optimizer's batches, and the batches per update: a
    loss-scale optimizer steps its inner one, gradient accumulation updates every k."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return inner._iterations, inner.gradient_accumulation_steps or 1


def _updates(optimizer, batches):
    """The optimizer updates ``batches`` (a value of its counter) stand for."""
    return batches // _iteration_counter(optimizer)[1]


@keras.saving.register_keras_serializable(package="tf_lottery")
class Keras3LotteryModel(LotteryModel, keras.Model):
    """A Keras 3 model that trains ``network`` (shared, not copied) under masks and counts
    its optimizer steps; with a round controller attached, its ``fit`` runs IMP rounds."""

    def __init__(self, network, pruned, name=None, **kwargs):
        super().__init__(name=name or network.name, **kwargs)
        self.network = network
        self.pruned = list(pruned)
        self.stripped = False  # strip_pruning detached the network (one it cannot copy)
        weights = ENGINE.model_weights(network)
        self.mask_variables = [
            keras.Variable(np.ones(weights[path].shape, dtype=weights[path].dtype),
                           trainable=False, name="mask") for path in self.pruned]
        self.step_variable = keras.Variable(0, dtype="int32", trainable=False, name="imp_step",
                                            aggregation="only_first_replica")
        self._guard = TrainingGuard(f"model {self.name!r}")
        self._mask_source = _MaskSource(self._guard)
        for path, mask in zip(self.pruned, self.mask_variables):
            weight = weights[path]
            inner = weight.constraint
            if isinstance(inner, MaskConstraint):
                raise SettingError(f"{path} is already masked by another tf_lottery model; "
                                   "prepare the original model once")
            weight.constraint = MaskConstraint(mask, self._mask_source, inner)
        self.built = True
        if network.compiled:  # compiled by its user: train as compiled
            self._compile_execution(network.optimizer, {
                key: getattr(network, key) for key in _EXECUTION})

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def save(self, filepath, *args, **kwargs):
        """Keras's ``save``; ``.h5`` (Keras 3's legacy format, which cannot hold the masks)
        is refused before anything is written."""
        if str(filepath).endswith((".h5", ".hdf5")):
            raise SettingError(
                f"a Keras 3 LotteryModel saves as .keras, not {Path(filepath).name}: Keras 3 "
                "writes .h5 in its legacy format, which cannot hold the masks and rounds. Save "
                f"it as {Path(filepath).stem}.keras, or its ticket (tfl.strip_pruning) as .h5")
        return super().save(filepath, *args, **kwargs)

    # --- the network compiles and steps itself ------------------------------------------

    def compile(self, *args, **kwargs):
        """Keras's ``compile``, for the network: its steps run with these settings."""
        settings = _COMPILE.bind(self, *args, **kwargs)
        settings.apply_defaults()
        settings = dict(settings.arguments)
        del settings["self"]
        self.check_optimizer(settings["optimizer"])
        self.network.compile(**settings)
        self._compile_execution(self.network.optimizer, {key: settings[key]
                                                         for key in _EXECUTION})

    def _compile_execution(self, optimizer, execution: dict) -> None:
        """Compile the LotteryModel itself: the network's optimizer, how steps execute."""
        keras.Model.compile(self, optimizer=optimizer, **execution)

    def get_compile_config(self):
        return self.network.get_compile_config() if self.compiled else {}

    @property
    def metrics(self):
        return self.network.metrics

    def _symbolic_build(self, iterator=None, data_batch=None):
        self.network._symbolic_build(iterator=iterator, data_batch=data_batch)
        super()._symbolic_build(iterator=iterator, data_batch=data_batch)

    if JAX:
        def train_step(self, state, data):
            """The network's stateless step on its part of ``state``, the masks bound for
            the constraints; counts the optimizer's updates."""
            trainable, non_trainable, optimizer_values, metrics = state
            values = self._values(trainable, non_trainable)
            counter, _ = _iteration_counter(self.optimizer)
            index = [id(v) for v in self.optimizer.variables].index(id(counter))
            before = optimizer_values[index]
            self._mask_source.bound = {id(m): values[id(m)] for m in self.mask_variables}
            try:
                logs, (trainable, non_trainable, optimizer_values, metrics) = \
                    self.network.train_step(
                        (*self._network_values(values), optimizer_values, metrics), data)
            finally:
                self._mask_source.bound = None
            self._update(values, trainable, non_trainable)
            values[id(self.step_variable)] += ops.cast(
                _updates(self.optimizer, optimizer_values[index]) -
                _updates(self.optimizer, before), "int32")
            return logs, (*self._state(values), optimizer_values, metrics)

        def test_step(self, state, data):
            trainable, non_trainable, metrics = state
            values = self._values(trainable, non_trainable)
            logs, (trainable, non_trainable, metrics) = self.network.test_step(
                (*self._network_values(values), metrics), data)
            self._update(values, trainable, non_trainable)
            return logs, (*self._state(values), metrics)

        def predict_step(self, state, data):
            values = self._values(*state)
            outputs, non_trainable = self.network.predict_step(
                self._network_values(values), data)
            self._update(values, [], non_trainable)
            return outputs, self._state(values)[1]

        def _values(self, trainable, non_trainable) -> dict:
            """id(variable) -> its value in a step's state."""
            return {**dict(zip(map(id, self.trainable_variables), trainable)),
                    **dict(zip(map(id, self.non_trainable_variables), non_trainable))}

        def _network_values(self, values) -> tuple:
            """The network's trainable and non-trainable values out of ``values``."""
            network = self.network
            return ([values[id(v)] for v in network.trainable_variables],
                    [values[id(v)] for v in network.non_trainable_variables])

        def _update(self, values, trainable, non_trainable) -> None:
            network = self.network
            if trainable:
                values.update(zip(map(id, network.trainable_variables), trainable))
            values.update(zip(map(id, network.non_trainable_variables), non_trainable))

        def _state(self, values):
            return ([values[id(v)] for v in self.trainable_variables],
                    [values[id(v)] for v in self.non_trainable_variables])
    else:
        def train_step(self, data):
            """The network's step, then the count of the optimizer's updates in it."""
            before = _updates(self.optimizer, ops.convert_to_tensor(
                _iteration_counter(self.optimizer)[0]))
            logs = self.network.train_step(data)
            after = _updates(self.optimizer, ops.convert_to_tensor(
                _iteration_counter(self.optimizer)[0]))
            self.step_variable.assign_add(ops.cast(after - before, "int32"))
            return logs

        def test_step(self, data):
            return self.network.test_step(data)

        def predict_step(self, data):
            return self.network.predict_step(data)

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


def _network(model):
    """The user's model: a LotteryModel's network, or ``model`` itself."""
    return model.network if isinstance(model, Keras3LotteryModel) else model


def _copied(model, weights: bool = True):
    """A copy of ``model`` through its config, with its weights (or built only); None for a
    model whose config cannot make a copy (a subclassed model without ``get_config``)."""
    try:
        config = keras.saving.serialize_keras_object(model)
        config.pop("compile_config", None)  # the architecture, not how it was compiled
        copy = keras.saving.deserialize_keras_object(config)
    except (NotImplementedError, TypeError, ValueError):
        return None
    if not copy.built:
        copy.build_from_config(model.get_build_config())
    if weights:
        source, target = ENGINE.model_weights(model), ENGINE.model_weights(copy)
        for path, variable in target.items():
            variable.assign(source[path].numpy())
    return copy


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
        if backend not in _BACKENDS:
            raise SettingError(
                f"the {backend} backend of Keras 3 is not supported; set KERAS_BACKEND to one "
                f"of {', '.join(_BACKENDS)} before importing keras")
        if not model.built or not model.weights:
            raise SettingError(
                f"the model {model.name!r} is not built, so it has no initial weights to "
                "rewind to; call it on a batch of data (or give it an Input) before wrapping it")

    def layers(self, model, prefix: str = "") -> list:
        network = _network(model)
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

    def training_guard(self, model) -> TrainingGuard:
        return model._guard

    def strip(self, model):
        """A copy of the network with the masks applied; a network that cannot be copied (a
        subclassed model without ``get_config``) is detached instead: the network itself,
        its own constraints back and pruned weights exactly 0 (``model`` trains no more)."""
        self.check_model(model)
        copy = _copied(_network(model))
        if copy is None:
            return self.plain(model, detach=True)
        if isinstance(model, Keras3LotteryModel):
            weights = self.model_weights(copy)
            for path, pruned in self.pruned_weights(model).items():
                weights[path].assign(masked(pruned.weight.numpy(), pruned.mask.numpy() != 0))
        return copy

    def plain(self, model, detach: bool = False):
        """The network the LotteryModel ``model`` trains, pruned weights set to exactly 0
        (they are already, outside a step): an export converts it as it is, no copy.
        ``detach`` also gives the weights their own constraints back."""
        if not isinstance(model, Keras3LotteryModel) or model.stripped:
            return _network(model)
        for pruned in self.pruned_weights(model).values():
            pruned.weight.assign(masked(pruned.weight.numpy(), pruned.mask.numpy() != 0))
            if detach:
                pruned.weight.constraint = pruned.weight.constraint.inner
        model.stripped = detach
        return model.network

    def can_copy(self, model) -> bool:
        with self.name_counters():  # a trial copy: leave the layer-name counters alone
            return _copied(_network(model), weights=False) is not None

    def step_counter(self, model):
        return model.step_variable

    def count_step(self, model):
        model.step_variable.assign_add(1)

    def optimizer_variables(self, optimizer, trainable_variables) -> list:
        if not optimizer.built:
            optimizer.build(trainable_variables)
        return list(optimizer.variables)

    def optimizer_step(self, optimizer) -> int:
        return int(ops.convert_to_numpy(optimizer.iterations))

    def set_optimizer_step(self, optimizer, step: int) -> None:
        counter, batches_per_step = _iteration_counter(optimizer)
        counter.assign(step * batches_per_step)

    def batches_per_step(self, optimizer) -> int:
        return _iteration_counter(optimizer)[1]

    def pending_batches(self, optimizer) -> int:
        counter, batches_per_step = _iteration_counter(optimizer)
        return int(counter.numpy()) % batches_per_step

    def moving_averages(self, optimizer, variables) -> list:
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        if not inner.use_ema:
            return []
        averages = inner._model_variables_moving_average
        return [(v, averages[inner._get_variable_index(v)]) for v in variables
                if averages[inner._get_variable_index(v)] is not None]

    def steps_per_execution(self, model) -> int:
        return int(model.steps_per_execution)

    # --- gradients at given weights (pruning at initialization) -------------------------

    def check_gradients(self, model, what: str) -> None:
        if JAX:
            raise SettingError(
                f"{what} take the model's gradients with TensorFlow's GradientTape, and this "
                "process runs Keras 3 on JAX: run the search with KERAS_BACKEND=tensorflow, "
                f"or leave {what} out (random_reinit, random_pruning and magnitude_init need "
                "no gradients)")
        super().check_gradients(_network(model), what)

    def _gradient_target(self, variable):
        return variable.value  # the tf.Variable a Keras 3 variable reads on TensorFlow

    # --- export and architecture --------------------------------------------------------

    def io_counts(self, model) -> tuple:
        network = _network(model)
        try:
            return len(network.inputs), len(network.outputs)
        except (AttributeError, ValueError):  # a subclassed model: from its build shape
            shape = network.get_build_config()["input_shape"]
            inputs = 1 if all(isinstance(d, (int, type(None))) for d in shape) else len(shape)
            spec = network.compute_output_spec(keras.KerasTensor(shape))
            return inputs, len(keras.tree.flatten(spec))

    def input_spec(self, model) -> tuple:
        network = _network(model)
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
        """Through a quiet SavedModel export (``from_keras_model`` prints the signature), at
        batch size 1 where the input fixes it so: Keras's export drops a fixed batch size,
        and TFLite needs it to size a recurrent layer's loop."""
        path = Path(workdir) / "saved_model"
        inputs = getattr(model, "inputs", None)
        single = inputs and len(inputs) == 1 and inputs[0].shape[0] == 1
        model.export(str(path), format="tf_saved_model", verbose=False,
                     input_signature=[tf.TensorSpec(inputs[0].shape, inputs[0].dtype)]
                     if single else None)
        return tf.lite.TFLiteConverter.from_saved_model(str(path))

    def clone(self, model):
        """A copy of ``model`` (any kind of Keras 3 model) with the same weights."""
        copy = _copied(model)
        if copy is None:
            raise SettingTypeError(
                f"cannot copy {type(model).__name__}: a subclassed model needs get_config() "
                "(and @keras.saving.register_keras_serializable()) to be copied")
        return copy

    def reseeded_clone(self, model, seed: int):
        copy = super().reseeded_clone(model, seed)
        if not copy.built:
            copy.build_from_config(model.get_build_config())
        return copy

    def to_json(self, model) -> str:
        """Keras's JSON of the architecture; for a model without a config (a subclassed
        model without ``get_config``), a record of its class and weights (paths, shapes,
        dtypes): it tells a changed model on resume but cannot rebuild one."""
        try:
            record = json.loads(model.to_json())
            record.pop("compile_config", None)  # how it was compiled is not its architecture
            return json.dumps(record)
        except (NotImplementedError, TypeError, ValueError):
            return json.dumps({"class_name": type(model).__name__, "config": None,
                               "weights": {path: [list(v.shape), str(v.dtype)] for path, v in
                                           self.model_weights(model).items()}})

    def from_json(self, text: str):
        record = json.loads(text)
        if record.get("config", {}) is None:
            raise SettingError(
                f"the model {record['class_name']} has no config (a subclassed model without "
                "get_config), so it cannot be rebuilt from its record: build it with the "
                "function that made it and load the weights into that model")
        return keras.models.model_from_json(text)

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
