"""LotteryTicketSearch on a small slice of MNIST: records, controls, resume, refusals."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tf_lottery as tfl
from tf_lottery.core.masks import kept_count
from tf_lottery.engines.callbacks import Callback
from tf_lottery.runs.rundir import RunDirectory, RunDirectoryError
from tf_lottery.search.settings import SearchSettings
from tf_lottery.zoo.data import load_dataset
from tf_lottery.zoo.models import lenet_300_100

from helpers import InterruptAt

SCHEDULE = tfl.RewindingSchedule(rounds=2, steps_per_round=10, prune_rate=0.5,
                                 layer_rates={"output": 0.2})


@pytest.fixture(scope="module")
def splits():
    data = load_dataset("mnist", validation_size=200, train_size=600)
    return data.train, data.validation, (data.test[0][:200], data.test[1][:200])


def _search(run_dir, **kwargs):
    options = dict(eval_every=5, verbose=0, seed=3)
    options.update(kwargs)
    return tfl.LotteryTicketSearch(lambda seed: lenet_300_100((28, 28, 1), seed=seed), SCHEDULE,
                                   run_dir, **options)


def _final_masks(run_dir, trial=0, round_index=2):
    return tfl.Masks.load(Path(run_dir) / f"trial_{trial}" / f"round_{round_index:02d}" /
                          "ticket" / "masks.npz")


def test_records_for_ticket_and_controls_with_the_scheduled_weights(splits, tmp_path):
    result = _search(tmp_path / "run", trials=2).run(*splits)
    assert [(r.trial, r.round, r.variant) for r in result.records] == [
        (t, r, v) for t in (0, 1) for r in (0, 1, 2)
        for v in (("ticket",) if r == 0 else ("ticket", "random_reinit", "random_pruning"))]
    sizes = {"hidden_1/kernel": 784 * 300, "hidden_2/kernel": 300 * 100, "output/kernel": 1000}
    for record in result.records:
        rates = {"hidden_1/kernel": 0.5, "hidden_2/kernel": 0.5, "output/kernel": 0.2}
        expected = {k: kept_count(n, (1 - rates[k]) ** record.round) / n
                    for k, n in sizes.items()}
        assert record.layer_weights_remaining == pytest.approx(expected)
        total = sum(expected[k] * n for k, n in sizes.items()) / sum(sizes.values())
        assert record.weights_remaining == pytest.approx(total)
        assert record.early_stop_iteration in (5, 10)
        assert 0.0 <= record.test_accuracy <= 1.0 and record.wall_time > 0
        assert np.isfinite(record.val_loss)
    # the controls differ from the ticket: reinit keeps the ticket's masks, random pruning not
    run = Path(tmp_path / "run" / "trial_0" / "round_02")
    ticket = tfl.Masks.load(run / "ticket" / "masks.npz")
    reinit = tfl.Masks.load(run / "random_reinit" / "masks.npz")
    random = tfl.Masks.load(run / "random_pruning" / "masks.npz")
    assert all(np.array_equal(ticket[k], reinit[k]) for k in ticket)
    assert random.kept() == ticket.kept()
    assert not np.array_equal(random["hidden_1/kernel"], ticket["hidden_1/kernel"])
    # trials start from different θ0
    a = tfl.RewindPoint.load(tmp_path / "run" / "trial_0" / "rewind" / "step_0",
                             _lenet()).values["hidden_1/kernel"]
    b = tfl.RewindPoint.load(tmp_path / "run" / "trial_1" / "rewind" / "step_0",
                             _lenet()).values["hidden_1/kernel"]
    assert not np.array_equal(a, b)
    # results written: CSV rows, JSON, a real PNG
    lines = (tmp_path / "run" / "results.csv").read_text().splitlines()
    assert len(lines) == 1 + len(result.records) and lines[0].startswith("trial,round,variant")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(saved["records"]) == len(result.records)
    png = (tmp_path / "run" / "plot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert "random_pruning" in result.table()


def _lenet():
    return lenet_300_100((28, 28, 1), seed=0)


class _Trainings(Callback):
    """Every training's optimizer step at its start and end, and its starting weights."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_begin(self, logs=None):
        self.seen.append({"start": int(self.model.optimizer.iterations.numpy()),
                          "weights": self.model.engine.model_weights(self.model)})
        self.seen[-1]["weights"] = {k: v.numpy() for k, v in self.seen[-1]["weights"].items()}

    def on_train_end(self, logs=None):
        self.seen[-1]["end"] = int(self.model.optimizer.iterations.numpy())


