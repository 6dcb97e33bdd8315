"""Trials as units of work: processes running different trials of one search into one run
directory at once, or into separate ones, and the report that merges them (run directories
or the results folders reports wrote)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tf_lottery as tfl
from tf_lottery.cli.commands import main
from tf_lottery.runs.rundir import RunDirectory

CONFIG = """\
run_dir: {run_dir}
keras: 3
validation_size: 100
train_size: 300
test_size: 100
rounds: 1
steps_per_round: 10
prune_rate: 0.5
controls: [random_pruning]
eval_every: 5
trials: 3
verbose: 0
jit_compile: false
"""


def _config(folder, run_dir, name="c.yaml"):
    path = folder / name
    path.write_text(CONFIG.format(run_dir=run_dir))
    return path


def _tf_lottery(*args):
    return subprocess.Popen([str(Path(sys.executable).parent / "tf-lottery"), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_run_two_trials_into_one_directory_and_the_report_merges(tmp_path,
                                                                                capsys):
    config = _config(tmp_path, tmp_path / "run")
    workers = [_tf_lottery("run", config, "--trial", trial) for trial in (0, 1)]
    for worker in workers:
        _, err = worker.communicate(timeout=400)
        assert worker.returncode == 0, err[-2000:]
    run = RunDirectory(tmp_path / "run")
    assert run.trials() == [0, 1] and [run.completed_rounds(t) for t in (0, 1)] == [2, 2]
    result = tfl.SearchResult.load(tmp_path / "run")
    assert sorted({r.trial for r in result.records}) == [0, 1]
    assert [row["trials"] for row in result.summary()] == [2, 2, 2]
    # trials differ (their own θ0), and each is what a run of all trials would give
    first = {r.variant: r.test_accuracy for r in result.records if r.round == 1 and r.trial == 0}
    second = {r.variant: r.test_accuracy for r in result.records if r.round == 1 and r.trial == 1}
    assert first != second

    # trial 2 in another directory (another machine); a merged report of both
    other = _config(tmp_path, tmp_path / "other", "other.yaml")
    assert main(["run", str(other), "--trial", "2"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "run"), str(tmp_path / "other"), "--output",
                 str(tmp_path / "merged")]) == 0
    out = capsys.readouterr().out
    assert "min - max of trials" in out
    merged = tfl.SearchResult.merged([tmp_path / "run", tmp_path / "other"])[0]
    assert sorted({r.trial for r in merged.records}) == [0, 1, 2]
    assert all(row["trials"] == 3 for row in merged.summary())
    assert (tmp_path / "merged" / "results.csv").is_file()
    assert (tmp_path / "merged" / "plot.png").stat().st_size > 10_000

    # trials 0 and 1 as their small results only (their run directory gone, weights and all)
    assert main(["report", str(tmp_path / "run"), "--output", str(tmp_path / "first")]) == 0
    shutil.rmtree(tmp_path / "run")
    capsys.readouterr()
    assert main(["report", str(tmp_path / "first"), str(tmp_path / "other"), "--output",
                 str(tmp_path / "again")]) == 0
    assert "trials 0, 1: no learning curves" in capsys.readouterr().out
    again = tfl.SearchResult.merged([tmp_path / "first", tmp_path / "other"])[0]
    assert again.records == merged.records and again.summary() == merged.summary()
    assert again.config == merged.config == RunDirectory(tmp_path / "other").config()
    assert {trial for trial, _, _ in again.curves} == {2}  # curves.png: trial 2's
    assert tfl.SearchResult.load(tmp_path / "again").records == merged.records
    with pytest.raises(tfl.RunDirectoryError, match="trial 2 is complete in both"):
        tfl.SearchResult.merged([tmp_path / "again", tmp_path / "other"])
    tfl.SearchResult([r for r in merged.records if r.trial == 0], config=merged.config).save(
        tmp_path / "trial_0")
    _, notes = tfl.SearchResult.merged([tmp_path / "trial_0", tmp_path / "other"])
    assert notes == ["trial 0: no learning curves in its results folder; curves.png shows "
                     "the other trials"]
    saved = json.loads((tmp_path / "first" / "results.json").read_text())
    del saved["config"]  # as reports wrote it before they recorded the config
    (tmp_path / "first" / "results.json").write_text(json.dumps(saved))
    with pytest.raises(tfl.RunDirectoryError, match="does not record the config"):
        tfl.SearchResult.merged([tmp_path / "first", tmp_path / "other"])


def test_merging_refuses_another_config_and_the_same_trial_twice(tmp_path, capsys):
    a = _config(tmp_path, tmp_path / "a", "a.yaml")
    assert main(["run", str(a), "--trial", "0"]) == 0
    b = _config(tmp_path, tmp_path / "b", "b.yaml")
    assert main(["run", str(b), "prune_rate=0.4", "--trial", "0"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--output",
                 str(tmp_path / "m")]) == 2
    assert "holds another search" in capsys.readouterr().err
    c = _config(tmp_path, tmp_path / "c", "c.yaml")
    assert main(["run", str(c), "--trial", "0"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "c"), "--output",
                 str(tmp_path / "m")]) == 2
    assert "trial 0 is complete in both" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    with pytest.raises(tfl.SettingError, match="trial 5 does not exist"):
        main(["--traceback", "run", str(a), "--trial", "5"])
