"""The engine contract: everything that depends on which Keras trains the model.

tf_lottery runs IMP on two Kerases: tf_keras (Keras 2), where TF-MOT's pruning wrappers
hold the masks (``engines/tfmot.py``), and Keras 3, where masks are variables enforced
through each pruned weight's constraint (``engines/keras3.py``). Masks, schedule, rounds,
rewind points, the search, results, TensorBoard and export speak only to an ``Engine``,
never to a Keras's private parts or to TF-MOT. A third engine is a module that subclasses
:class:`Engine` (filling in the abstract methods below) and
:class:`~tf_lottery.engines.LotteryModel` (with its Keras's Model), and an entry in
``tf_lottery.engines.registry.ENGINES``; :func:`tf_lottery.engines.engine_for` picks the
engine of a model's Keras. An engine imports nothing of tf_lottery above the engines
package but the core and the foundations.

What an engine provides:

- models: ``check_model`` (can it be pruned at all?),
  ``layers`` (every layer with its path prefix, nested models descended, each once),
  ``model_weights`` (every weight by path, ``"hidden_1/kernel"``: what a rewind restores),
  ``default_prunable`` (the weights of a layer pruned unless the user says otherwise),
  ``is_supported``;
- masking: ``prepare`` (a :class:`~tf_lottery.engines.LotteryModel` that trains ``model``'s
  own weights under masks, all ones at first), ``pruned_weights`` (path ->
  :class:`PrunedWeight`: the weight and its 0/1 mask variable), ``training_guard`` (the
  :class:`TrainingGuard` its masking checks), ``strip`` (a plain model with its own copy
  of the weights, masks applied), ``plain`` (the model an export converts);
- training: ``step_counter`` / ``count_step`` (optimizer steps, once per step whatever
  the topology), ``fit_callbacks`` (what every fit takes), ``optimizer_variables``
  (every slot and the step counter, created if needed), ``optimizer_step`` /
  ``set_optimizer_step`` (the optimizer's own step count, the learning-rate schedule's),
  ``batches_per_step`` / ``pending_batches`` (gradient accumulation),
  ``moving_averages`` (EMA slots),
  ``steps_per_execution``, ``name_counters``, ``set_random_seed``;
- Keras objects: ``optimizer``, ``loss`` (from identifiers), ``serialize`` /
  ``deserialize``, ``load_model``, ``custom_object_scope``;
- architecture: ``to_json`` / ``from_json``, ``can_copy``, ``clone`` / ``reseeded_clone``
  (a copy with every initializer drawn again: the random-reinit control);
- gradients (the pruning-at-initialization controls): ``check_gradients``,
  ``loss_gradients`` (and Hessian-vector products), ``output_gradients``;
- export: ``io_counts``, ``input_spec``, ``input_range``, ``save_serving``, ``check_tflite``,
  ``tflite_converter``, and what TFLite is known to fail on: ``looping_recurrent_layers``,
  ``half_precision_layers``.

Weights and masks are read with ``variable.numpy()`` and written with
``variable.assign(array)`` between steps, which both Kerases support on every backend.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from tf_lottery.engines.registry import keras_family
from tf_lottery.foundations.errors import SettingError, SettingTypeError


class PrunedWeight(NamedTuple):
    """One masked weight of a prepared model."""

    layer_name: str  # the owning layer's own name, as RewindingSchedule.layer_rates uses it
    weight: object   # the layer's weight variable (the float32 master under mixed precision)
    mask: object     # the 0/1 mask variable of the weight's shape


class LayerShape(NamedTuple):
    """A layer with weights, as a cost estimate sees it (static shapes, batch as None)."""

    path: str            # "block/conv1": the layer's name under the models it is nested in
    kind: str            # its class name: "Conv2D", "Dense", "SeparableConv2D", ...
    weights: dict        # short weight name -> shape
    output_shape: Optional[tuple]  # None where unknown (a subclassed model's layer, one
    #                                called more than once)


class TrainingGuard:
    """Refuses to train a prepared model where no one counts its steps.

    IMP ends rounds at optimizer steps that ``fit``, ``train_on_batch`` and
    ``custom_training()`` count (``counting()``); an optimizer update anywhere else (a
    ``GradientTape`` loop, a ``fit`` of the wrapped network itself) would train under the
    masks and never end a round. Each engine calls :meth:`check` where its masking meets
    training (Keras 3: the mask constraint, applied after every optimizer update; tf_keras:
    the wrapper's training call), so such training is refused at its first step.
    """

    def __init__(self, name: str = "the LotteryModel"):
        self.name, self._depth = name, 0

    @contextlib.contextmanager
    def counting(self):
        """Training inside this block is counted (nested blocks are fine)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def check(self) -> None:
        if not self._depth:
            raise SettingError(
                f"{self.name}'s masked weights are being trained outside fit, train_on_batch "
                "and custom_training(): no one counts these steps, so IMP would never end a "
                "round or prune. In a training loop of your own, write `with "
                "pruned.custom_training(optimizer) as rounds:` around it and call "
                "`rounds.step()` after every optimizer update; to train without IMP, strip "
                "the masks first (tfl.strip_pruning).")


class Engine(abc.ABC):
    """One Keras (and its masking machinery) behind tf_lottery's engine-neutral code."""

    name: str = ""  # "tf_keras", "keras3": what errors and the run directory call it
    keras = None  # the Keras module its models are built with (for model builders)
    always_compiled = False  # whether every step is compiled whatever jit_compile says (JAX)
    tensorflow_graphs = True  # whether models run in TensorFlow graphs (not on JAX)

    @property
    def package(self) -> str:
        """The name of the Keras package its models belong to (``keras``, ``tf_keras``)."""
        return self.keras.__name__

    # --- models -----------------------------------------------------------------------

    @abc.abstractmethod
    def check_model(self, model) -> None:
        """Raise an error naming the cause and the fix unless ``model`` can be pruned."""

    @abc.abstractmethod
    def layers(self, model) -> list:
        """``(path prefix, layer)`` for every layer, nested models descended, each once."""

    @abc.abstractmethod
    def layer_weights(self, layer) -> list:
        """``(short name, variable)`` of a layer's own weights (never tf_lottery's masks)."""

    @abc.abstractmethod
    def default_prunable(self, layer) -> list:
        """The variables of ``layer`` that are pruned by default (kernels, embeddings)."""

    @abc.abstractmethod
    def is_supported(self, layer) -> bool:
        """Whether the engine can train ``layer`` under IMP (prunable, or harmless)."""

    def unsupported_message(self, layer) -> str:
        """Why ``layer`` cannot be trained under IMP, and what to do instead."""
        return (f"layer {layer.name!r} ({type(layer).__name__}) cannot be trained under "
                f"IMP by the {self.name} engine. Leave it dense with exclude=[{layer.name!r}].")

    def model_weights(self, model) -> dict:
        """Every weight of every layer by path: what a rewind point holds."""
        paths = {}
        for prefix, layer in self.layers(model):
            paths.update(self.weight_paths(layer, prefix))
        return paths

    def weight_paths(self, layer, prefix: str = "") -> dict:
        """A layer's own weights by path (``"dense/kernel"``); a repeated name gets the
        weight's index as a suffix."""
        paths = {}
        for index, (short, variable) in enumerate(self.layer_weights(layer)):
            path = f"{prefix}{self.layer_name(layer)}/{short}"
            paths[path if path not in paths else f"{path}_{index}"] = variable
        return paths

    def layer_name(self, layer) -> str:
        return layer.name

    def layer_shapes(self, model) -> list:
        """A :class:`LayerShape` for every layer with weights of ``model``'s plain model."""
        return [LayerShape(f"{prefix}{self.layer_name(layer)}", type(layer).__name__,
                           {short: tuple(variable.shape)
                            for short, variable in self.layer_weights(layer)},
                           _output_shape(layer))
                for prefix, layer in self.layers(self.plain(model)) if self.layer_weights(layer)]

    # --- masking ----------------------------------------------------------------------

    @abc.abstractmethod
    def prepare(self, model, schedule, settings, pruned_paths: list):
        """A LotteryModel training ``model``'s own weights, the ones at ``pruned_paths``
        under masks (all ones at first), without a round controller."""

    @abc.abstractmethod
    def pruned_weights(self, model) -> dict:
        """Path -> :class:`PrunedWeight` for every masked weight of a prepared model."""

    @abc.abstractmethod
    def training_guard(self, model) -> TrainingGuard:
        """The guard a prepared model's masking checks when it trains."""

    @abc.abstractmethod
    def strip(self, model):
        """A plain model of this Keras with its own weights, pruned ones exactly 0."""

    def plain(self, model):
        """The plain model an export converts: the user's layers without tf_lottery's
        masking, pruned weights exactly 0 (it may share weights with ``model``)."""
        return self.strip(model)

    def can_copy(self, model) -> bool:
        """Whether :meth:`clone` and :meth:`reseeded_clone` can copy ``model``."""
        return True

    # --- training ---------------------------------------------------------------------

    @abc.abstractmethod
    def step_counter(self, model):
        """The variable counting the optimizer steps a prepared model has taken."""

    @abc.abstractmethod
    def count_step(self, model):
        """Advance the step counter of ``model`` by one optimizer step."""

    @abc.abstractmethod
    def optimizer_variables(self, optimizer, trainable_variables) -> list:
        """All of ``optimizer``'s variables (slots and step counter), created if needed."""

    def optimizer_step(self, optimizer) -> int:
        """The steps ``optimizer`` has taken (what its learning-rate schedule reads)."""
        return int(optimizer.iterations.numpy())

    def set_optimizer_step(self, optimizer, step: int) -> None:
        optimizer.iterations.assign(step)

    def batches_per_step(self, optimizer) -> int:
        """Batches per optimizer step: k under gradient accumulation, else 1."""
        return 1

    def pending_batches(self, optimizer) -> int:
        """The batches accumulated towards the optimizer's next step (0 without
        accumulation; read from its variables, so not inside a JAX epoch)."""
        return 0

    @abc.abstractmethod
    def moving_averages(self, optimizer, variables) -> list:
        """``(variable, average)`` of each of ``variables`` whose moving average the
        optimizer keeps (``use_ema=True``); empty without EMA."""

    @abc.abstractmethod
    def steps_per_execution(self, model) -> int:
        """How many steps a compiled model runs per call (round ends fall between calls)."""

    def fit_callbacks(self, callbacks: list) -> list:
        """The callbacks a ``fit`` of a prepared model runs: ``callbacks`` (tf_lottery's,
        Keras 3 callbacks, and the user's) as this Keras takes them, and the engine's own."""
        return list(callbacks)

    @abc.abstractmethod
    def name_counters(self):
        """A context in which this Keras names layers as in a fresh process; its counters
        are restored on exit."""

    def set_random_seed(self, seed: int) -> None:
        self.keras.utils.set_random_seed(seed)

    # --- Keras objects ----------------------------------------------------------------

    def optimizer(self, identifier, **settings):
        """An optimizer of this Keras from a name, a ``{"class_name", "config"}`` dict or an
        optimizer (a copy: each training gets its own), ``settings`` (``learning_rate=...``)
        replacing its own; another Keras's is refused."""
        optimizer = self._from_identifier(identifier, "optimizer", "optimizers")
        if settings:
            optimizer = type(optimizer).from_config({**optimizer.get_config(), **settings})
        return optimizer

    def loss(self, identifier):
        """A loss of this Keras from a dict or a loss object (a copy); a name as it is
        (Keras resolves it at compile)."""
        return identifier if isinstance(identifier, str) else \
            self._from_identifier(identifier, "loss", "losses")

    def metric(self, identifier):
        """A metric from a name (as it is: Keras resolves it at compile) or a copy of one."""
        return identifier if isinstance(identifier, str) else \
            self._from_identifier(identifier, "metric", "metrics")

    def _from_identifier(self, identifier, what: str, module_name: str):
        module = getattr(self.keras, module_name)
        if isinstance(identifier, (str, dict)):
            if isinstance(identifier, dict):
                identifier = self._identifier_dict(identifier, what)
            try:
                return module.get(identifier)
            except (ValueError, TypeError) as error:
                name = identifier.get("class_name", identifier) \
                    if isinstance(identifier, dict) else identifier
                raise SettingError(f"{what} {name!r} is not a {self.package} {what} "
                                   f"({error})") from error
        family = keras_family(identifier)
        if family is None and (what == "optimizer" or not callable(identifier)):
            raise SettingTypeError(f"the {what} must be a name, a mapping {{class_name: ..., "
                                   f"config: {{...}}}} or an object of {self.package}."
                                   f"{module_name}, got {type(identifier).__name__} "
                                   f"{identifier!r}")
        allowed = (self.name,) if what == "optimizer" else (None, self.name)  # or a function
        if family not in allowed:
            raise SettingTypeError(
                f"the {what} {type(identifier).__name__} belongs to another Keras than the "
                f"{self.name} model; use a {what} of {self.package}.{module_name}")
        get_config = getattr(identifier, "get_config", None)
        return type(identifier).from_config(get_config()) if get_config else identifier

    def _identifier_dict(self, identifier: dict, what: str) -> dict:
        """``{"class_name": name, "config": {...}}`` (config optional) checked, as this
        Keras reads it."""
        name, config = identifier.get("class_name"), identifier.get("config", {})
        extra = set(identifier) - {"class_name", "config", "module", "registered_name"}
        if not isinstance(name, str) or not isinstance(config, dict) or extra:
            raise SettingError(f"the {what}, given as a mapping, takes class_name (its name) and "
                               f"config (a mapping of its arguments), e.g. {{class_name: "
                               f"adam, config: {{use_ema: true}}}}; got {identifier!r}")
        return {**identifier, "config": self._identifier_config(config, what)}

    def _identifier_config(self, config: dict, what: str) -> dict:
        """The ``config`` of a ``what`` given as a mapping, as this Keras's ``get`` reads it."""
        return config

    def serialize(self, obj):
        """A Keras object as a JSON-able config (a name stays a name)."""
        return obj if obj is None or isinstance(obj, str) else \
            self.keras.saving.serialize_keras_object(obj)

    def deserialize(self, config):
        return self.keras.saving.deserialize_keras_object(config)

    @abc.abstractmethod
    def load_model(self, path, **kwargs):
        """A model saved by this Keras (a prepared one with its rounds)."""

    def custom_object_scope(self):
        """A context in which this Keras's own loader finds tf_lottery's classes."""
        return contextlib.nullcontext()

    # --- export -----------------------------------------------------------------------

    def io_counts(self, model) -> tuple:
        """How many inputs and outputs ``model`` has."""
        return len(model.inputs), len(model.outputs)

    def input_spec(self, model) -> tuple:
        """The shape (without the batch axis) and NumPy dtype of ``model``'s one input."""
        tensor = model.inputs[0]
        dtype = getattr(tensor.dtype, "as_numpy_dtype", tensor.dtype)
        return tuple(tensor.shape[1:]), np.dtype(dtype)

    def input_range(self, model) -> Optional[int]:
        """How many values ``model``'s input may take, where its layers say so: the least
        ``input_dim`` of the Embedding layers the input goes into (nested models
        descended); None where no Embedding takes it (or no graph shows what does)."""
        try:
            consumers = self._consumers(model, model.inputs[0])
        except (AttributeError, ValueError):  # a subclassed model: no graph to follow
            return None
        return min((layer.input_dim for layer in consumers
                    if isinstance(layer, self.keras.layers.Embedding)), default=None)

    def _consumers(self, model, tensor) -> list:
        """The layers of ``model`` that ``tensor`` goes into, through nested models."""
        found = []
        for layer in model.layers:
            if any(any(t is tensor for t in self.node_inputs(node))
                   for node in layer._inbound_nodes):
                found += self._consumers(layer, layer.inputs[0]) \
                    if isinstance(layer, self.keras.Model) else [layer]
        return found

    def node_inputs(self, node) -> list:
        """The Keras tensors a call (a node of a functional graph) took."""
        return list(node.input_tensors)

    def node_outputs(self, node) -> list:
        """The Keras tensors a call (a node of a functional graph) returned."""
        return tf.nest.flatten(node.outputs)

    def looping_recurrent_layers(self, model) -> list:
        """The names of the recurrent layers that loop over time steps (not ``unroll=True``)
        in a model whose batch size is not fixed at 1: TFLite's converter cannot size their
        loop over a batch of unknown size, and a TFLite export runs one input at a time."""
        try:
            batch = model.inputs[0].shape[0]
        except (AttributeError, IndexError, TypeError):  # a subclassed model: not fixed
            batch = None
        return [] if batch == 1 else [
            layer.name for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, self.keras.layers.RNN) and not layer.unroll]

    def half_precision_layers(self, model) -> list:
        """The names of the layers computing in float16 or bfloat16 (mixed precision)."""
        return [layer.name for layer in model._flatten_layers(include_self=False)
                if layer.compute_dtype in ("float16", "bfloat16")]

    @abc.abstractmethod
    def save_serving(self, model, path) -> None:
        """Write ``model`` as a TensorFlow SavedModel with a ``serving_default`` signature."""

    def check_tflite(self, model) -> None:  # noqa: B027 -- most engines refuse nothing
        """Refuse a model this engine cannot convert to TFLite (e.g. another backend)."""

    def tflite_converter(self, model, workdir):
        """A ``tf.lite.TFLiteConverter`` for ``model`` (``workdir``: a scratch folder)."""
        return tf.lite.TFLiteConverter.from_keras_model(model)

    # --- gradients at given weights (pruning at initialization) -----------------------

    def check_gradients(self, model, what: str) -> None:
        """Refuse, naming the fix, a model whose weight gradients ``what`` (the controls
        that need them) cannot take: one input and one output, TensorFlow tensors."""
        inputs, outputs = self.io_counts(model)
        if (inputs, outputs) != (1, 1):
            raise SettingError(
                f"{what} score models of one input and one output; this model has {inputs} "
                f"inputs and {outputs} outputs. Leave {what} out of controls")

    def loss_gradients(self, model, values: dict, paths: list, batches, loss,
                       temperature: float = 1.0, vector=None) -> dict:
        """Path -> ∂L/∂w (NumPy) for the weights at ``paths`` of ``model`` (plain), its
        weights set to ``values`` (path -> array) meanwhile, then put back. L is the sum
        over ``batches`` ((x, y) pairs) of ``loss`` (an identifier, resolved by this Keras)
        of the outputs divided by ``temperature``, in inference mode; with ``vector`` (path
        -> array over ``paths``), the Hessian-vector product H·vector of L instead.

        Example::

            g = engine.loss_gradients(model, theta0, ["dense/kernel"], [(x, y)], "mse")
        """
        function = self._loss_function(loss)
        variables = self.model_weights(model)
        targets = [self._gradient_target(variables[path]) for path in paths]
        zero = tf.UnconnectedGradients.ZERO
        totals = [np.zeros(variables[path].shape, np.float64) for path in paths]
        with _weights_set(variables, values):
            for x, y in batches:
                with tf.GradientTape(watch_accessed_variables=False) as outer:
                    outer.watch(targets)
                    with tf.GradientTape(watch_accessed_variables=False) as inner:
                        inner.watch(targets)
                        outputs = tf.cast(model(x, training=False), tf.float32)
                        value = tf.reduce_mean(function(y, outputs / temperature))
                    gradients = inner.gradient(value, targets, unconnected_gradients=zero)
                    if vector is not None:
                        value = tf.add_n([tf.reduce_sum(g * tf.cast(vector[path], g.dtype))
                                          for g, path in zip(gradients, paths)])
                if vector is not None:
                    gradients = outer.gradient(value, targets, unconnected_gradients=zero)
                for total, gradient in zip(totals, gradients):
                    total += np.asarray(gradient, np.float64)
        return dict(zip(paths, totals))

    def output_gradients(self, model, values: dict, paths: list) -> dict:
        """Path -> ∂R/∂w (NumPy) for the weights at ``paths``, R the sum of ``model``'s
        outputs on one all-ones input in inference mode (moving statistics, no dropout),
        its weights set to ``values`` meanwhile: SynFlow's synaptic flow when ``values``
        are magnitudes."""
        shape, dtype = self.input_spec(model)
        ones = np.ones((1, *shape), dtype=dtype)
        variables = self.model_weights(model)
        targets = [self._gradient_target(variables[path]) for path in paths]
        with _weights_set(variables, values):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(targets)
                flow = tf.reduce_sum(tf.cast(model(ones, training=False), tf.float64))
            gradients = tape.gradient(flow, targets,
                                      unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return {path: np.asarray(g, np.float64) for path, g in zip(paths, gradients)}

    def _gradient_target(self, variable):
        """What a GradientTape watches for ``variable``."""
        return variable

    def _loss_function(self, identifier):
        """A callable ``loss(y_true, y_pred)`` of this Keras from an identifier."""
        loss = self.loss(identifier)
        return self.keras.losses.get(loss) if isinstance(loss, str) else loss

    # --- architecture -----------------------------------------------------------------

    def to_json(self, model) -> str:
        return model.to_json()

    def from_json(self, text: str):
        return self.keras.models.model_from_json(text)

    def clone(self, model):
        """A copy of ``model``'s architecture with the same weights."""
        copy = self.keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        return copy

    def reseeded_clone(self, model, seed: int):
        """A copy of ``model`` whose every seedable initializer is drawn again from ``seed``."""
        config = _reseeded(model.get_config(), itertools.count(seed * 100_003))
        return type(model).from_config(config)


def _output_shape(layer) -> Optional[tuple]:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):  # no call recorded, or several
        return None


@contextlib.contextmanager
def _weights_set(variables: dict, values: dict):
    """``variables`` (path -> variable) hold ``values`` inside the block; their own after."""
    saved = {path: variables[path].numpy() for path in values}
    try:
        for path, value in values.items():
            variables[path].assign(value)
        yield
    finally:
        for path, value in saved.items():
            variables[path].assign(value)


def _reseeded(config, seeds):
    """``config`` with a new seed from ``seeds`` in every seedable ``*_initializer``."""
    if isinstance(config, list):
        return [_reseeded(item, seeds) for item in config]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if key.endswith("_initializer") and isinstance(value, dict) and \
                "seed" in value.get("config", {}):
            value = dict(value, config=dict(value["config"], seed=next(seeds)))
        out[key] = _reseeded(value, seeds)
    return out
