"""IMP under tf.distribute, mixed precision and XLA: exact masks and rewinds everywhere."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tf_keras as keras

import tf_lottery as tfl

from helpers import StepProbe, small_mlp, weights_by_path

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "tests" / "scripts" / "distributed_imp.py"


def _run_script(*args, env=None):
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=240, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check_replicas_agree(report, replicas):
    assert report["replicas"] == replicas
    assert sorted(report["rounds"]) == ["4", "8"]
    for step, entry in report["rounds"].items():
        for path, state in entry.items():
            assert len(set(state["replica_weights"])) == 1, (step, path)  # every replica alike
            assert len(set(state["replica_masks"])) <= 1, (step, path)
            assert state["rewound_exactly"] and state["pruned_are_zero"], (step, path)
        assert entry["hidden/kernel"]["kept"] == {"4": 0.5, "8": 0.25}[step]


@pytest.mark.parametrize("which", ["tf_keras", "keras3"])
def test_mirrored_strategy_on_two_devices(tmp_path, which):
    report = _run_script("mirrored", tmp_path / "ckpt", which)
    _check_replicas_agree(report, replicas=2)
    for state in report["rounds"]["4"].values():
        assert len(state["replica_weights"]) == 2


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_mirrored_strategy_with_two_workers(tmp_path):
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        workers.append(subprocess.Popen(
            [sys.executable, str(SCRIPT), "multi_worker", str(tmp_path / f"ckpt_{index}")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env))
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    for report in reports:
        _check_replicas_agree(report, replicas=2)
    assert reports[0] == reports[1]  # both workers hold the same masks and weights


@pytest.mark.parametrize("which", ["tf_keras", "keras3"])
def test_search_under_a_mirrored_strategy(tmp_path, which):
    report = _run_script("search", tmp_path / "run", which)
    assert report["replicas"] == 2 and report["engine"] == which
    assert report["weights_remaining"] == [1.0, 0.5, 0.5, 0.25, 0.25]
    assert '"replicas": 2' in (tmp_path / "run" / "config.json").read_text()
    if which == "keras3":  # Keras 3 runs one step per call under a strategy
        assert report["steps_per_execution"] == 1 and not report["refusal_wrote"]
        assert "steps_per_execution=4 does not run under a strategy" in report["refusal"]
    else:
        assert report["steps_per_execution"] == 4


def _one_call_round(tmp_path, mnist_slice, jit_compile=False):
    (x, y), _ = mnist_slice
    model = small_mlp(seed=31)
    theta0 = weights_by_path(model)
    schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=10, prune_rate=0.5)
    pruned = tfl.prune_with_rewinding(model, schedule, checkpoint_dir=tmp_path / "c")
    pruned.compile(keras.optimizers.Adam(1e-3),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   jit_compile=jit_compile)
    checked = []

    def check(step):
        if step in (10, 20):
            masks, weights = pruned.masks, weights_by_path(pruned)
            for path, value in weights.items():
                keep = masks[path] if path in masks else np.ones_like(value, bool)
                np.testing.assert_array_equal(value[keep], theta0[path][keep])
                assert np.all(value[~keep] == 0)
            checked.append(step)

    pruned.fit(x, y, batch_size=60, epochs=3, verbose=0, callbacks=[StepProbe(check)])
    assert checked == [10, 20]
    return pruned


def test_mixed_float16_keeps_exact_zeros_rewinds_and_float32_master_weights(tmp_path,
                                                                           mnist_slice):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        pruned = _one_call_round(tmp_path, mnist_slice)
        assert pruned.layers[1].compute_dtype == "float16"
        kernel = pruned.layers[1].layer.kernel.numpy()
        assert kernel.dtype == np.float32
        # the masking step must not round the float32 master weights to float16
        survivors = kernel[pruned.masks["hidden/kernel"]]
        assert np.any(survivors != survivors.astype(np.float16).astype(np.float32))
        assert np.all(kernel[~pruned.masks["hidden/kernel"]] == 0)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_xla_jit_compile_keeps_exact_zeros_and_rewinds(tmp_path, mnist_slice):
    pruned = _one_call_round(tmp_path, mnist_slice, jit_compile=True)
    kernel = pruned.layers[1].layer.kernel.numpy()
    assert np.all(kernel[~pruned.masks["hidden/kernel"]] == 0)
    assert pruned.masks.fraction_kept() == pytest.approx(0.25, abs=1e-3)


def test_the_cli_search_under_multi_worker_strategy_with_two_workers(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("model: lenet_300_100\ndataset: mnist\nvalidation_size: 100\n"
                      "train_size: 600\ntest_size: 100\nrounds: 1\nsteps_per_round: 20\n"
                      "prune_rate: 0.5\ncontrols: [random_pruning]\neval_every: 10\n"
                      "verbose: 0\nstrategy: multi_worker\n")
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):  # each machine writes its own run directory
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        workers.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "tf-lottery"), "run", str(config),
             f"run_dir={tmp_path / f'run_{index}'}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    for worker in workers:
        _, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err[-3000:]
    for path in ("trial_0/round_00/ticket/weights/weights.data-00000-of-00001",
                 "trial_0/round_01/ticket/masks.npz", "trial_0/round_01/random_pruning/masks.npz"):
        assert (tmp_path / "run_0" / path).read_bytes() == (tmp_path / "run_1" / path).read_bytes()
    assert '"replicas": 2' in (tmp_path / "run_0" / "config.json").read_text()
