"""The engines behind tf_lottery's one API: everything that depends on which Keras trains a
model. The layers above speak to an :class:`Engine` (``engine_for(model)``), never to a
Keras's private parts or to TF-MOT; the engines import only the contract, the core and the
foundations below them.

- ``base.py``: the Engine contract (read it to add a third engine);
- ``registry.py``: which engine trains which model;
- ``lottery_model.py``: the engine-neutral part of every prepared model;
- ``callbacks.py``: callbacks for either Keras's ``fit``; ``fused.py``: several compiled
  steps in one XLA program;
- ``channel_graph.py``: the channel groups of a model's graph (channel tickets);
  ``surgery.py``: a smaller model without the pruned channels;
- ``sparse_inference.py``: which layers XNNPACK's sparse inference (ARM) would run sparse;
- ``keras3.py`` (Keras 3, masks through constraints), ``tfmot.py`` (tf_keras, TF-MOT's
  wrappers: the one place that touches TF-MOT).
"""

from tf_lottery.engines.base import Engine, PrunedWeight, TrainingGuard
from tf_lottery.engines.callbacks import Callback, RoundCallback
from tf_lottery.engines.lottery_model import LotteryModel, RoundDriver
from tf_lottery.engines.registry import (
    ENGINES,
    KERAS_VERSIONS,
    canonical_names,
    engine_for,
    engine_named,
    keras_environment,
    keras_family,
)

__all__ = ["ENGINES", "KERAS_VERSIONS", "Callback", "Engine", "LotteryModel", "PrunedWeight",
           "RoundCallback", "RoundDriver", "TrainingGuard", "canonical_names", "engine_for",
           "engine_named", "keras_environment", "keras_family"]
