"""The engines behind tf_lottery's one API, and how a model finds its own.

``engine_for(model)`` returns the tf_keras engine (TF-MOT wrappers) for a tf_keras model
and the Keras 3 engine for a Keras 3 model. Each engine module is imported only when a
model of its Keras is given: ``import tf_lottery`` imports neither TF-MOT nor tf_keras, and
leaves ``tf.keras`` as the user's environment makes it.

Example::

    engine = engine_for(model)
    engine.name                      # "keras3"
    engine.model_weights(model)      # {"dense/kernel": <Variable>, ...}
"""

from __future__ import annotations

import contextlib
import importlib
import sys

from tf_lottery.engines.base import Engine, PrunedWeight
from tf_lottery.errors import SettingTypeError

# engine name -> (module, the Keras package whose models it trains)
ENGINES = {"tf_keras": ("tf_lottery.engines.tfmot", "tf_keras"),
           "keras3": ("tf_lottery.engines.keras3", "keras")}
KERAS_VERSIONS = {2: "tf_keras", 3: "keras3"}  # the config's ``keras`` key


def keras_family(obj):
    """The name of the engine whose Keras ``obj`` (a model, layer, optimizer, callback, ...)
    belongs to, or None; found from its class's modules without importing any Keras."""
    for cls in type(obj).__mro__:
        root = cls.__module__.split(".")[0]
        for name, (_, package) in ENGINES.items():
            if root == package:
                return name
    return None


def engine_named(name: str) -> Engine:
    """The engine called ``name`` ("tf_keras" or "keras3"), imported on first use."""
    module, _ = ENGINES[name]
    return importlib.import_module(module).ENGINE


def engine_for(model) -> Engine:
    """The engine that trains ``model``; a TypeError naming what it got if none does."""
    name = keras_family(model)
    if name is None:
        raise SettingTypeError(
            f"expected a Keras model (Keras 3 `keras.Model`, or a tf_keras model), got "
            f"{type(model).__name__}")
    return engine_named(name)


@contextlib.contextmanager
def canonical_names():
    """Build models inside this to give their auto-named layers the names a fresh process
    gives (``dense``, ``dense_1``, ...), so a model built again in the same process (a
    resumed search) has the same weight paths. The caller's name counters come back after.
    """
    scopes = [engine_named(name).name_counters() for name, (_, package) in ENGINES.items()
              if package in sys.modules]
    with contextlib.ExitStack() as stack:
        for scope in scopes:
            stack.enter_context(scope)
        yield


__all__ = ["ENGINES", "Engine", "KERAS_VERSIONS", "PrunedWeight", "canonical_names",
           "engine_for", "engine_named", "keras_family"]
