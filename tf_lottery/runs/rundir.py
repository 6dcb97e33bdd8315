"""The run directory of a search: its config, a lock, and rounds committed atomically.

Layout::

    RUN_DIR/
      config.json                   what the search was started with (compared on resume)
      model.json                    the architecture, to rebuild the model for export
      run_config.yaml               the YAML config of a ``tf-lottery run`` (for export)
      SHA256SUMS                    checksums of the files above, checked before use
      lock                          held (flock) while a process records or checks the config
      trial_0/lock                  held by the process running trial 0 (one per trial)
      trial_0/rewind/step_0/        θ0 of trial 0 (and step_k/ for late rewinding)
      trial_0/in_progress/round_RR_<variant>/epoch_N/
                                    a training of the round under way, saved at every
                                    epoch end (kept when it finished, until the round is
                                    committed)
      trial_0/round_00/             one committed round: metrics.json, per variant its
                                    masks.npz (and the ticket's weights/), next_masks.npz,
                                    SHA256SUMS (checked before anything is read back)
      results.csv results.json plot.png

A round is written into a hidden staging folder and renamed into place when complete, so
a crash leaves either the whole round or none of it. Resuming checks every committed
folder's checksums, then continues after the last committed round of each trial. Every
name in this layout is spelled here: :class:`RunDirectory`, :class:`RoundFiles` (a round's
files) and :class:`BackupFiles` (one epoch backup of a training).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from pathlib import Path

from tf_lottery.foundations.atomic import (
    read_json,
    remove,
    replacing,
    to_json,
    write_atomic,
    write_json,
)
from tf_lottery.engines import engine_named
from tf_lottery.foundations.errors import DamagedFileError, NotARunDirectoryError, RunDirectoryError
from tf_lottery.foundations.integrity import verify, write_manifest
from tf_lottery.core.masks import Masks
from tf_lottery.imp.rewind import RewindPoint


def config_differences(old, new, path: str = "") -> list[str]:
    """Human-readable ``path: old in the run directory, new now`` lines for two JSON-like
    values, one per differing leaf: a changed layer shows as its path in the model
    (``model.config.layers.1.config.units: 300 ... 100 now``). Lists of other lengths show
    their first differing item and both lengths."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(set(old) | set(new), key=str)
                for line in config_differences(old.get(key, "<absent>"),
                                               new.get(key, "<absent>"), f"{path}{key}.")]
    if isinstance(old, list) and isinstance(new, list):
        pairs = [config_differences(a, b, f"{path}{i}.")
                 for i, (a, b) in enumerate(zip(old, new))]
        if len(old) == len(new):
            return [line for lines in pairs for line in lines]
        first = next((lines for lines in pairs if lines), [])
        return first + [f"{path.rstrip('.')}: {len(old)} items in the run directory, "
                        f"{len(new)} now"]
    if old != new:
        shown = _where_they_part(json.dumps(old), json.dumps(new))
        return [f"{path.rstrip('.')}: {shown[0]} in the run directory, {shown[1]} now"]
    return []


def planned_rounds(config: dict) -> int:
    """How many rounds each trial of the search ``config`` (its config.json) runs: round 0,
    the dense network, and the pruned ones."""
    return config["schedule"]["rounds"] + 1


def rounds_committed(done: int, planned: int) -> str:
    """How far a trial is: 'rounds 0-K of R committed' (R rounds planned, 0 to R-1)."""
    rounds = "no round" if done == 0 else "round 0" if done == 1 else f"rounds 0-{done - 1}"
    return f"{rounds} of {planned} committed"


def _where_they_part(old: str, new: str, width: int = 80) -> tuple[str, str]:
    """``old`` and ``new`` cut to ``width`` characters around where they first differ."""
    if len(old) <= width and len(new) <= width:
        return old, new
    start = max(0, next((i for i, (a, b) in enumerate(zip(old, new)) if a != b),
                        min(len(old), len(new))) - 20)
    return tuple(("..." if start else "") + text[start:start + width] +
                 ("..." if len(text) > start + width else "") for text in (old, new))