def test_late_rewinding_trains_later_rounds_and_their_controls_from_step_k(splits, tmp_path):
    """As open_lth: rounds after the first, and their controls, train steps k to T with the
    optimizer at step k; random pruning starts from the weights of iteration k."""
    trainings = _Trainings()
    result = _search(tmp_path / "run", rewind_to=5).run(*splits, callbacks=[trainings])
    assert [(t["start"], t["end"]) for t in trainings.seen] == [(0, 10)] + [(5, 10)] * 6
    for record in result.records:
        assert record.early_stop_iteration in ((5, 10) if record.round == 0 else (10,))
    curves = json.loads((tmp_path / "run" / "trial_0" / "round_01" / "metrics.json")
                        .read_text())["curves"]
    assert {v: [p["iteration"] for p in c] for v, c in curves.items()} == {
        "ticket": [10], "random_reinit": [10], "random_pruning": [10]}
    at_k = tfl.RewindPoint.load(tmp_path / "run" / "trial_0" / "rewind" / "step_5",
                                _lenet()).values
    masks = tfl.Masks.load(tmp_path / "run" / "trial_0" / "round_01" / "random_pruning" /
                           "masks.npz")
    started = trainings.seen[3]["weights"]  # round 1: ticket, random reinit, random pruning
    for path, value in at_k.items():
        keep = masks[path] if path in masks else np.ones_like(value, bool)
        np.testing.assert_array_equal(started[path][keep], value[keep])
        assert np.all(started[path][~keep] == 0)


def test_an_interrupted_search_resumes_to_the_same_masks(splits, tmp_path):
    straight = _search(tmp_path / "straight").run(*splits)
    with pytest.raises(KeyboardInterrupt):
        # the 5th training: round 2's ticket
        _search(tmp_path / "resumed").run(*splits, callbacks=[InterruptAt(5)])
    run = RunDirectory(tmp_path / "resumed")
    assert run.completed_rounds(0) == 2
    assert not list((tmp_path / "resumed" / "trial_0").glob(".round_*"))  # no half round left
    resumed = _search(tmp_path / "resumed").run(*splits)
    for round_index in (0, 1, 2):
        a = _final_masks(tmp_path / "straight", round_index=round_index)
        b = _final_masks(tmp_path / "resumed", round_index=round_index)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [r.test_accuracy for r in resumed.records] == [r.test_accuracy for r in straight.records]


def test_a_different_config_is_refused_with_what_differs(splits, tmp_path):
    _search(tmp_path / "run", controls=()).run(*splits)
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    with pytest.raises(RunDirectoryError, match=r"(?s)another config.*settings.scope: \"layer\" in "
                                                r"the run directory, \"global\" now"):
        _search(tmp_path / "run", controls=(), scope="global").run(*splits)
    with pytest.raises(RunDirectoryError, match="data.train"):
        _search(tmp_path / "run", controls=()).run(
            (splits[0][0][:300], splits[0][1][:300]), *splits[1:])
    with pytest.raises(RunDirectoryError) as refused:  # "auto" resolves to another value
        _search(tmp_path / "run", controls=(), eval_every=2).run(*splits)
    assert refused.value.args[0].endswith(
        "Differences:\n  eval_every: 5 in the run directory, 2 now")  # not steps_per_execution
    wider = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(300, activation="relu", name="hidden_1"),
                              keras.layers.Dense(120, activation="relu", name="hidden_2"),
                              keras.layers.Dense(10, name="output")])
    with pytest.raises(RunDirectoryError, match=r"model\.config\.layers\.\d\.config\.units: 100 "
                                                r"in the run directory, 120 now"):
        tfl.LotteryTicketSearch(lambda seed: wider, SCHEDULE, tmp_path / "run", controls=(),
                                eval_every=5, verbose=0, seed=3).run(*splits)
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before


