"""tf_lottery: lottery-ticket iterative magnitude pruning for Keras 3 and tf_keras models.

Importing it imports neither TF-MOT nor tf_keras (they load when a tf_keras model is
given) and leaves ``tf.keras`` as the environment makes it. The public names load on first
use (TensorFlow with them), so ``tf_lottery.cli`` can quiet TensorFlow's start-up log
before TensorFlow is imported.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# each public name -> the module that defines it, imported when the name is first used
_PUBLIC = {
    "ChannelGroup": "core.channels",
    "Masks": "core.masks",
    "RewindingSchedule": "core.schedule",
    "ImpSettings": "core.settings",
    "LotteryModel": "engines",
    "RoundCallback": "engines.callbacks",
    **dict.fromkeys(["ExportReport", "cost_estimate", "export_model", "export_saved_model",
                     "export_tflite"], "export"),
    **dict.fromkeys(["shrink", "shrink_summary"], "export.shrink"),
    **dict.fromkeys(["ConfigError", "DamagedFileError", "DataError", "DivergedError",
                     "ExportError", "RewindCheckpointError", "RunDirectoryError",
                     "SettingError", "TfLotteryError"], "foundations.errors"),
    "RoundSummary": "imp.controller",
    "RewindPoint": "imp.rewind",
    "prune_with_rewinding": "imp.wrap",
    "strip_pruning": "imp.wrap",
    "xnnpack_sparse_settings": "imp.xnnpack_sparse",
    "RoundRecord": "runs.results",
    "SearchResult": "runs.results",
    "custom_object_scope": "runs.serialization",
    "load_model": "runs.serialization",
    "TensorBoardRounds": "runs.tensorboard",
    "InstabilityResult": "search.instability",
    "instability": "search.instability",
    "LotteryTicketSearch": "search.ticket_search",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tf_lottery' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tf_lottery.{_PUBLIC[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_PUBLIC})
