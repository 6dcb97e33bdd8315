"""Settings declared once, as dataclass fields: keyword options split among the settings
classes that declare them, and function signatures derived from those fields.

Example::

    imp, search = split_options({"rewind_to": 5, "trials": 3}, ImpSettings, SearchSettings)
    function.__signature__ = keyword_signature(function, ImpSettings)
"""

from __future__ import annotations

import dataclasses
import inspect

from tf_lottery.foundations.checks import did_you_mean
from tf_lottery.foundations.errors import SettingTypeError


def keys(*classes) -> list[str]:
    """The option names the settings ``classes`` declare, in order."""
    return [field.name for cls in classes for field in dataclasses.fields(cls)]


def split_options(options: dict, *classes, what: str = "option") -> list:
    """One instance of each settings class, built from the ``options`` it declares (each
    value checked there); an unknown option is refused with the nearest known one."""
    known = keys(*classes)
    for key in options:
        if key not in known:
            raise SettingTypeError(f"unknown {what} {key!r}.{did_you_mean(key, known)} The "
                                   f"{what}s: {', '.join(known)}")
    return [cls(**{key: options[key] for key in keys(cls) if key in options})
            for cls in classes]


def keyword_signature(function, *classes) -> inspect.Signature:
    """``function``'s signature with its ``**options`` spelled out as the keyword-only
    parameters (and defaults) the settings ``classes`` declare: what ``help()`` shows."""
    signature = inspect.signature(function)
    fixed = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
    declared = [inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY,
                                  default=field.default if field.default is not dataclasses.MISSING
                                  else field.default_factory())
                for cls in classes for field in dataclasses.fields(cls)]
    return signature.replace(parameters=fixed + declared)
