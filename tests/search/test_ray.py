"""The search on Ray: a local runtime, a worker process killed mid-training, a two-node
cluster started here; the same masks (bit for bit) and records as the local executor."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tf_lottery as tfl
from tf_lottery.cli.commands import main
from tf_lottery.engines import Callback
from tf_lottery.search.settings import SearchSettings
from tf_lottery.zoo.data import load_dataset
from tf_lottery.zoo.models import lenet_300_100

ray = pytest.importorskip("ray")

SCHEDULE = tfl.RewindingSchedule(rounds=2, steps_per_round=10, prune_rate=0.5)


@pytest.fixture(scope="module")
def splits():
    data = load_dataset("mnist", validation_size=200, train_size=600)
    return data.train, data.validation, (data.test[0][:200], data.test[1][:200])


@pytest.fixture(scope="module")
def ray_home(tmp_path_factory):
    """A home of the tests' own: Ray keeps its authentication token there, so a token left
    in the machine's home cannot lock the tests out."""
    home = tmp_path_factory.mktemp("ray_home")
    saved = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    yield home
    if ray.is_initialized():
        ray.shutdown()
    os.environ["HOME"] = saved


@pytest.fixture(scope="module")
def runtime(ray_home):
    """One local Ray runtime of 2 CPUs and a GPU (a logical one: Ray schedules by it, the
    trainings run on the CPUs) for the module's searches (workers stay warm)."""
    ray.init(num_cpus=2, num_gpus=1, log_to_driver=False, include_dashboard=False)
    yield
    ray.shutdown()


def _build(keras):
    return lambda seed: lenet_300_100((28, 28, 1), seed=seed, keras=keras)


def _search(run_dir, keras=3, **options):
    options = dict(dict(eval_every=5, verbose=0, seed=3), **options)
    return tfl.LotteryTicketSearch(_build(keras), SCHEDULE, run_dir, **options)


def _committed(run_dir) -> dict:
    """Every committed file's bytes (wall times aside), masks and metrics, by path."""
    out = {}
    for path in sorted(Path(run_dir).glob("trial_*/round_*/**/*")):
        if path.is_file() and path.name not in ("SHA256SUMS", "metrics.json"):
            out[str(path.relative_to(run_dir))] = path.read_bytes()
        elif path.name == "metrics.json":
            records = json.loads(path.read_text())["records"]
            out[str(path.relative_to(run_dir))] = [
                {k: v for k, v in r.items() if k != "wall_time"} for r in records]
    return out


@pytest.mark.parametrize("keras, options", [
    (2, dict(trials=2, early_bird={"epsilon": 0.99, "window": 2})),
    (3, dict(rewind_to=5, scope="global", block_size=2, criterion="magnitude_increase")),
    (3, dict(rewind_to="lr")),
    (3, dict(scope="global", controls=("snip", "grasp", "synflow", "magnitude_init"))),
], ids=["tf_keras-two-trials-early-bird", "keras3-late-rewinding-global-blocks",
        "keras3-lr-rewinding", "keras3-pruning-at-initialization"])
def test_ray_gives_what_the_local_executor_gives(runtime, splits, tmp_path, keras, options):
    local = _search(tmp_path / "local", keras, **options).run(*splits)
    on_ray = _search(tmp_path / "ray", keras, executor="ray", workers=2, **options).run(*splits)
    assert [r.to_dict() | {"wall_time": 0} for r in on_ray.records] == \
        [r.to_dict() | {"wall_time": 0} for r in local.records]
    committed = _committed(tmp_path / "local")
    assert committed and _committed(tmp_path / "ray") == committed  # bit for bit
    assert (tmp_path / "ray" / "logs").is_dir()  # the driver wrote TensorBoard's logs