class RoundFiles:
    """The files of one round of one trial, in its committed folder or in the staging
    folder it is written into: per variant its masks (the ticket's trained weights too),
    the next round's masks and the round's metrics and curves."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def masks(self, variant: str) -> Path:
        return self.folder / variant / "masks.npz"

    def ticket_weights(self) -> Path:
        return self.folder / "ticket" / "weights"

    def next_masks(self) -> Path:
        return self.folder / "next_masks.npz"

    def metrics(self) -> Path:
        return self.folder / "metrics.json"


class BackupFiles:
    """One epoch backup of a training in progress: the weights, the optimizer's state and
    the training's state, early_bird's last draw (``epoch_NNNN/``)."""

    PREFIX = "epoch_"

    def __init__(self, folder):
        self.folder = Path(folder)

    @classmethod
    def of_epoch(cls, training_folder, epoch: int) -> BackupFiles:
        return cls(Path(training_folder) / f"{cls.PREFIX}{epoch:04d}")

    @classmethod
    def all(cls, training_folder) -> list:
        """The backups in a training's folder, oldest first."""
        return [cls(p) for p in sorted(Path(training_folder).glob(f"{cls.PREFIX}*"))]

    @property
    def weights(self) -> Path:
        return self.folder / "weights"

    @property
    def optimizer(self) -> Path:
        return self.folder / "optimizer.npz"

    @property
    def early_bird_draw(self) -> Path:
        return self.folder / "early_bird_draw.npz"

    @property
    def state(self) -> Path:
        return self.folder / "state.json"


