"""Saved wrapped models load back with their RewindingSchedule and go on with the rounds."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

import tf_lottery as tfl
from tf_lottery.engines.tfmot import RoundsSchedule

from helpers import KERASES, compile_for_classification, small_mlp, weights_by_path


def _half_trained(keras, mnist_slice, tmp_path):
    """A LotteryModel stopped after round 0 ended (its masks set, θ0 restored)."""
    (x, y), _ = mnist_slice
    schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=10, prune_rate=0.5,
                                     layer_rates={"output": 0.2})
    pruned = compile_for_classification(tfl.prune_with_rewinding(
        small_mlp(seed=11, keras=keras), schedule, checkpoint_dir=tmp_path / "c"))
    pruned.fit(x, y, batch_size=60, epochs=1, verbose=0)
    assert pruned.imp_step == 10 and pruned.masks.fraction_kept() < 1
    return pruned, (x, y)


@pytest.fixture
def half_trained(mnist_slice, tmp_path):
    return _half_trained(keras, mnist_slice, tmp_path)


@pytest.mark.parametrize("engine, fmt", [("tf_keras", "keras"), ("tf_keras", "savedmodel"),
                                         ("tf_keras", "h5"), ("keras3", "keras")])
def test_wrapped_model_round_trip_keeps_schedule_masks_and_position(mnist_slice, tmp_path,
                                                                    engine, fmt):
    pruned, (x, y) = _half_trained(KERASES[engine], mnist_slice, tmp_path)
    path = tmp_path / ("savedmodel" if fmt == "savedmodel" else f"model.{fmt}")
    pruned.save(path, save_format="tf") if fmt == "savedmodel" else pruned.save(path)

    restored = tfl.load_model(path)
    assert isinstance(restored, tfl.LotteryModel) and restored.engine is pruned.engine
    if engine == "tf_keras":
        wrappers = [layer for layer in restored.layers if hasattr(layer, "pruning_schedule")]
        assert len(wrappers) == 2
        assert all(w.pruning_schedule.schedule == pruned.schedule for w in wrappers)  # not str
    assert restored.schedule == pruned.schedule and restored.settings == pruned.settings
    assert restored.imp_step == 10 and restored.checkpoint_dir == pruned.checkpoint_dir
    assert restored.rounds == pruned.rounds and [r.round for r in restored.rounds] == [0]
    for key, mask in pruned.masks.items():
        np.testing.assert_array_equal(restored.masks[key], mask)
    for key, value in weights_by_path(pruned).items():
        np.testing.assert_array_equal(weights_by_path(restored)[key], value)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), pruned.predict(x, verbose=0))

    # the restored model goes on: its next round end prunes the round-1 survivors and rewinds
    theta0 = tfl.RewindPoint.load(pruned.checkpoint_dir / "step_0", restored).values
    round_1 = {k: m.copy() for k, m in restored.masks.items()}
    restored.fit(x, y, batch_size=60, epochs=1, verbose=0)
    assert restored.imp_step == 20
    for key, mask in restored.masks.items():
        assert not np.any(mask & ~round_1[key])
        assert mask.sum() < round_1[key].sum()
        np.testing.assert_array_equal(weights_by_path(restored)[key][mask], theta0[key][mask])


def test_tfmot_prune_scope_alone_loses_the_schedule(tmp_path):
    """The trap tf_lottery's scope exists for: TF-MOT hands a custom schedule back as a str."""
    schedule = RoundsSchedule(tfl.RewindingSchedule(rounds=2, steps_per_round=10))
    plain = tfmot.sparsity.keras.prune_low_magnitude(small_mlp(), pruning_schedule=schedule)
    plain.save(tmp_path / "plain.keras")
    with tfmot.sparsity.keras.prune_scope():
        loaded = keras.models.load_model(tmp_path / "plain.keras")
    assert isinstance(loaded.layers[0].pruning_schedule, str)
    with tfl.custom_object_scope():
        loaded = keras.models.load_model(tmp_path / "plain.keras")
    assert loaded.layers[0].pruning_schedule == schedule


def test_tfmot_strip_pruning_gives_a_plain_model_that_loads_without_tf_lottery(half_trained,
                                                                                 tmp_path):
    """Issue 31, item 14: TF-MOT's own strip of a LotteryModel, saved as .h5 (its guides')."""
    pruned, (x, _) = half_trained
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    assert type(stripped).__name__ == "Functional"  # a plain tf_keras model
    assert [type(layer).__name__ for layer in stripped.layers] == ["InputLayer", "Dense",
                                                                   "Dense"]
    stripped.save(tmp_path / "ticket.h5")
    loaded = keras.models.load_model(tmp_path / "ticket.h5")  # no tf_lottery scope
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
    kernels = {w.name.split("/")[0]: w.numpy() for w in loaded.weights if "kernel" in w.name}
    for path, mask in pruned.masks.items():
        assert np.all(kernels[path.split("/")[0]][~mask] == 0)


def test_savedmodel_serves_without_tf_lottery(half_trained, tmp_path):
    pruned, (x, _) = half_trained
    pruned.save(tmp_path / "sm", save_format="tf")
    served = tf.saved_model.load(str(tmp_path / "sm"))
    out = served.signatures["serving_default"](tf.constant(x[:5]))
    np.testing.assert_allclose(list(out.values())[0].numpy(), pruned.predict(x[:5], verbose=0),
                               rtol=1e-6, atol=1e-6)
