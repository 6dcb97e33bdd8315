"""The data a search trains and evaluates on: in-memory arrays or ``tf.data`` pipelines.

Arrays are ``(inputs, labels)`` pairs: the search batches them (``batch_size``) and
shuffles them per training with its seed. A ``tf.data.Dataset`` yields ``(x, y)`` batches
the user made (files on disk, augmentation, any label format); a training repeats it when
it runs out before a round ends. Each input has an identity for resume: a SHA-256 of the
arrays; for a dataset its element spec, its cardinality and a digest of its contents that
does not depend on their order (one pass over a finite dataset, so shuffling does not
change it; the first batches of an infinite one). A randomly augmented pipeline changes
its contents at every pass: name such data yourself (``data_identity`` of
:meth:`tf_lottery.LotteryTicketSearch.run`), and that name is recorded instead.

Example::

    train = TrainingInput.of(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), "train")
    train.identity()    # {"kind": "dataset", "element_spec": ..., "sha256": ...}
"""

from __future__ import annotations

import hashlib

import numpy as np
import tensorflow as tf

from tf_lottery.foundations.errors import DataError

_FINGERPRINT_BATCHES = 4  # batches of an infinite dataset hashed into its identity
EVAL_VALUES = 4_000_000  # input values per evaluation batch of arrays, at most
_FILL_BYTES = 1 << 24  # bytes per slice copied into the variables that hold the arrays


def _is_dataset(data) -> bool:
    return isinstance(data, tf.data.Dataset)


def _check_pair(data, name: str):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise DataError(f"{name} must be a pair (inputs, labels) of arrays or a tf.data.Dataset "
                        f"yielding (x, y) batches, got {type(data).__name__}")
    x, y = data
    if len(x) != len(y):
        raise DataError(f"{name} has {len(x)} inputs but {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{name} is empty; the search trains on train data and evaluates on "
                        "validation and test data: give each at least one example")
    return x, y


def _check_dataset(dataset, name: str):
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise DataError(f"{name} yields {spec}; a search needs a dataset of (x, y) batches "
                        "(x: the model's inputs, y: the labels); map it to such pairs, e.g. "
                        "dataset.map(lambda features, label: (features, label))")
    if int(dataset.cardinality()) == 0:
        raise DataError(f"{name} is an empty dataset")
    return dataset


def _hash_arrays(*arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).data)  # hashed in place, not copied
    return digest.hexdigest()


def _multiset_digest(dataset) -> str:
    """A SHA-256-based digest of the examples of ``dataset`` (batches of (x, y)) as a
    multiset: the same whatever their order and batching."""
    total = 0
    for batch in dataset.as_numpy_iterator():
        leaves = [np.ascontiguousarray(leaf) for leaf in tf.nest.flatten(batch)]
        for index in range(len(leaves[0])):
            example = hashlib.sha256(b"".join(leaf[index].tobytes() for leaf in leaves))
            total = (total + int.from_bytes(example.digest(), "big")) % (1 << 256)
    return f"{total:064x}"


class _Input:
    """One of train / validation / test, arrays or a dataset."""

    def __init__(self, data, name: str, named=None):
        self.name, self.named = name, named
        if _is_dataset(data):
            self.dataset, self.arrays = _check_dataset(data, name), None
        else:
            self.dataset, self.arrays = None, _check_pair(data, name)
        # what batches are cut from, made once and here: inside a distribution strategy's
        # scope (where a search builds its models) they would be mirrored per replica
        self.held = None if self.arrays is None else _host_variables(self.arrays)

    def identity(self) -> dict:
        """What identifies this input for resume: a changed input is refused."""
        if self.arrays is not None:
            x, y = self.arrays
            return {"examples": int(len(x)), "shape": list(np.shape(x)[1:]),
                    "sha256": _hash_arrays(x, y)}
        cardinality = int(self.dataset.cardinality())
        if self.named is not None:
            return {"kind": "dataset", "element_spec": str(self.dataset.element_spec),
                    "cardinality": cardinality, "named": str(self.named)}
        finite = cardinality >= 0 or cardinality == tf.data.UNKNOWN_CARDINALITY
        batches = self.dataset if finite else self.dataset.take(_FINGERPRINT_BATCHES)
        return {"kind": "dataset", "element_spec": str(self.dataset.element_spec),
                "cardinality": cardinality, "content": _multiset_digest(batches)}

    def first_batch(self):
        """One batch, to check a model and its loss on before anything is written."""
        if self.arrays is not None:
            x, y = self.arrays
            size = evaluation_batch_size(x)
            return tf.nest.map_structure(lambda a: a[:size], (x, y))
        return next(iter(self.dataset.take(1)))