class KillOnce(Callback):
    """Logs every epoch begun (its index, a line in ``log``) and kills its own worker process
    as it begins epoch ``epoch`` of the first training that gets there, once."""

    def __init__(self, log: str, epoch: int):
        super().__init__()
        self.log, self.epoch = log, epoch

    def on_epoch_begin(self, epoch, logs=None):
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(f"{epoch}\n")
        if epoch == self.epoch and not os.path.exists(self.log + ".killed"):
            Path(self.log + ".killed").write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_is_replaced_and_resumes_from_its_epoch_backup(runtime, splits,
                                                                        tmp_path):
    schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=30, prune_rate=0.5)
    options = dict(eval_every=10, verbose=0, seed=3, controls=("random_pruning",),
                   steps_per_execution=5)  # 3 trainings of 3 epochs (10 batches each)
    local = tfl.LotteryTicketSearch(_build(3), schedule, tmp_path / "local", **options).run(
        *splits)
    log = tmp_path / "epochs"
    on_ray = tfl.LotteryTicketSearch(_build(3), schedule, tmp_path / "ray", executor="ray",
                                     workers=2, **options).run(
        *splits, callbacks=[KillOnce(str(log), epoch=2)])
    assert Path(str(log) + ".killed").is_file()  # a worker process really died mid-training
    begun = log.read_text().split()
    # the killed training began its last epoch twice, and nothing before it again
    assert [begun.count(str(epoch)) for epoch in range(3)] == [3, 3, 4], begun
    assert [r.to_dict() | {"wall_time": 0} for r in on_ray.records] == \
        [r.to_dict() | {"wall_time": 0} for r in local.records]
    assert _committed(tmp_path / "ray") == _committed(tmp_path / "local")


class Raises(Callback):
    def on_train_batch_end(self, batch, logs=None):
        raise ValueError("a bug in a callback")


def test_a_training_that_raises_ends_the_run_with_its_error_named(runtime, splits, tmp_path):
    with pytest.raises(RuntimeError, match=r"trial 0, round 0 \(ticket\) failed on a Ray "
                                           r"worker: ValueError: a bug in a callback"):
        _search(tmp_path / "run", executor="ray").run(*splits, callbacks=[Raises()])
    assert not list((tmp_path / "run" / "trial_0").glob("round_*"))


class Environment(Callback):
    """Writes what a training's process was given into ``folder``, one file per training."""

    KEYS = ("CUDA_VISIBLE_DEVICES", "TF_NUM_INTRAOP_THREADS", "TF_FORCE_GPU_ALLOW_GROWTH",
            "KERAS_BACKEND")

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def on_train_begin(self, logs=None):
        seen = {key: os.environ.get(key) for key in self.KEYS}
        seen["gpus"] = ray.get_gpu_ids()
        Path(self.folder, f"{os.getpid()}_{time.monotonic_ns()}").write_text(json.dumps(seen))


