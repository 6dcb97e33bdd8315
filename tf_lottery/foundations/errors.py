"""The package's own errors: every one says what was wrong and how to fix it.

Each is a ``TfLotteryError`` and also the built-in error it has always been (a refused
value is a ValueError, a model of the wrong kind a TypeError, ...), so existing
``except ValueError`` clauses keep working. The ``tf-lottery`` command prints these as one
line; anything else is a bug and prints with its traceback.

Example::

    try:
        tfl.prune_with_rewinding(model, schedule, scope="network")
    except tfl.TfLotteryError as error:
        print(error)   # scope must be one of 'layer', 'global', got 'network'
"""

from __future__ import annotations

import re


class TfLotteryError(Exception):
    """Base class of the errors tf_lottery raises on purpose (bad input, damaged files, ...)."""


class SettingError(TfLotteryError, ValueError):
    """A setting or argument has a value tf_lottery refuses."""


class SettingTypeError(TfLotteryError, TypeError):
    """An argument is of a kind tf_lottery does not take (a model, a schedule, a list)."""


class ConfigError(SettingError):
    """A config file or override that cannot describe a search."""


class DataError(SettingError):
    """A dataset is missing, damaged, or not shaped as the search needs."""


class DamagedFileError(TfLotteryError, ValueError):
    """A file tf_lottery wrote does not match its checksum, is unreadable, or is missing."""


class RewindCheckpointError(DamagedFileError):
    """A rewind checkpoint is missing, damaged, or belongs to a different model."""


class RunDirectoryError(TfLotteryError, RuntimeError):
    """The run directory cannot be used as asked (another config, another process)."""


class AlreadyExistsError(TfLotteryError, FileExistsError):
    """tf_lottery never overwrites: a rewind point, an export or a round is already there."""


class NotARunDirectoryError(TfLotteryError, FileNotFoundError):
    """A path given as a run directory holds no search (or no completed round)."""


class ExportError(TfLotteryError, RuntimeError):
    """An export did not convert, load, run or agree with Keras; nothing was written."""


class DivergedError(TfLotteryError, FloatingPointError):
    """Training produced non-finite losses or weights; earlier rounds are kept."""


class UserCodeError(TfLotteryError, RuntimeError):
    """A function of the user's (a config's model or dataset) raised: the message names the
    function and its error; ``frames`` is the traceback of the user's own frames."""

    frames = ""


# Lines that frame an error's message but never say what went wrong: TensorFlow's graph
# errors (tracebacks, node names) and Keras's report of an error raised in a layer's call
# (its "Exception encountered when calling" header and the call's arguments, one per "•").
_FRAMING = ("File ", "[[", "Graph execution error", "Detected at node", "Traceback",
            "in user code:", "Exception encountered when calling", "Arguments received by",
            "Call arguments received by", "•")


def reason(error, limit: int = 300) -> str:
    """The line of ``error``'s message that says what went wrong (TensorFlow's graph errors
    bury it under tracebacks and node names, Keras's under the call's arguments and in
    terminal bold)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(getattr(error, "message", error)))
    lines = [line.strip() for line in text.splitlines()]
    useful = [line for line in lines if line and not re.sub(
        r"^\w+(Error|Exception): ", "", line).startswith(_FRAMING)]
    return (useful[-1] if useful else type(error).__name__)[:limit]
