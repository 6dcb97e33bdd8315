"""Epoch backups: a training in progress saved at every epoch end, restored on resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tf_lottery.core.masks import Masks
from tf_lottery.engines import Callback
from tf_lottery.foundations.atomic import read_json, remove, replacing, write_json
from tf_lottery.foundations.integrity import verify, write_manifest
from tf_lottery.imp.rewind import RewindPoint
from tf_lottery.runs.rundir import BackupFiles
from tf_lottery.search.evaluation import RoundTracker, TrainingState


class EpochBackup(Callback):
    """One training, saved at every epoch end into ``folder``'s :class:`BackupFiles`
    (weights, optimizer state, training state, early_bird's last draw), so a killed run
    resumes from its last epoch, bit for bit. The last backup of a finished training stays
    until its round is committed: a run killed during a later training of the round
    restores it instead of training it again."""

    def __init__(self, folder, identity: dict, tracker: RoundTracker, optimizer_variables):
        super().__init__()
        self.folder, self.identity, self.tracker = Path(folder), identity, tracker
        self.optimizer_variables = optimizer_variables

    def on_epoch_end(self, epoch, logs=None):
        previous = BackupFiles.all(self.folder)
        target = BackupFiles.of_epoch(self.folder, epoch + 1)
        with replacing(target.folder, keep_existing=True) as stage:
            stage.mkdir()
            files = BackupFiles(stage)
            RewindPoint.capture(self.model, self.tracker.state.step).save(files.weights)
            np.savez(files.optimizer, *[v.numpy() for v in self.optimizer_variables])
            if self.tracker.drawn is not None:  # early_bird's last draw
                self.tracker.drawn.save(files.early_bird_draw)
            write_json(files.state, dict(self.identity, epoch=epoch + 1,
                                         state=self.tracker.state.to_config()))
            write_manifest(stage)
        for old in previous:
            remove(old.folder)

    def restore(self, model, masks) -> int:
        """Load the last backup of this very training, if any: the epoch to start at."""
        backups = BackupFiles.all(self.folder)
        if not backups:
            return 0
        last = backups[-1]
        verify(last.folder)
        saved = read_json(last.state)
        if any(saved.get(key) != value for key, value in self.identity.items()):
            self.discard()  # a backup of another training: that one was committed or redone
            return 0
        RewindPoint.load(last.weights, model).restore(model, masks)
        with np.load(last.optimizer) as values:
            for index, variable in enumerate(self.optimizer_variables):
                variable.assign(values[f"arr_{index}"])
        self.tracker.state = TrainingState(**saved["state"])
        if last.early_bird_draw.is_file():
            self.tracker.drawn = Masks.load(last.early_bird_draw)
        return saved["epoch"]

    def discard(self) -> None:
        remove(self.folder)