def test_trainings_packed_on_a_gpu_share_it_and_get_their_cpus_threads(runtime, splits,
                                                                        tmp_path):
    seen = tmp_path / "seen"
    seen.mkdir()
    result = _search(tmp_path / "run", executor="ray", gpus_per_training=0.5).run(
        *splits, callbacks=[Environment(str(seen))])
    environments = [json.loads(p.read_text()) for p in seen.iterdir()]
    assert len(environments) == len(result.records) == 7  # 1 + 2 x (ticket + 2 controls)
    assert all(e["gpus"] == [0] and e["CUDA_VISIBLE_DEVICES"] == "0" and
               e["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" and
               e["TF_NUM_INTRAOP_THREADS"] == "1" and e["KERAS_BACKEND"] == "tensorflow"
               for e in environments), environments


CONFIG = """\
run_dir: {run_dir}
model: lenet_300_100
dataset: mnist
validation_size: 100
train_size: 300
test_size: 100
rounds: 2
steps_per_round: 40
prune_rate: 0.5
controls: [random_reinit]
eval_every: 10
verbose: 0
jit_compile: false
"""


def test_a_killed_driver_resumes_from_its_committed_rounds(ray_home, runtime, tmp_path):
    config = tmp_path / "search.yaml"
    config.write_text(CONFIG.format(run_dir=tmp_path / "ray"))
    env = dict(os.environ, HOME=str(ray_home), RAY_USAGE_STATS_ENABLED="0")
    driver = subprocess.Popen([str(Path(sys.executable).parent / "tf-lottery"), "run",
                               str(config), "executor=ray", "workers=2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (tmp_path / "ray" / "trial_0" / "round_00").is_dir():
        assert time.monotonic() < deadline and driver.poll() is None, driver.stderr.read()
        time.sleep(0.05)
    driver.kill()  # SIGKILL: no clean-up of any kind
    driver.wait(timeout=60)
    assert not (tmp_path / "ray" / "trial_0" / "round_02").exists()  # killed mid-search
    main(["run", str(config), "executor=ray", "workers=2"])  # the same command resumes
    main(["run", str(config), f"run_dir={tmp_path / 'local'}"])
    assert _committed(tmp_path / "ray") == _committed(tmp_path / "local")


def test_without_ray_or_with_what_ray_cannot_take_a_clear_refusal(monkeypatch, splits,
                                                                   tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "ray" else find_spec(name, *args))
    with pytest.raises(tfl.SettingError, match=r"pip install 'tf_lottery\[ray\]'"):
        SearchSettings(executor="ray")
    monkeypatch.undo()
    import tensorflow as tf
    dataset = tf.data.Dataset.from_tensor_slices(splits[0]).batch(60)
    with pytest.raises(tfl.DataError, match="tf.data.Dataset cannot go to another process"):
        _search(tmp_path / "run", executor="ray").run(dataset, *splits[1:])
    with pytest.raises(tfl.SettingError, match="takes no tf.distribute strategy"):
        _search(tmp_path / "run", executor="ray", strategy="mirrored")
    assert not (tmp_path / "run").exists()


class WhereItRan(Callback):
    """Writes the Ray node each training ran on into ``folder``."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def on_train_begin(self, logs=None):
        node = ray.get_runtime_context().get_node_id()
        Path(self.folder, f"{os.getpid()}_{time.monotonic_ns()}").write_text(node)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_nodes(command, port, env, count, seconds=120):
    """Until ``ray status`` lists ``count`` active nodes (a joining node takes a moment)."""
    deadline = time.monotonic() + seconds
    while True:
        status = subprocess.run([command, "status", f"--address=127.0.0.1:{port}"], env=env,
                                capture_output=True, text=True, timeout=60).stdout
        active = status.split("Active:")[-1].split("Pending:")[0]
        if active.count("node_") >= count or time.monotonic() > deadline:
            assert active.count("node_") >= count, status
            return
        time.sleep(1)


def test_a_two_node_cluster_started_here(ray_home, splits, tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    port = _free_port()
    env = dict(os.environ, HOME=str(ray_home), RAY_USAGE_STATS_ENABLED="0")
    command = str(Path(sys.executable).parent / "ray")
    started = []
    try:
        for args in (["--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                      "--num-cpus=1", "--include-dashboard=false"],
                     [f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1",
                      "--num-cpus=1"]):
            done = subprocess.run([command, "start", *args], env=env, capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            started.append(args)
        _wait_for_nodes(command, port, env, count=2)
        where = tmp_path / "where"
        where.mkdir()
        on_cluster = _search(tmp_path / "cluster", executor="ray",
                             ray_address=f"127.0.0.1:{port}").run(
            *splits, callbacks=[WhereItRan(str(where))])
        assert len({p.read_text() for p in where.iterdir()}) == 2  # both nodes trained
    finally:
        subprocess.run([command, "stop", "--force"], env=env, capture_output=True,
                       timeout=120)
    local = _search(tmp_path / "local").run(*splits)
    assert _committed(tmp_path / "cluster") == _committed(tmp_path / "local")
    assert np.allclose([r.val_loss for r in on_cluster.records],
                       [r.val_loss for r in local.records], rtol=0, atol=0)
