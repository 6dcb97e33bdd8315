"""Saving and loading wrapped models with their RewindingSchedule as an object."""

from __future__ import annotations

from tf_lottery._compat import PruneLowMagnitude, keras
from tf_lottery.schedule import RewindingSchedule
from tf_lottery.wrap import LotteryModel


def custom_object_scope():
    """A scope in which saved tf_lottery models (``.keras`` and SavedModel) load back.

    TF-MOT's own ``prune_scope()`` turns a custom schedule into a string; under this scope
    each wrapper gets its RewindingSchedule back, and a LotteryModel its round position.

    Example::

        pruned.save("pruned.keras")
        with tfl.custom_object_scope():
            restored = tf_keras.models.load_model("pruned.keras")
    """
    return keras.utils.custom_object_scope({
        "PruneLowMagnitude": PruneLowMagnitude,
        "RewindingSchedule": RewindingSchedule,
        "LotteryModel": LotteryModel,
    })


def load_model(path, **kwargs):
    """``tf_keras.models.load_model`` under :func:`custom_object_scope`."""
    with custom_object_scope():
        return keras.models.load_model(path, **kwargs)
