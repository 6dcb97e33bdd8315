"""Argument checks shared by every entry point (the API, the search, the YAML config).

Each check returns the value in its plain Python form (NumPy scalars become ``int`` or
``float``) or raises a :class:`~tf_lottery.foundations.errors.SettingError` that names the
setting, what it takes, and what it got.

Example::

    rounds = whole_number(np.int64(3), "rounds")        # 3
    rate = fraction(0.2, "prune_rate")                    # 0.2
    one_of("globl", "scope", ("layer", "global"))  # SettingError: ... 'global'?
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable

from tf_lottery.foundations.errors import SettingError, SettingTypeError


def did_you_mean(name, known: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the known name closest to ``name``, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def whole_number(value, what: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; NumPy integers are whole numbers too."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise SettingError(f"{what} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def fraction(value, what: str) -> float:
    """``value`` as a float strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise SettingError(
            f"{what} must be a fraction strictly between 0 and 1 (0.2 prunes 20% of the "
            f"surviving weights per round), got {value!r}")
    return float(value)


def positive_number(value, what: str) -> float:
    """``value`` as a finite float > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < \
            float("inf"):
        raise SettingError(f"{what} must be a number > 0, got {value!r}")
    return float(value)


def one_of(value, what: str, choices: Iterable):
    """``value`` if it is one of ``choices``; else an error with the nearest choice."""
    choices = tuple(choices)
    if value not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise SettingError(f"{what} must be one of {shown}, got {value!r}."
                           f"{did_you_mean(value, [c for c in choices if isinstance(c, str)])}")
    return value


def names(value, what: str) -> tuple:
    """A list of names (layer names, controls) as a tuple of str; a bare string is refused,
    since it would be read letter by letter."""
    if isinstance(value, str):
        raise SettingTypeError(f"{what} must be a list of names, got the string {value!r}; "
                               f"write {what}=[{value!r}]")
    if value is None or not isinstance(value, Iterable) or isinstance(value, dict):
        raise SettingTypeError(f"{what} must be a list of names, got {value!r}")
    items = tuple(value)
    bad = [item for item in items if not isinstance(item, str)]
    if bad:
        raise SettingTypeError(f"{what} must hold names (strings), got {bad[0]!r}")
    return items


def rate_table(value, what: str) -> dict:
    """A mapping of layer name -> prune rate (each a fraction)."""
    if value is None or not hasattr(value, "items"):
        raise SettingTypeError(f"{what} must map layer names to prune rates, e.g. "
                               f"{{'output': 0.1}}; got {value!r}")
    return {str(name): fraction(rate, f"{what}[{name!r}]") for name, rate in value.items()}
