"""Fused training calls: one XLA program per call computes what Keras's loop of steps does."""

import json

import numpy as np
import pytest
import tensorflow as tf

import tf_lottery as tfl
from tf_lottery.engines.fused import FusedSteps
from tf_lottery.search.inputs import TrainingInput

from helpers import small_mlp

SCHEDULE = tfl.RewindingSchedule(rounds=1, steps_per_round=40, prune_rate=0.5)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(500, 20)).astype("float32")
    y = rng.integers(0, 10, size=500)
    return (x[:300], y[:300]), (x[300:400], y[300:400]), (x[400:], y[400:])


class _TrainFunctions:
    """A Keras callback of both Keras: the training function each fit of the search ran."""

    def __init__(self, keras):
        outer = self
        self.seen = []

        class Recorder(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                outer.seen.append(self.model.train_function.__qualname__)
        self.callback = Recorder()


def _search(K, run_dir, **kwargs):
    """A search of two rounds, evaluation and round ends every 20 steps (2 calls of 10)."""
    return tfl.LotteryTicketSearch(lambda seed: small_mlp(input_dim=20, seed=seed, keras=K),
                                   SCHEDULE, run_dir, eval_every=20, steps_per_execution=10,
                                   batch_size=16, controls=("random_pruning",), verbose=0,
                                   **kwargs)


def test_fused_calls_train_what_kerass_loop_trains(K, tmp_path, monkeypatch):
    splits = _data()
    functions = _TrainFunctions(K)
    fused = _search(K, tmp_path / "fused").run(*splits, callbacks=[functions.callback])
    assert functions.seen and all("FusedSteps" in name for name in functions.seen)

    monkeypatch.setattr(FusedSteps, "applies", lambda self, model: False)
    functions.seen.clear()
    loop = _search(K, tmp_path / "loop").run(*splits, callbacks=[functions.callback])
    assert functions.seen and not any("FusedSteps" in name for name in functions.seen)

    # the same steps on the same batches: the same curves and the same trained weights
    assert [r.val_loss for r in fused.records] == [r.val_loss for r in loop.records]
    assert [r.early_stop_iteration for r in fused.records] == \
        [r.early_stop_iteration for r in loop.records]
    for round_dir in ("round_00/ticket", "round_01/ticket", "round_01/random_pruning"):
        a = np.load(tmp_path / "fused" / "trial_0" / round_dir / "masks.npz")
        b = np.load(tmp_path / "loop" / "trial_0" / round_dir / "masks.npz")
        assert all(np.array_equal(a[k], b[k]) for k in a)
    for round_dir in ("round_00", "round_01"):
        a = json.loads((tmp_path / "fused" / "trial_0" / round_dir / "metrics.json").read_text())
        b = json.loads((tmp_path / "loop" / "trial_0" / round_dir / "metrics.json").read_text())
        assert a["curves"] == b["curves"]


@pytest.mark.parametrize("jit_compile, dataset", [(False, False), ("auto", True)])
def test_without_xla_or_on_a_dataset_keras_runs_its_own_loop(K, tmp_path, jit_compile,
                                                             dataset):
    train, validation, test = _data()
    if dataset:
        train = tf.data.Dataset.from_tensor_slices(train).batch(16, drop_remainder=True)
    functions = _TrainFunctions(K)
    result = _search(K, tmp_path / "run", jit_compile=jit_compile).run(train, validation, test,
                                                        callbacks=[functions.callback])
    assert functions.seen and not any("FusedSteps" in name for name in functions.seen)
    assert all(np.isfinite(r.val_loss) for r in result.records)


def test_index_chunks_are_the_batches_in_order_from_the_skipped_one():
    x = np.arange(90, dtype="float32").reshape(45, 2)
    train = TrainingInput((x, np.arange(45)), batch_size=4)  # 11 batches per pass
    batches = [b[1].numpy() for b in train.batches(seed=5, skip=3).take(24)]
    chunks = [c.numpy() for c in train.index_chunks(seed=5, steps=6, skip=3).take(4)]
    assert [c.shape for c in chunks] == [(6, 4)] * 4
    gathered = [train.gather(row)[1].numpy() for chunk in chunks for row in chunk]
    assert all(np.array_equal(a, b) for a, b in zip(gathered, batches))
