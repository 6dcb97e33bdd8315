"""Writing files and folders so that a crash leaves the old state or the new, never half;
JSON written that way and read back with damage named.

Example::

    with replacing(Path("run/results.csv")) as staged:
        staged.write_text(table)          # becomes run/results.csv when the block succeeds
    remove(Path("run/trial_0/in_progress"))  # whole until it is gone
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from tf_lottery.foundations.errors import AlreadyExistsError, DamagedFileError


@contextlib.contextmanager
def replacing(final: str | os.PathLike, *, keep_existing: bool = False):
    """Yield a path beside ``final`` to write a file or folder to; when the block succeeds it
    is renamed onto ``final``, otherwise deleted. ``keep_existing`` refuses to replace
    anything already at ``final``. The staging folder (``.<name>.*``) never stays behind,
    unless the process is killed: then the next run in the same place removes it."""
    final = Path(final)
    if keep_existing and final.exists():
        raise AlreadyExistsError(f"{final} already exists; it is never overwritten")
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        yield stage / final.name
        os.replace(stage / final.name, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def remove(path: str | os.PathLike) -> None:
    """Delete the folder ``path`` (if it exists) so that a crash leaves it whole or gone,
    never half-deleted: it is first renamed to a hidden ``.<name>.*`` beside it, which the
    next run in the same place removes if the process is killed before the deletion ends."""
    path = Path(path)
    if not path.exists():
        return
    hidden = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    os.replace(path, hidden / path.name)
    shutil.rmtree(hidden, ignore_errors=True)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a staged file and a rename."""
    with replacing(path) as staged:
        staged.write_text(text, encoding="utf-8")


def to_json(value) -> str:
    """JSON text of ``value``; NumPy scalars and arrays become plain numbers and lists."""
    return json.dumps(value, indent=2, sort_keys=True,
                      default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))


def write_json(path: str | os.PathLike, value) -> None:
    write_atomic(path, to_json(value) + "\n")


def read_json(path: str | os.PathLike):
    """The JSON in ``path``; an unreadable file is a DamagedFileError that names it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DamagedFileError(f"{path} is not valid JSON ({error}): it was truncated or "
                               "altered. Restore it from a backup.") from error
