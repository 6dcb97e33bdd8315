"""Checksums for the folders tf_lottery writes: damage is found and named, never used.

Every committed folder (a round of a search, a rewind checkpoint) carries ``SHA256SUMS``:
one line per file, ``<sha256>  <relative path>``, written into the folder before the rename
that commits it. ``verify`` recomputes them and names the first file that is missing,
truncated or altered.

Example::

    write_manifest(stage)          # before os.replace(stage, final)
    verify("runs/x/trial_0/round_03")
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tf_lottery.foundations.atomic import replacing
from tf_lottery.foundations.errors import DamagedFileError

MANIFEST = "SHA256SUMS"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path):
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: str | os.PathLike, names=None) -> None:
    """Record the SHA-256 of every file below ``directory`` (or of the files ``names``,
    relative to it) in ``directory/SHA256SUMS``, atomically."""
    directory = Path(directory)
    files = _files(directory) if names is None else [directory / name for name in names]
    lines = [f"{_sha256(p)}  {p.relative_to(directory).as_posix()}" for p in files]
    with replacing(directory / MANIFEST) as staged:
        staged.write_text("\n".join(lines) + "\n", encoding="utf-8")


def verify(directory: str | os.PathLike, complete: bool = True) -> None:
    """Raise DamagedFileError naming the first file of ``directory`` that fails its checksum.

    ``complete``: the manifest covers the whole folder, so an unlisted file is damage too
    (a committed round); else only the listed files are checked (a run directory's root).
    """
    directory = Path(directory)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise DamagedFileError(
            f"{manifest} is missing, so {directory} cannot be checked; it was not written by "
            "this version of tf_lottery or has been tampered with")
    expected = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        expected[name] = digest
    for name, digest in expected.items():
        path = directory / name
        if not path.is_file():
            raise DamagedFileError(f"{path} is missing (listed in {manifest})")
        if _sha256(path) != digest:
            raise DamagedFileError(
                f"{path} does not match its checksum in {manifest}: it was truncated or "
                "altered. Restore it from a backup; tf_lottery will not use or overwrite it.")
    if not complete:
        return
    extra = [p for p in _files(directory) if p.relative_to(directory).as_posix() not in expected]
    if extra:
        raise DamagedFileError(f"{extra[0]} is not listed in {manifest}: the folder was altered")
