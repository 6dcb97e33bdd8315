"""The search's input pipelines for arrays: every example exactly once, bit for bit."""

import numpy as np
import pytest
import tensorflow as tf

from tf_lottery.search.inputs import (
    EVAL_VALUES,
    EvaluationInput,
    TrainingInput,
    evaluation_batch_size,
)


def _arrays(count, width=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, width)).astype("float32"), np.arange(count, dtype="int64")


@pytest.mark.parametrize("count, width, sizes", [
    (10_000, 784, [5_000, 5_000]),           # MNIST's test set: one shape, one program
    (5_000, 784, [5_000]),                   # its validation set: the same shape
    (10_001, 784, [5_001, 5_000]),
    (3, 2 * EVAL_VALUES, [1, 1, 1]),         # examples larger than a batch: one at a time
])
def test_evaluation_batches_split_the_set_evenly(count, width, sizes):
    size = evaluation_batch_size(np.zeros((count, width), "float32"))
    assert [min(size, count - start) for start in range(0, count, size)] == sizes
    assert size * width <= max(EVAL_VALUES, width)


def test_evaluation_batches_are_the_arrays_in_order():
    x, y = _arrays(1_003, width=20_000)  # batches of at most 200 examples: 6 batches
    batches = list(EvaluationInput((x, y), "test").batches().as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [168] * 5 + [163]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    again = list(EvaluationInput((x, y), "test").batches().as_numpy_iterator())
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))


class _Buffer:
    """A tensor as a DLPack producer, so NumPy can view its memory without a copy."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __dlpack__(self, **_):
        return tf.experimental.dlpack.to_dlpack(self.tensor)

    def __dlpack_device__(self):
        return 1, 0  # DLPack's CPU


def _address(tensor) -> int:
    return np.from_dlpack(_Buffer(tensor)).__array_interface__["data"][0]


def test_evaluation_batches_share_the_held_arrays_memory():
    """The batches are views of the variables that hold the set, not copies: a variable
    filled by scatters copied itself whole at every read (78 MB held for MNIST's sets)."""
    x, y = _arrays(1_003, width=20_000)
    data = EvaluationInput((x, y), "test")
    start = _address(data.held[0].read_value())
    row = x[0].nbytes
    offsets = [_address(bx) - start for bx, _ in data.batches()]
    assert offsets == [168 * row * i for i in range(6)]


def test_training_batches_hold_every_example_once_per_epoch_in_a_seeded_order():
    x, y = _arrays(100)
    train = TrainingInput((x, y), 10)
    assert all(not v.trainable and "CPU" in v.device for v in train.held)
    stream = train.batches(seed=3).as_numpy_iterator()
    epochs = [[next(stream) for _ in range(10)] for _ in range(2)]
    for epoch in epochs:
        labels = np.concatenate([batch[1] for batch in epoch])
        assert sorted(labels) == list(range(100))  # each example once per epoch
        for bx, by in epoch:
            np.testing.assert_array_equal(bx, x[by])  # rows gathered bit for bit
    first = [batch[1] for batch in epochs[0]]
    assert not np.array_equal(np.concatenate(first), np.concatenate(
        [batch[1] for batch in epochs[1]]))  # reshuffled every epoch
    same = train.batches(seed=3).as_numpy_iterator()
    assert all(np.array_equal(next(same)[1], labels) for labels in first)
    skipped = train.batches(seed=3, skip=4).as_numpy_iterator()
    assert all(np.array_equal(next(skipped)[1], labels) for labels in first[4:])
    other = train.batches(seed=4).as_numpy_iterator()
    assert not np.array_equal(next(other)[1], first[0])