class RunDirectory:
    """One search's folder on disk. ``with run_dir.locked(): ...`` while running."""

    _ROUND = re.compile(r"^round_(\d+)$")

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    CONFIG_LOCK_WAIT = 60.0  # seconds a process waits for another to record or check config

    @contextlib.contextmanager
    def locked(self, trial: int | None = None):
        """Hold one trial's lock, or the directory's (``trial`` None). A second process on the
        same trial is refused at once; the directory's lock is held only while a process
        records or checks the config, so another waits for it (up to CONFIG_LOCK_WAIT
        seconds). Processes may run different trials at once, each holding its trial's lock.
        The kernel releases a lock when its holder dies, so a killed run never blocks the
        next."""
        folder = self.path if trial is None else self.trial(trial)
        folder.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + (self.CONFIG_LOCK_WAIT if trial is None else 0)
        with open(folder / "lock", "a+", encoding="utf-8") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() < deadline:
                        time.sleep(0.1)
                        continue
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                what = self.path if trial is None else f"trial {trial} of {self.path}"
                raise RunDirectoryError(
                    f"{what} is in use by another run (pid {holder}); wait for it to finish, "
                    "run another trial (--trial K), or use another run directory") from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            try:
                yield self
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    CONFIG = "config.json"
    MODEL = "model.json"

    def adopt(self, config: dict, files: dict, resolved: tuple = ()) -> None:
        """Record ``config`` and ``files`` (name -> text) in a new directory, with their
        checksums; or, in one holding a search, check that its files are intact and its
        config equals ``config``. The ``resolved`` keys hold values the search worked out
        (a ``steps_per_execution`` of "auto"): their differences are listed only when
        nothing the user set differs."""
        if (self.path / self.CONFIG).is_file():
            verify(self.path, complete=False)
            differences = config_differences(self.config(), json.loads(to_json(config)))
            set_by_user = [line for line in differences
                           if line.partition(":")[0].partition(".")[0] not in resolved]
            differences = set_by_user or differences
            if differences:
                raise RunDirectoryError(
                    f"{self.path} holds a search with another config; resuming it with this "
                    "one would mix two experiments. Use a new run directory, or the recorded "
                    "settings. Differences:\n  " + "\n  ".join(differences))
            return
        for name, text in files.items():
            write_atomic(self.path / name, text)
        write_json(self.path / self.CONFIG, config)
        write_manifest(self.path, names=[self.CONFIG, *files])

    def config(self) -> dict:
        return read_json(self.path / self.CONFIG)

    def trial(self, trial: int) -> Path:
        return self.path / f"trial_{trial}"

    def rewind_dir(self, trial: int) -> Path:
        return self.trial(trial) / "rewind"

    def in_progress(self, trial: int) -> Path:
        """The epoch backups of the trainings of ``trial``'s uncommitted round."""
        return self.trial(trial) / "in_progress"

    def discard_backups(self, trial: int) -> None:
        """Remove the epoch backups of ``trial``: its last round is committed."""
        remove(self.in_progress(trial))

    def training_backups(self, trial: int, round_index: int, variant: str) -> Path:
        """The folder of one training's epoch backups (:class:`BackupFiles`)."""
        return self.in_progress(trial) / f"round_{round_index:02d}_{variant}"

    def discard_committed_backups(self, trial: int, committed: int) -> None:
        """Remove the epoch backups of ``trial``'s rounds before ``committed`` (those rounds
        are committed); backups of the layout before one folder per training
        (``in_progress/epoch_NNNN``) move to theirs."""
        for backup in BackupFiles.all(self.in_progress(trial)):
            # no state where that layout's removal was killed
            saved = read_json(backup.state) if backup.state.exists() else {}
            if saved.get("round", -1) >= committed:
                folder = self.training_backups(trial, saved["round"], saved["variant"])
                folder.mkdir(parents=True, exist_ok=True)
                backup.folder.rename(folder / backup.folder.name)
            else:
                remove(backup.folder)
        for folder in self.in_progress(trial).glob("round_*"):
            match = re.match(r"round_(\d+)_", folder.name)
            if not match or int(match.group(1)) < committed:
                remove(folder)

    def instability_dir(self) -> Path:
        """Where an instability analysis of the search writes (its JSON, plot and logs)."""
        return self.path / "instability"

    def round(self, trial: int, round_index: int) -> Path:
        return self.trial(trial) / f"round_{round_index:02d}"

    def round_files(self, trial: int, round_index: int) -> RoundFiles:
        return RoundFiles(self.round(trial, round_index))

    def completed_rounds(self, trial: int) -> int:
        """How many rounds of ``trial`` are committed (rounds 0 .. n-1)."""
        done = {int(m.group(1)) for p in self.trial(trial).glob("round_*")
                if (m := self._ROUND.match(p.name)) and p.is_dir()}
        count = 0
        while count in done:
            count += 1
        return count

    def remove_staging_leftovers(self, trial: int) -> None:
        """Delete the half-written or half-deleted folders a killed run of ``trial`` left
        (hidden ``.<name>.*`` ones, see ``atomic``; only under the trial's lock)."""
        in_progress = self.in_progress(trial)
        for folder in (self.trial(trial), self.rewind_dir(trial), in_progress,
                       *in_progress.glob("round_*")):
            for leftover in folder.glob(".*"):
                shutil.rmtree(leftover, ignore_errors=True)

    def verify(self, trials=None) -> None:
        """Check the config files, and every committed round and rewind checkpoint of
        ``trials`` (default all) against their checksums."""
        verify(self.path, complete=False)
        for trial in self.trials() if trials is None else trials:
            for round_index in range(self.completed_rounds(trial)):
                verify(self.round(trial, round_index))
            for rewind_point in sorted(self.rewind_dir(trial).glob("step_*")):
                verify(rewind_point)

    def ticket(self, trial: int = 0, round_index: int | None = None, build=None):
        """The plain Keras model of a committed round's ticket: its architecture from
        model.json (or, for a model without a config, which model.json cannot rebuild, from
        ``build()``), its trained weights, pruned weights exactly 0. Returns (model, round).
        ``round_index`` None: the last round, of a trial that has committed them all (of
        one in progress or stopped, the round must be named)."""
        if not (self.path / self.CONFIG).is_file():
            raise NotARunDirectoryError(f"{self.path} is not a tf_lottery run directory (it "
                                        f"has no {self.CONFIG})")
        verify(self.path, complete=False)
        done, planned = self.completed_rounds(trial), planned_rounds(self.config())
        if done == 0:
            raise RunDirectoryError(f"{self.trial(trial)} has no completed round to export")
        if round_index is None and done < planned:
            raise RunDirectoryError(
                f"trial {trial} of {self.path} is in progress: "
                f"{rounds_committed(done, planned)}, and the last round is the one to export. "
                f"Name a committed round instead (--round {done - 1}; round 0 is the dense "
                "network), or let the run finish")
        round_index = done - 1 if round_index is None else round_index
        if not 0 <= round_index < done:
            raise RunDirectoryError(f"round {round_index} is not completed in "
                                    f"{self.trial(trial)}; completed: 0 to {done - 1}")
        folder = self.round(trial, round_index)
        verify(folder)
        engine = engine_named(self.config().get("engine", "tf_keras"))
        architecture = (self.path / self.MODEL).read_text(encoding="utf-8")
        rebuildable = json.loads(architecture).get("config", {}) is not None
        model = engine.from_json(architecture) if rebuildable or build is None else build()
        files = RoundFiles(folder)
        RewindPoint.load(files.ticket_weights(), model).restore(
            model, Masks.load(files.masks("ticket")))
        return model, round_index

    def trials(self) -> list[int]:
        return sorted(int(p.name.split("_")[1]) for p in self.path.glob("trial_*") if p.is_dir())

    @contextlib.contextmanager
    def staging(self, trial: int, round_index: int):
        """The files of round ``round_index`` in a staging folder, committed by rename on
        success."""
        with replacing(self.round(trial, round_index), keep_existing=True) as stage:
            stage.mkdir()
            yield RoundFiles(stage)
            write_manifest(stage)
