"""The search's Evaluator: its TensorFlow graph gives what Keras's evaluate gives."""

import numpy as np
import pytest
import tensorflow as tf

from tf_lottery.core.schedule import RewindingSchedule
from tf_lottery.core.settings import ImpSettings
from tf_lottery.imp.wrap import prepare
from tf_lottery.search.evaluation import Evaluator
from tf_lottery.search.inputs import EvaluationInput
from tf_lottery.search.training import compile_model

from helpers import small_mlp


def _lottery(K, **compiled):
    model = prepare(small_mlp(input_dim=20, keras=K),
                    RewindingSchedule(rounds=1, steps_per_round=10), ImpSettings())
    settings = dict(optimizer=K.optimizers.Adam(1e-2),
                    loss=K.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"], jit_compile=True)
    compile_model(model, **dict(settings, **compiled))
    return model


def _sets(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(700, 20)).astype("float32")
    y = rng.integers(0, 10, size=700)
    # arrays (one batch), and a dataset of uneven batches (the last one shorter)
    return {"val": EvaluationInput((x[:300], y[:300]), "validation"),
            "test": EvaluationInput(tf.data.Dataset.from_tensor_slices((x[300:], y[300:]))
                                    .batch(64), "test")}


def test_the_graph_gives_what_evaluate_gives(K):
    model = _lottery(K)
    sets = _sets()
    x, y = sets["val"].arrays
    model.fit(x, y, epochs=1, batch_size=50, verbose=0)
    in_graph = Evaluator(sets, in_graph=True)(model)
    keras = Evaluator(sets, in_graph=False)(model)
    assert sorted(in_graph) == sorted(keras) == [
        "test_accuracy", "test_loss", "val_accuracy", "val_loss"]
    for key, value in keras.items():  # XLA's kernels and TensorFlow's differ in the last bits
        assert in_graph[key] == pytest.approx(value, rel=1e-5), key
    assert in_graph["val_accuracy"] != in_graph["test_accuracy"]  # the sets are kept apart
    # evaluated again: the metrics start from zero, not from the last evaluation
    assert Evaluator(sets, in_graph=True)(model) == in_graph


def test_the_graph_is_traced_again_when_the_model_is_compiled_again(K):
    model = _lottery(K)
    evaluator = Evaluator(_sets(), in_graph=True)
    before = evaluator(model)
    compile_model(model, **dict(model.compile_settings, jit_compile=False,
                                metrics=["accuracy", K.metrics.SparseTopKCategoricalAccuracy(
                                    k=3, name="top3")]))
    after = evaluator(model)
    assert sorted(after) == sorted([*before, "val_top3", "test_top3"])
    assert after["val_top3"] >= after["val_accuracy"]
    assert after["val_loss"] == pytest.approx(before["val_loss"], rel=1e-5)