@pytest.mark.parametrize("held", ["trial 0", "the config, for long"])
def test_a_second_run_on_the_same_directory_is_refused(splits, tmp_path, monkeypatch, held):
    """A process holding a trial refuses another on it at once; the directory's own lock
    (held while a process records the config) is waited for, then refused."""
    trial = "0" if held == "trial 0" else "None"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom tf_lottery.runs.rundir import RunDirectory\n"
         f"with RunDirectory(sys.argv[1]).locked({trial}):\n    print('locked', flush=True)\n"
         "    time.sleep(60)", str(tmp_path / "run")],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    monkeypatch.setattr(RunDirectory, "CONFIG_LOCK_WAIT", 0.5)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirectoryError,
                           match=f"in use by another run \\(pid {holder.pid}\\)"):
            _search(tmp_path / "run").run(*splits)
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: the directory is usable again
    with RunDirectory(tmp_path / "run").locked(0):
        pass


def test_a_diverging_round_names_the_round_and_keeps_the_earlier_ones(splits, tmp_path):
    class Explode(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.trainings = 0

        def on_train_begin(self, logs=None):
            self.trainings += 1

        def on_train_batch_begin(self, batch, logs=None):
            if self.trainings == 2 and batch >= 2:  # round 1's ticket, its 2nd call
                kernel = self.model.layers[2].layer.kernel
                kernel.assign(np.full(kernel.shape, np.inf, "float32"))

    with pytest.raises(FloatingPointError, match=r"trial 0, round 1 \(ticket\): training "
                                                 r"diverged \(non-finite"):
        _search(tmp_path / "run").run(*splits, callbacks=[Explode()])
    assert RunDirectory(tmp_path / "run").completed_rounds(0) == 1
    assert (tmp_path / "run" / "trial_0" / "round_00" / "metrics.json").is_file()


@pytest.mark.parametrize("kwargs, message", [
    (dict(controls=("random",)), "unknown control 'random'"),
    (dict(trials=0), "trials must be a whole number"),
    (dict(eval_every=0), "eval_every must be a whole number"),
    (dict(rewind_to="start"), "rewind_to must be one of"),
])
def test_bad_search_settings_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _search(tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("monitor, mode", [
    ("val_loss", "min"), ("val_mae", "min"), ("val_root_mean_squared_error", "min"),
    ("val_digit_loss", "min"), ("val_accuracy", "max"), ("val_auc_1", "max"),
    ("val_digit_sparse_categorical_accuracy", "max"), ("val_precision", "max")])
def test_mode_follows_the_monitored_metric_unless_insisted(monitor, mode):
    """Issue 31, item 6: the early stop takes the metric's best, Keras's direction."""
    assert SearchSettings(monitor=monitor).mode == mode  # "auto"
    assert SearchSettings(monitor=monitor, mode=mode).mode == mode
    other = {"min": "max", "max": "min"}[mode]
    with pytest.raises(tfl.SettingError, match=f"mode='{other}' contradicts"):
        SearchSettings(monitor=monitor, mode=other)
    insisted = SearchSettings(monitor=monitor, mode=other, force_mode=True)
    assert insisted.mode == other and insisted.better(1.0, 0.0) == (other == "max")
    assert SearchSettings(monitor="val_dice", mode=other).mode == other  # unknown: as given


def test_a_model_xla_cannot_compile_falls_back_with_a_message(splits, tmp_path, capsys):
    def with_python_op(seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((28, 28, 1))
        x = keras.layers.Flatten()(inputs)
        x = keras.layers.Lambda(lambda t: tf.ensure_shape(tf.numpy_function(
            lambda a: a, [t], tf.float32, stateful=False), (None, 784)))(x)  # XLA refuses it
        outputs = keras.layers.Dense(10, name="output")(x)
        return keras.Model(inputs, outputs)

    schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=10)
    result = tfl.LotteryTicketSearch(with_python_op, schedule, tmp_path / "run", eval_every=5,
                                     verbose=0, controls=()).run(*splits)
    assert "XLA cannot compile" in capsys.readouterr().out
    assert len(result.records) == 2 and all(np.isfinite(r.val_loss) for r in result.records)
    with pytest.raises(Exception, match="(?i)xla|PyFunc|numpy_function"):
        tfl.LotteryTicketSearch(with_python_op, schedule, tmp_path / "strict", eval_every=5,
                                verbose=0, controls=(), jit_compile=True).run(*splits)
