"""What a hostile user and a fault injector found: failures of the operating system, Ctrl-C,
exports labelled with what they hold, accuracy only where it means something."""

import errno
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tf_keras as keras
from ai_edge_litert.interpreter import Interpreter

import tf_lottery as tfl
from tf_lottery.cli.commands import main
from tf_lottery.cli.config import RunConfig
from tf_lottery.export import report_path
from tf_lottery.foundations import atomic
from tf_lottery.foundations.interrupts import interruptible, raise_if_interrupted
from tf_lottery.runs.rundir import RunDirectory

from helpers import small_mlp

CONFIG = """\
run_dir: {run_dir}
validation_size: 100
train_size: 300
test_size: 100
rounds: 1
steps_per_round: 5
prune_rate: 0.5
controls: [random_pruning]
eval_every: 5
verbose: 0
jit_compile: false
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finished")
    config = folder / "tiny.yaml"
    config.write_text(CONFIG.format(run_dir=folder / "run"))
    assert main(["run", str(config)]) == 0
    return config, folder / "run"


def _refusing_replace(error_number):
    def replace(source, target):
        raise OSError(error_number, os.strerror(error_number), str(target))
    return replace


@pytest.mark.parametrize("error_number", [errno.EROFS, errno.ENOSPC],
                         ids=["read-only", "disk-full"])
def test_a_filesystem_that_refuses_writes_gets_one_line_and_loses_nothing(
        finished, tmp_path, monkeypatch, capsys, error_number):
    config, _ = finished
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text(CONFIG.format(run_dir=tmp_path / "run"))
    monkeypatch.setattr(atomic.os, "replace", _refusing_replace(error_number))
    assert main(["run", str(fresh)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and os.strerror(error_number) in err
    assert "No round was committed yet; run the same command again to resume" in err
    assert main(["run", str(config)]) == 1  # a finished run: only its results are rewritten
    err = capsys.readouterr().err.strip()
    assert "Committed rounds are safe; run the same command again to resume" in err
    monkeypatch.undo()
    assert main(["run", str(fresh)]) == 0  # the same command, once the disk is back


def test_report_works_on_a_read_only_run(finished, monkeypatch, capsys):
    _, run_dir = finished
    before = (run_dir / "results.csv").read_bytes()
    monkeypatch.setattr(atomic.os, "replace", _refusing_replace(errno.EROFS))
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["round", "variant", "weights"]
    assert "results not written (Read-only file system)" in out
    assert (run_dir / "results.csv").read_bytes() == before


def test_a_lock_that_is_a_directory_is_named(finished, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(run_dir=tmp_path / "run"))
    (tmp_path / "run" / "lock").mkdir(parents=True)
    assert main(["run", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'run' / 'lock'}: Is a directory" in err and "Traceback" not in err


def test_a_ctrl_c_swallowed_in_a_gc_callback_is_raised_at_the_next_check():
    def interrupt_during_collection(phase, info):
        if phase == "start":
            os.kill(os.getpid(), signal.SIGINT)  # its KeyboardInterrupt is "ignored" here

    gc.callbacks.append(interrupt_during_collection)
    try:
        with interruptible():
            gc.collect()  # training would go on: nothing was raised
            with pytest.raises(KeyboardInterrupt):
                raise_if_interrupted()
    finally:
        gc.callbacks.remove(interrupt_during_collection)
    raise_if_interrupted()  # outside the block, nothing is remembered


def test_ctrl_c_exits_130_and_says_the_same_command_resumes(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(run_dir=tmp_path / "run").replace("steps_per_round: 5",
                                                                      "steps_per_round: 400"))
    process = subprocess.Popen([str(Path(sys.executable).parent / "tf-lottery"), "run",
                                str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "trial_0" / "rewind" / "step_0").exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # once: a Ctrl-C Python swallows is still honoured
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == (  # stopped in round 0: nothing committed yet
        "tf-lottery run: interrupted. No round was committed yet; run the same command again "
        "to resume from the last saved epoch, if any.")


def test_a_bug_prints_its_traceback(monkeypatch, tmp_path, capsys):
    import tf_lottery.cli.commands as cli
    monkeypatch.setattr(cli.SearchResult, "load", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["report", str(tmp_path)])


def test_exports_are_labelled_with_what_the_file_holds(tmp_path):
    dense = small_mlp(seed=40)  # no zeros: the converter stores it dense although asked
    report = tfl.export_tflite(dense, tmp_path / "d.tflite", latency_runs=3, verbose=False)
    details = Interpreter(model_path=str(tmp_path / "d.tflite")).get_tensor_details()
    assert not any(d.get("sparsity_parameters") for d in details)
    assert report.encoding == "dense float32"
    thinned = small_mlp(seed=41)
    for layer in thinned.layers:
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * (np.random.default_rng(0).random(kernel.shape) < 0.2), bias])
    report = tfl.export_tflite(thinned, tmp_path / "s.tflite", latency_runs=3, verbose=False)
    details = Interpreter(model_path=str(tmp_path / "s.tflite")).get_tensor_details()
    assert any(d.get("sparsity_parameters") for d in details)
    assert report.encoding == "sparse float32"


def test_export_reports_accuracy_only_where_it_means_something(tmp_path):
    keras.utils.set_random_seed(42)
    regressor = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(1)])
    x = np.random.default_rng(0).random((40, 5), dtype=np.float32)
    report = tfl.export_tflite(regressor, tmp_path / "r.tflite", test_data=(x, x.sum(axis=1)),
                               latency_runs=3, verbose=False)
    assert report.keras_accuracy is None and report.exported_accuracy is None
    assert report.agreement == 1.0 and "test accuracy" not in str(report)
    classifier = small_mlp(seed=43)
    x = np.random.default_rng(1).random((30, 784), dtype=np.float32)
    out_of_range = np.full(30, 12)  # labels a 10-class model cannot predict
    report = tfl.export_saved_model(classifier, tmp_path / "c", test_data=(x, out_of_range),
                                    verbose=False)
    assert report.keras_accuracy is None
    report = tfl.export_saved_model(classifier, tmp_path / "c2", verbose=False,
                                    test_data=(x, np.eye(10)[np.arange(30) % 10]))  # one-hot
    assert 0 <= report.keras_accuracy <= 1 and report.exported_accuracy == report.keras_accuracy


def test_int8_export_from_the_cli_calibrates_on_the_runs_training_data(finished, tmp_path,
                                                                      capsys):
    _, run_dir = finished
    target = tmp_path / "ticket_int8.tflite"
    assert main(["export", str(run_dir), "--quantize", "int8", "--dense", "--output",
                 str(target)]) == 0
    assert "exporting trial 0, round 1: lenet_300_100, as tflite, calibrated on 300 training " \
        "inputs" in capsys.readouterr().out  # train_size: 300
    report = json.loads(report_path(target).read_text())
    assert report["encoding"] == "dense int8" and report["samples"] == 100
    interpreter = Interpreter(model_path=str(target), num_threads=1)
    interpreter.allocate_tensors()
    (given,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert given["dtype"] == out["dtype"] == np.int8  # full integer, in and out
    kernels = [d for d in interpreter.get_tensor_details() if len(d["shape"]) == 2 and
               d["shape"][0] in (300, 100, 10) and d["shape"][1] in (784, 300, 100)]
    assert len(kernels) == 3 and all(d["dtype"] == np.int8 for d in kernels)
    images = RunConfig.load(run_dir / RunConfig.RECORD).data().test[0][:20]
    ticket, _ = RunDirectory(run_dir).ticket()
    scale, zero_point = given["quantization"]
    agreed = 0
    for image, expected in zip(images, ticket.predict(images, verbose=0)):
        quantized = np.clip(np.round(image / scale + zero_point), -128, 127).astype(np.int8)
        interpreter.set_tensor(given["index"], quantized[None])
        interpreter.invoke()
        agreed += interpreter.get_tensor(out["index"])[0].argmax() == expected.argmax()
    assert agreed >= 18  # runs, and picks Keras's class


def test_a_run_in_progress_is_reported_so_and_exported_by_round_only(finished, tmp_path,
                                                                     capsys):
    _, run_dir = finished
    stopped = tmp_path / "stopped"
    shutil.copytree(run_dir, stopped)
    shutil.rmtree(stopped / "trial_0" / "round_01")  # as a run stopped in round 1 leaves it
    assert main(["report", str(stopped)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "trial 0 in progress: round 0 of 2 committed"
    assert out[1].split()[:3] == ["round", "variant", "weights"] and len(out) == 1 + 1 + 1 + 1
    result = tfl.SearchResult.load(stopped)
    result.config["trials"] = 2  # a second trial, not started (or run in another directory)
    assert result.in_progress() == ["trial 0 in progress: round 0 of 2 committed",
                                    "trial 1: no round of 2 committed"]
    target = tmp_path / "ticket.tflite"
    assert main(["export", str(stopped), "--output", str(target)]) == 2
    assert re.search(r"trial 0 of .*stopped is in progress: round 0 of 2 committed.*"
                     r"--round 0; round 0 is the dense network", capsys.readouterr().err)
    assert not target.exists()
    assert main(["export", str(stopped), "--round", "0", "--output", str(target)]) == 0
    assert "exporting trial 0, round 0" in capsys.readouterr().out and target.is_file()
    assert main(["report", str(run_dir)]) == 0  # a finished run says nothing of the kind
    assert "in progress" not in capsys.readouterr().out
