"""The Keras 3 engine beyond what the parametrized tests share with tf_keras: subclassed
models and custom layers, other weights selected with ``prunable``, the JAX backend, and an
import that leaves ``tf.keras`` alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import tf_lottery as tfl
from tf_lottery.engines import engine_named

from helpers import StepProbe, compile_for_classification, python_with, toy_data

ENGINE = engine_named("keras3")
ROOT = Path(__file__).parents[2]


@keras.saving.register_keras_serializable(package="tf_lottery_tests")
class GatedBlock(keras.layers.Layer):
    """A custom layer: a Dense of its own and a weight ``gate`` that no rule knows."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = keras.layers.Dense(units, name="dense")

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.gate = self.add_weight(name="gate", shape=(input_shape[-1], self.units),
                                    initializer="glorot_uniform")

    def call(self, x):
        return keras.ops.relu(self.dense(x) + keras.ops.matmul(x, self.gate))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="tf_lottery_tests")
class Net(keras.Model):
    """A subclassed model: a custom layer, BatchNorm, a head."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.block = GatedBlock(16, name="block")
        self.norm = keras.layers.BatchNormalization(name="norm")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, x, training=None):
        return self.head(self.norm(self.block(x), training=training))


def _net(seed=0):
    keras.utils.set_random_seed(seed)
    net = Net(name="net")
    net(np.zeros((1, 12), "float32"))
    return net


def test_a_subclassed_model_with_a_custom_layer_runs_imp_exactly(tmp_path):
    net = _net()
    theta0 = {path: v.numpy().copy() for path, v in ENGINE.model_weights(net).items()}
    assert {"block/gate", "block/dense/kernel", "norm/moving_mean", "head/kernel"} <= set(theta0)
    schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=4, prune_rate=0.5)
    pruned = compile_for_classification(tfl.prune_with_rewinding(
        net, schedule, prunable=["block/gate"], checkpoint_dir=tmp_path / "c"), 1e-2)
    assert sorted(pruned.masks) == ["block/dense/kernel", "block/gate", "head/kernel"]
    checked = []

    def check(step):  # round ends at steps 4 and 8, inside the 6-step epochs
        if step in (4, 8):
            weights = {p: v.numpy() for p, v in ENGINE.model_weights(net).items()}
            masks = pruned.masks
            for path, value in weights.items():
                keep = masks[path] if path in masks else np.ones_like(value, bool)
                np.testing.assert_array_equal(value[keep], theta0[path][keep])  # BN stats too
                assert np.all(value[~keep] == 0)
            checked.append(step)

    x, y = toy_data()
    pruned.fit(x, y, batch_size=10, epochs=2, verbose=0, callbacks=[StepProbe(check)])
    assert checked == [4, 8] and pruned.imp_step == 12
    final = {p: v.numpy() for p, v in ENGINE.model_weights(net).items()}
    for path, keep in pruned.masks.items():
        assert keep.mean() == pytest.approx(0.25, abs=0.02)
        assert np.all(final[path][~keep] == 0)
    assert not np.array_equal(final["norm/moving_mean"], theta0["norm/moving_mean"])

    # saved and loaded back with its registered classes, masks and rounds
    pruned.save(tmp_path / "net.keras")
    restored = tfl.load_model(tmp_path / "net.keras")
    assert type(restored.network) is Net and restored.imp_step == 12
    assert [r.round for r in restored.rounds] == [0, 1, 2]  # the last one ended the fit
    np.testing.assert_allclose(restored.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)

    # stripped to a plain Net of its own, and exported: the TFLite file runs in LiteRT
    ticket = tfl.strip_pruning(pruned)
    assert type(ticket) is Net and ticket is not net
    np.testing.assert_allclose(ticket.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
    report = tfl.export_tflite(pruned, tmp_path / "net.tflite", test_data=(x, y),
                               latency_runs=5, verbose=False)
    assert report.agreement == 1.0 and report.max_abs_diff < 1e-4
    assert report.layer_sparsity["head/kernel"] == pytest.approx(0.75, abs=0.02)


def test_layers_pruned_by_default():
    inputs = keras.Input((6, 8))
    x = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="attention")(inputs, inputs)
    x = keras.layers.Conv1D(5, 3, name="conv")(x)
    x = keras.layers.SeparableConv1D(4, 2, name="separable")(x)
    x = keras.layers.GRU(3, name="gru")(x)
    outputs = keras.layers.Dense(2, name="output")(x)
    model = keras.Model(inputs, outputs)
    schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=2)
    pruned = tfl.prune_with_rewinding(model, schedule)
    assert sorted(pruned.masks) == [
        "attention/attention_output/kernel", "attention/key/kernel", "attention/query/kernel",
        "attention/value/kernel", "conv/kernel", "gru/gru_cell/kernel",
        "gru/gru_cell/recurrent_kernel", "output/kernel", "separable/pointwise_kernel"]


def test_keras3_bad_input_names_the_fix(tmp_path):
    import tf_keras
    schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=4)
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(tfl.SettingError, match="not built.*call it on a batch"):
        tfl.prune_with_rewinding(unbuilt, schedule, checkpoint_dir=tmp_path / "a")
    no_kernel = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    with pytest.raises(tfl.SettingError, match="no prunable layer"):
        tfl.prune_with_rewinding(no_kernel, schedule, checkpoint_dir=tmp_path / "b")
    with pytest.raises(tfl.SettingError, match="prunable pattern 'nothing/\\*' matches no "
                                               "weight"):
        tfl.prune_with_rewinding(_net(), schedule, prunable=["nothing/*"],
                                 checkpoint_dir=tmp_path / "c")
    pruned = tfl.prune_with_rewinding(_net(), schedule, checkpoint_dir=tmp_path / "d")
    with pytest.raises(TypeError, match="optimizer Adam belongs to another Keras.*keras"
                                        ".optimizers"):
        pruned.compile(tf_keras.optimizers.Adam(), "mse")
    compile_for_classification(pruned)
    x, y = toy_data(8)
    with pytest.raises(TypeError, match="callback EarlyStopping belongs to another Keras"):
        pruned.fit(x, y, callbacks=[tf_keras.callbacks.EarlyStopping()], verbose=0)
    assert pruned.imp_step == 0
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_import_leaves_tf_keras_as_keras_3_even_after_a_tf_keras_model(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    code = (
        "import os, subprocess, sys\n"
        "import tensorflow as tf\n"
        "import tf_lottery as tfl\n"
        "after_import = tf.keras.__version__\n"
        "import tf_keras\n"
        "m = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])\n"
        "tfl.prune_with_rewinding(m, tfl.RewindingSchedule(rounds=1, steps_per_round=2))\n"
        "child = subprocess.run([sys.executable, '-c', 'import os; print(os.environ.get("
        "\"TF_USE_LEGACY_KERAS\"))'], capture_output=True, text=True).stdout.strip()\n"
        "print(after_import, tf.keras.__version__, os.environ.get('TF_USE_LEGACY_KERAS'), child)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    after_import, after_tf_keras, variable, child = done.stdout.split()[-4:]
    assert after_import.startswith("3.") and after_tf_keras.startswith("3.")
    assert variable == "None" and child == "None"


def test_the_jax_backend_runs_imp_and_the_search_exactly(tmp_path):
    pytest.importorskip("jax")
    script = ROOT / "tests" / "scripts" / "keras3_jax.py"
    report = json.loads(python_with(script, tmp_path, KERAS_BACKEND="jax"))
    assert report["backend"] == "jax"
    assert report["checked_steps"] == [4, 8] and report["imp_step"] == 12
    assert report["rewound_exactly"] and report["pruned_are_zero"]
    assert report["optimizer_reset"] and report["kept"] == pytest.approx(0.25, abs=0.02)
    assert report["late_rewind_exact"] and report["lr_rewind_kept_trained"]
    assert report["search_weights"] == [1.0, 0.5, 0.5, 0.5]
    assert report["saved_model_agreement"] == 1.0
    assert "needs the TensorFlow backend" in report["tflite_refusal"]
    assert "KERAS_BACKEND=tensorflow" in report["pai_refusal"]
    assert "snip, synflow" in report["pai_refusal"] and report["pai_wrote_nothing"]
