"""Folders are written and removed whole: a crash leaves the old state or the new."""

import shutil

import pytest

from tf_lottery.foundations import atomic
from tf_lottery.runs.rundir import RunDirectory


def _folder(path):
    path.mkdir(parents=True)
    (path / "state.json").write_text("{}")
    (path / "weights").write_bytes(b"\x01" * 100)
    return path


def test_a_removal_cut_short_leaves_the_folder_whole_under_a_hidden_name(tmp_path,
                                                                        monkeypatch):
    backup = _folder(tmp_path / "epoch_0003")

    def killed(path, **kwargs):
        raise KeyboardInterrupt  # the process dies where the deletion would begin

    monkeypatch.setattr(atomic.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic.remove(backup)
    assert not backup.exists()
    [hidden] = tmp_path.glob(".epoch_0003.*")
    assert sorted(p.name for p in (hidden / "epoch_0003").iterdir()) == ["state.json",
                                                                        "weights"]
    monkeypatch.undo()
    atomic.remove(tmp_path / "never_there")  # nothing to remove is no error
    atomic.remove(_folder(tmp_path / "whole"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [hidden.name]


def test_the_next_run_removes_what_killed_writes_and_removals_left(tmp_path):
    run = RunDirectory(tmp_path / "run")
    trial = run.trial(0)
    kept = [_folder(trial / "round_00"), _folder(run.rewind_dir(0) / "step_0"),
            _folder(run.in_progress(0) / "round_01_ticket" / "epoch_0004")]
    leftovers = [_folder(trial / ".round_01.x1"), _folder(trial / ".in_progress.x2"),
                 _folder(run.rewind_dir(0) / ".step_0.x3"),
                 _folder(run.in_progress(0) / ".round_00_ticket.x4"),
                 _folder(run.in_progress(0) / ".epoch_0002.x5"),  # the layout up to 0.2.0
                 _folder(run.in_progress(0) / "round_01_ticket" / ".epoch_0003.x6")]
    run.remove_staging_leftovers(0)
    assert all(path.exists() for path in kept)
    assert not any(path.exists() for path in leftovers)
    shutil.rmtree(trial)
    run.remove_staging_leftovers(0)  # a trial not started yet: nothing to do
