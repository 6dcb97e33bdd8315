"""tf_lottery: lottery-ticket iterative magnitude pruning for Keras 3 and tf_keras models.

Importing it imports neither TF-MOT nor tf_keras (they load when a tf_keras model is
given) and leaves ``tf.keras`` as the environment makes it.
"""

from tf_lottery.core.masks import Masks
from tf_lottery.core.schedule import RewindingSchedule
from tf_lottery.core.settings import ImpSettings
from tf_lottery.engines import LotteryModel
from tf_lottery.engines.callbacks import RoundCallback
from tf_lottery.export import ExportReport, export_model, export_saved_model, export_tflite
from tf_lottery.foundations.errors import (
    ConfigError,
    DamagedFileError,
    DataError,
    DivergedError,
    ExportError,
    RewindCheckpointError,
    RunDirectoryError,
    SettingError,
    TfLotteryError,
)
from tf_lottery.imp.controller import RoundSummary
from tf_lottery.imp.rewind import RewindPoint
from tf_lottery.imp.wrap import prune_with_rewinding, strip_pruning
from tf_lottery.runs.results import RoundRecord, SearchResult
from tf_lottery.runs.serialization import custom_object_scope, load_model
from tf_lottery.runs.tensorboard import TensorBoardRounds
from tf_lottery.search.instability import InstabilityResult, instability
from tf_lottery.search.ticket_search import LotteryTicketSearch

__version__ = "0.2.0"

__all__ = [
    "ConfigError", "DamagedFileError", "DataError", "DivergedError", "ExportError",
    "ExportReport", "ImpSettings", "InstabilityResult", "LotteryModel", "LotteryTicketSearch",
    "Masks", "RewindCheckpointError", "RewindPoint", "RewindingSchedule", "RoundCallback",
    "RoundRecord", "RoundSummary", "RunDirectoryError", "SearchResult", "SettingError",
    "TensorBoardRounds", "TfLotteryError", "custom_object_scope", "export_model",
    "export_saved_model", "export_tflite", "instability", "load_model",
    "prune_with_rewinding", "strip_pruning",
]
