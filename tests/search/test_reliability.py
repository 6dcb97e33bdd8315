"""Runs survive SIGKILL and refuse damaged files; the same seed gives the same masks."""

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tf_lottery as tfl
from tf_lottery.cli.commands import main
from tf_lottery.foundations.integrity import DamagedFileError
from tf_lottery.runs.rundir import RunDirectory

CONFIG = """\
run_dir: {run_dir}
model: lenet_300_100
dataset: mnist
validation_size: 100
train_size: 600
test_size: 100
rounds: 3
steps_per_round: 20
prune_rate: 0.5
layer_rates: {{output: 0.2}}
controls: [random_pruning]
eval_every: 10
seed: 7
verbose: 0
jit_compile: false   # XLA has tests of its own; here it would only cost compile time
"""


def _config(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(CONFIG.format(run_dir=tmp_path / name))
    return path


def _masks(run_dir, round_index):
    return tfl.Masks.load(Path(run_dir) / "trial_0" / f"round_{round_index:02d}" / "ticket" /
                          "masks.npz")


def _command(config, *overrides):
    return [str(Path(sys.executable).parent / "tf-lottery"), "run", str(config), *overrides]


def test_sigkill_at_random_moments_loses_no_round_and_ends_with_the_same_masks(tmp_path):
    began = time.monotonic()
    subprocess.run(_command(_config(tmp_path, "straight")), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    duration = time.monotonic() - began
    config = _config(tmp_path, "killed")
    rng = random.Random(20261125)
    committed, kills = [], 0
    for _ in range(3):  # SIGKILL at a random moment of the (remaining) run, three times
        process = subprocess.Popen(_command(config), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout=rng.uniform(0.25, 0.75) * duration)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        run = RunDirectory(tmp_path / "killed")
        if run.trials():
            run.verify()  # every committed round and checkpoint is intact
            committed.append(run.completed_rounds(0))
        assert committed == sorted(committed)  # no committed round was ever lost
    assert kills >= 1, "no kill landed before the run finished"
    # what a kill while round artifacts are being written leaves behind: a staging folder
    stage = tmp_path / "killed" / "trial_0" / f".round_{(committed or [0])[-1]:02d}.partial"
    stage.mkdir(parents=True)
    (stage / "metrics.json").write_text('{"records": [')
    subprocess.run(_command(config), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=300)
    for round_index in range(4):
        a, b = _masks(tmp_path / "straight", round_index), _masks(tmp_path / "killed",
                                                                   round_index)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    leftovers = [p for p in (tmp_path / "killed").rglob(".*") if p.is_dir()]
    assert leftovers == []  # the resumed run removed what the killed ones left half-written


def _kill_when(command, path: Path) -> str:
    """Run ``command``, SIGKILL it as soon as ``path`` exists; what it printed (with its
    errors, to show in a failed assertion)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    deadline = time.monotonic() + 240
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    return process.communicate()[0]


def test_a_killed_round_resumes_its_training_and_keeps_the_finished_ones(tmp_path):
    longer = ("rounds=1", "steps_per_round=120", "verbose=2")  # 12 epochs a training
    straight = subprocess.run(_command(_config(tmp_path, "straight"), *longer),
                              capture_output=True, text=True, timeout=300, check=True)
    assert "resuming" not in straight.stdout and "restored" not in straight.stdout
    command = _command(_config(tmp_path, "killed"), *longer)
    backups = tmp_path / "killed" / "trial_0" / "in_progress"
    _kill_when(command, backups / "round_00_ticket" / "epoch_0005")  # mid-training
    assert RunDirectory(tmp_path / "killed").completed_rounds(0) == 0
    for epoch in (backups / "round_00_ticket").glob("epoch_*"):  # the layout up to 0.2.0:
        epoch.rename(backups / epoch.name)  # in_progress/epoch_N, adopted on resume
    # ... where a kill during a removal left an older backup half-deleted
    shutil.copytree(max(backups.glob("epoch_*")), backups / "epoch_0000")
    (backups / "epoch_0000" / "state.json").unlink()
    # resumed, then killed in round 1's control, after round 1's ticket finished
    resumed = _kill_when(command, backups / "round_01_random_pruning" / "epoch_0005")
    assert "trial 0, round 0 (ticket): resuming at epoch" in resumed
    assert int(resumed.split("resuming at epoch ")[1].split(",")[0]) >= 5
    assert RunDirectory(tmp_path / "killed").completed_rounds(0) == 1
    last = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    assert "trial 0, round 1 (ticket): finished before the interruption, restored" in last.stdout
    assert "trial 0, round 1 (random_pruning): resuming at epoch" in last.stdout
    for round_index in (0, 1):
        a, b = _masks(tmp_path / "straight", round_index), _masks(tmp_path / "killed",
                                                                   round_index)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    records = [tfl.SearchResult.load(tmp_path / name).records for name in ("straight", "killed")]
    assert [(r.variant, r.test_accuracy, r.val_loss, r.early_stop_iteration)
            for r in records[0]] == [(r.variant, r.test_accuracy, r.val_loss,
                                      r.early_stop_iteration) for r in records[1]]
    assert all(r.wall_time > 0 for r in records[1])  # the restored ticket keeps its time
    assert not backups.exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("done")
    assert main(["run", str(_config(tmp_path, "run"))]) == 0
    return tmp_path


@pytest.mark.parametrize("relative", [
    "config.json",
    "model.json",
    "run_config.yaml",
    "trial_0/round_01/ticket/masks.npz",
    "trial_0/round_02/metrics.json",
    "trial_0/round_01/ticket/weights/weights.data-00000-of-00001",
    "trial_0/rewind/step_0/weights.index",
    "trial_0/round_00/next_masks.npz",
])
@pytest.mark.parametrize("damage", ["truncate", "alter"])
def test_damaged_files_are_named_and_left_alone(finished, tmp_path, relative, damage, capsys):
    import shutil
    run_dir = tmp_path / "copy"
    shutil.copytree(finished / "run", run_dir)
    target = run_dir / relative
    raw = target.read_bytes()
    damaged = raw[:len(raw) // 2] if damage == "truncate" else \
        raw[:-1] + bytes([raw[-1] ^ 0x01])
    target.write_bytes(damaged)
    with pytest.raises(DamagedFileError, match=str(target)):
        tfl.SearchResult.load(run_dir)
    config = _config(tmp_path, "copy")  # the same search, pointed at the damaged copy
    assert main(["run", str(config)]) == 2
    assert str(target) in capsys.readouterr().err
    assert target.read_bytes() == damaged  # nothing was overwritten or "repaired"


def test_an_altered_architecture_is_refused_by_export_resume_and_report(finished, tmp_path,
                                                                          capsys):
    import shutil
    run_dir = tmp_path / "copy"
    shutil.copytree(finished / "run", run_dir)
    model_json = run_dir / "model.json"
    model_json.write_text(model_json.read_text().replace('"relu"', '"sigmoid"'))
    for argv in (["export", str(run_dir), "--output", str(tmp_path / "t.tflite")],
                 ["report", str(run_dir)], ["run", str(_config(tmp_path, "copy"))]):
        assert main(argv) == 2
        assert f"{model_json} does not match its checksum" in capsys.readouterr().err
    assert not (tmp_path / "t.tflite").exists()
    (run_dir / "config.json").write_text('{"truncated": ')  # and a truncated config
    assert main(["report", str(run_dir)]) == 2
    assert f"{run_dir / 'config.json'} does not match its checksum" in capsys.readouterr().err


def test_the_same_seed_gives_the_same_masks_run_to_run(finished, tmp_path):
    assert main(["run", str(_config(tmp_path, "again"))]) == 0
    for round_index in range(4):
        a, b = _masks(finished / "run", round_index), _masks(tmp_path / "again", round_index)
        assert all(np.array_equal(a[k], b[k]) for k in a)