class TrainingInput(_Input):
    """The training data of a search: batches in a seeded order, repeated without end."""

    def __init__(self, data, batch_size: int, named=None):
        super().__init__(data, "train", named)
        self.batch_size = batch_size
        if self.arrays is not None:
            if len(self.arrays[0]) < batch_size:
                raise DataError(f"{len(self.arrays[0])} training examples are fewer than one "
                                f"batch of {batch_size}")

    def batches_per_epoch(self):
        """Batches in one pass over the data (None: unknown or infinite)."""
        if self.arrays is not None:
            return len(self.arrays[0]) // self.batch_size
        count = int(self.dataset.cardinality())
        return count if count > 0 else None

    def batches(self, seed: int, skip: int = 0) -> tf.data.Dataset:
        """The training batches of one training: shuffled by ``seed`` (arrays), repeated,
        the first ``skip`` batches left out (a resumed training).

        Arrays are shuffled as indices, reshuffled every pass, and each batch gathered from
        the variables that hold the data once: no shuffle buffer of examples, and no autotuner
        whose next tick a fit would wait for at its end.
        """
        if self.arrays is None:
            return self.dataset.repeat().skip(skip).prefetch(tf.data.AUTOTUNE)
        return _untuned(self._indices(seed, skip).map(self.gather).prefetch(2))

    def index_chunks(self, seed: int, steps: int, skip: int = 0) -> tf.data.Dataset:
        """The batches of :meth:`batches` (arrays only) as indices into the held arrays,
        ``steps`` batches per element, shaped ``(steps, batch_size)``: what one compiled call
        of several steps takes, gathering each batch itself (:meth:`gather`)."""
        return _untuned(self._indices(seed, skip).batch(steps, drop_remainder=True)
                        .prefetch(2))

    def gather(self, indices):
        """The examples at ``indices`` (a batch of indices), from the held arrays."""
        return tf.nest.map_structure(lambda held: tf.gather(held, indices), self.held)

    def _indices(self, seed: int, skip: int) -> tf.data.Dataset:
        count = len(self.arrays[0])
        return tf.data.Dataset.range(count) \
            .shuffle(count, seed=seed, reshuffle_each_iteration=True) \
            .batch(self.batch_size, drop_remainder=True).repeat().skip(skip)


def _untuned(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` without tf.data's autotuner, whose next tick a fit would wait for."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


class EvaluationInput(_Input):
    """Validation or test data: fixed batches, cached after the first pass."""

    def batches(self) -> tf.data.Dataset:
        if self.arrays is None:
            return self.dataset.cache()
        size = evaluation_batch_size(self.arrays[0])
        # slices of whole leading rows share the variables' memory, so the cache holds views
        return tf.data.Dataset.range(0, len(self.arrays[0]), size).map(
            lambda start: tf.nest.map_structure(lambda held: held[start:start + size],
                                                self.held)).cache()


def _host_variables(arrays):
    """``arrays`` (a structure of arrays) as non-trainable variables in host memory.

    A ``tf.data`` function that captures a tensor copies it for a moment whenever the
    dataset or an iterator over it is made (measured: a transient of the training set's
    size at every training's start); a captured variable is a handle, never copied. The
    variables are filled a slice at a time: converting a whole array to a tensor holds two
    copies of it for a moment.
    """
    with tf.init_scope(), tf.device("/cpu:0"):
        return tf.nest.map_structure(_filled_variable, arrays)


def _filled_variable(array):
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":  # strings and the like: at once
        return tf.Variable(array, trainable=False, name="tf_lottery_data")
    held = tf.Variable(lambda: tf.zeros(array.shape, array.dtype), trainable=False,
                       name="tf_lottery_data")
    rows = max(1, _FILL_BYTES // max(1, array[0].nbytes))
    for start in range(0, len(array), rows):
        stop = min(len(array), start + rows)
        held.scatter_update(tf.IndexedSlices(array[start:stop], tf.range(start, stop)))
    # a scatter leaves the variable copying itself whole at every read (copy-on-read, for
    # sparse updates): the slices of an evaluation set would each hold a copy of the set
    tf.raw_ops.DisableCopyOnRead(resource=held.handle)
    return held


def evaluation_batch_size(x) -> int:
    """Examples per evaluation batch of the inputs ``x`` (an array or a structure of them):
    at most about ``EVAL_VALUES`` input values, so small inputs are evaluated in a few large
    compiled steps (Keras's per-batch overhead dominates small batches) and large ones in
    batches that stay modest; the batches split ``x`` evenly, so that they mostly share one
    shape (one compiled program: 10,000 MNIST images are two batches of 5,000)."""
    leaves = tf.nest.flatten(x)
    per_example = sum(int(np.prod(np.shape(a)[1:])) for a in leaves)
    largest = max(1, EVAL_VALUES // max(1, per_example))
    count = len(leaves[0])
    return -(-count // -(-count // largest))  # count / ceil(count / largest), rounded up


def as_arrays(data, limit: int):
    """Up to ``limit`` examples of ``data`` ((x, y) arrays or a dataset of (x, y) batches)
    as a pair of arrays, e.g. to verify an export on."""
    if not _is_dataset(data):
        x, y = data
        return np.asarray(x[:limit]), np.asarray(y[:limit])
    xs, ys, count = [], [], 0
    for x, y in _check_dataset(data, "data").as_numpy_iterator():
        xs.append(x)
        ys.append(y)
        count += len(x)
        if count >= limit:
            break
    return np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]
