"""tf_lottery: lottery-ticket iterative magnitude pruning for tf_keras models on TF-MOT."""

from tf_lottery.export import ExportError, ExportReport, export_saved_model, export_tflite
from tf_lottery.masks import Masks
from tf_lottery.rewind import RewindCheckpointError, RewindPoint
from tf_lottery.rounds import ImpSettings
from tf_lottery.results import RoundRecord, SearchResult
from tf_lottery.schedule import RewindingSchedule
from tf_lottery.search import LotteryTicketSearch
from tf_lottery.serialization import custom_object_scope, load_model
from tf_lottery.tensorboard import TensorBoardRounds
from tf_lottery.wrap import (
    LotteryModel,
    RoundCallback,
    RoundSummary,
    prune_with_rewinding,
    strip_pruning,
)

__version__ = "0.1.0"

__all__ = [
    "ExportError", "ExportReport", "ImpSettings", "LotteryModel", "LotteryTicketSearch",
    "Masks", "RewindCheckpointError", "RewindPoint", "RewindingSchedule", "RoundCallback",
    "RoundRecord", "RoundSummary", "SearchResult", "TensorBoardRounds", "custom_object_scope",
    "export_saved_model", "export_tflite", "load_model", "prune_with_rewinding",
    "strip_pruning",
]
