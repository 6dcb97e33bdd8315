"""Which engine trains which model: found from the class of a model (or optimizer, layer,
callback) without importing any Keras, each engine imported on first use.

``import tf_lottery`` imports neither TF-MOT nor tf_keras (the tf_keras engine loads when a
tf_keras model is given) and leaves ``tf.keras`` as the user's environment makes it.

Example::

    engine = engine_for(model)
    engine.name                      # "keras3"
    engine.model_weights(model)      # {"dense/kernel": <Variable>, ...}
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

from tf_lottery.foundations.errors import SettingTypeError

# engine name -> (its module, the Keras package whose models it trains)
ENGINES = {"tf_keras": ("tf_lottery.engines.tfmot", "tf_keras"),
           "keras3": ("tf_lottery.engines.keras3", "keras")}
KERAS_VERSIONS = {2: "tf_keras", 3: "keras3"}  # a config's ``keras: 2|3`` -> engine name


def keras_family(obj):
    """The name of the engine whose Keras ``obj`` (a model, layer, optimizer, callback, ...)
    belongs to, or None; found from its class's modules without importing any Keras."""
    for cls in type(obj).__mro__:
        root = cls.__module__.split(".")[0]
        for name, (_, package) in ENGINES.items():
            if root == package:
                return name
    return None


def engine_named(name: str):
    """The engine called ``name`` ("tf_keras" or "keras3"), imported on first use."""
    module, _ = ENGINES[name]
    return importlib.import_module(module).ENGINE


def engine_for(obj):
    """The engine of ``obj``'s Keras (a model, optimizer, ...); a TypeError naming what it
    got if no engine knows it."""
    name = keras_family(obj)
    if name is None:
        raise SettingTypeError(
            f"expected a Keras model (Keras 3 `keras.Model`, or a tf_keras model), got "
            f"{type(obj).__name__}")
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


def keras_environment() -> dict:
    """The environment variables another process (a Ray worker) needs to make this process's
    Keras choices: Keras 3's backend and whether ``tf.keras`` means tf_keras."""
    env = {key: os.environ[key] for key in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS")
           if key in os.environ}
    if "keras" in sys.modules:  # the backend this process runs, however it was chosen
        env["KERAS_BACKEND"] = sys.modules["keras"].backend.backend()
    return env
