"""Loading saved LotteryModels back, masks, schedule, round history and position included."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import h5py

from tf_lottery.engines import engine_named
from tf_lottery.foundations.errors import SettingError

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first bytes of an HDF5 file (.h5)


def custom_object_scope():
    """A tf_keras scope in which saved tf_keras LotteryModels (``.keras``, ``.h5``,
    SavedModel) load.

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
    """The engine that saved the model at ``path``: a ``.keras`` or ``.h5`` file names its
    Keras version; a SavedModel directory is tf_keras's."""
    path = Path(path)
    if path.is_dir():
        return "tf_keras"
    if path.is_file() and _first_bytes(path) == _HDF5_SIGNATURE:
        with h5py.File(path, "r") as file:
            version = file.attrs.get("keras_version", b"")
        version = version.decode() if isinstance(version, bytes) else str(version)
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            version = str(json.loads(archive.read("metadata.json")).get("keras_version", ""))
    else:
        raise SettingError(f"{path} is not a saved Keras model (a .keras or .h5 file, or a "
                           "SavedModel directory)")
    return "keras3" if version.startswith("3.") else "tf_keras"


def _first_bytes(path: Path) -> bytes:
    with open(path, "rb") as file:
        return file.read(len(_HDF5_SIGNATURE))


def load_model(path, **kwargs):
    """Load a saved model with its Keras (tf_keras or Keras 3), LotteryModels included.

    Example::

        pruned.save("pruned.keras")
        restored = tfl.load_model("pruned.keras")
        restored.imp_step, restored.rounds, restored.masks
    """
    return engine_named(saved_by(path)).load_model(path, **kwargs)
