"""Loading saved LotteryModels back, masks, schedule, round history and position included."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from tf_lottery.engines import engine_named
from tf_lottery.foundations.errors import SettingError


def custom_object_scope():
    """A tf_keras scope in which saved tf_keras LotteryModels (``.keras``, SavedModel) load.

    TF-MOT's own ``prune_scope()`` turns a custom schedule into a string; under this scope
    each wrapper gets its RewindingSchedule back, and a LotteryModel its rounds. (Keras 3
    LotteryModels need no scope: their classes are registered with Keras.)

    Example::

        pruned.save("pruned.keras")
        with tfl.custom_object_scope():
            restored = tf_keras.models.load_model("pruned.keras")
    """
    return engine_named("tf_keras").custom_object_scope()


def saved_by(path) -> str:
    """The engine that saved the model at ``path``: a ``.keras`` file names its Keras
    version; a SavedModel directory is tf_keras's."""
    path = Path(path)
    if path.is_dir():
        return "tf_keras"
    if not zipfile.is_zipfile(path):
        raise SettingError(f"{path} is not a saved Keras model (a .keras file or a "
                           "SavedModel directory)")
    with zipfile.ZipFile(path) as archive:
        metadata = json.loads(archive.read("metadata.json"))
    return "keras3" if str(metadata.get("keras_version", "")).startswith("3.") else "tf_keras"


def load_model(path, **kwargs):
    """Load a saved model with its Keras (tf_keras or Keras 3), LotteryModels included.

    Example::

        pruned.save("pruned.keras")
        restored = tfl.load_model("pruned.keras")
        restored.imp_step, restored.rounds, restored.masks
    """
    return engine_named(saved_by(path)).load_model(path, **kwargs)
