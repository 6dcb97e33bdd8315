"""Bad input gets an error that names the cause and the fix, and destroys nothing."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
import tf_keras as keras

import tf_lottery as tfl

from helpers import compile_for_classification, small_mlp

SCHEDULE = tfl.RewindingSchedule(rounds=2, steps_per_round=4, prune_rate=0.5)


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 4), "float32"))
    with pytest.raises(TypeError, match="subclassed tf_keras model.*Sequential.*Keras 3"):
        tfl.prune_with_rewinding(net, SCHEDULE)


def test_unbuilt_model_is_refused():
    with pytest.raises(ValueError, match="not built.*input shape"):
        tfl.prune_with_rewinding(keras.Sequential([keras.layers.Dense(2)]), SCHEDULE)


@pytest.mark.parametrize("exclude", [[], ["hidden", "output"]], ids=["no-kernel", "all-excluded"])
def test_model_without_prunable_layer_is_refused(exclude):
    if exclude:
        model = small_mlp()
    else:
        model = keras.Sequential([keras.Input((4, 4)), keras.layers.Flatten(),
                                  keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="no prunable layer"):
        tfl.prune_with_rewinding(model, SCHEDULE, exclude=exclude)


def test_unknown_layer_names_are_refused_with_a_suggestion():
    with pytest.raises(ValueError, match="exclude names layer 'outptu'.*Did you mean 'output'"):
        tfl.prune_with_rewinding(small_mlp(), SCHEDULE, exclude=["outptu"])
    schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=4, layer_rates={"hiden": 0.1})
    with pytest.raises(ValueError, match="layer_rates names layer 'hiden'.*'hidden'"):
        tfl.prune_with_rewinding(small_mlp(), schedule)
    with pytest.raises(TypeError, match=r"exclude=\['output'\]"):
        tfl.prune_with_rewinding(small_mlp(), SCHEDULE, exclude="output")


def test_unsupported_layer_with_weights_is_refused_unless_excluded(tmp_path):
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight("scale", shape=input_shape[-1:])

        def call(self, x):
            return x * self.scale

    def build():
        return keras.Sequential([keras.Input((4,)), Scale(name="scale"),
                                 keras.layers.Dense(2, name="dense")])

    with pytest.raises(ValueError, match=r"'scale' \(Scale\).*exclude=\['scale'\].*PrunableLayer"):
        tfl.prune_with_rewinding(build(), SCHEDULE)
    pruned = tfl.prune_with_rewinding(build(), SCHEDULE, exclude=["scale"],
                                      checkpoint_dir=tmp_path / "c")
    assert list(pruned.masks) == ["dense/kernel"]


def test_a_tfmot_schedule_is_refused():
    with pytest.raises(TypeError, match="RewindingSchedule"):
        tfl.prune_with_rewinding(small_mlp(), tfmot.sparsity.keras.ConstantSparsity(0.5, 0))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(rewind_to=-1), ValueError, "rewind_to must be one of"),
    (dict(rewind_to=1.5), ValueError, "rewind_to must be one of"),
    (dict(rewind_to=True), ValueError, "rewind_to must be one of"),
    (dict(rewind_to="start"), ValueError, "rewind_to must be one of"),
    (dict(rewind_to=4), ValueError, "beyond the first round"),
    (dict(scope="model"), ValueError, "scope must be one of"),
    (dict(criterion="smallest"), ValueError, "criterion must be one of"),
    (dict(block_size=0), ValueError, "block_size must be a whole number"),
    (dict(criterion="magnitude_incr"), ValueError, "criterion must be one of.*Did you mean "
                                                    "'magnitude_increase'"),
    (dict(prunable=["hidden/*"]), ValueError, "prunable= selects weights on Keras 3 models"),
    (dict(scop="layer"), TypeError, "unknown IMP setting 'scop'.*Did you mean 'scope'"),
])
def test_bad_settings_are_refused(kwargs, error, message, tmp_path):
    with pytest.raises(error, match=message):
        tfl.prune_with_rewinding(small_mlp(), SCHEDULE, checkpoint_dir=tmp_path / "c", **kwargs)
    assert not (tmp_path / "c").exists()  # nothing was written


def test_an_existing_rewind_checkpoint_is_never_overwritten(tmp_path):
    tfl.prune_with_rewinding(small_mlp(seed=1), SCHEDULE, checkpoint_dir=tmp_path / "c")
    before = {p.name: p.read_bytes() for p in (tmp_path / "c" / "step_0").iterdir()}
    with pytest.raises(FileExistsError, match="already holds a rewind point"):
        tfl.prune_with_rewinding(small_mlp(seed=2), SCHEDULE, checkpoint_dir=tmp_path / "c")
    after = {p.name: p.read_bytes() for p in (tmp_path / "c" / "step_0").iterdir()}
    assert after == before


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "other-model"])
def test_damaged_or_foreign_rewind_checkpoint_stops_training_before_it_starts(tmp_path, damage):
    pruned = compile_for_classification(
        tfl.prune_with_rewinding(small_mlp(), SCHEDULE, checkpoint_dir=tmp_path / "c"))
    step_0 = tmp_path / "c" / "step_0"
    data = next(step_0.glob("weights.data-*"))
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[:100])
    elif damage == "flip":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif damage == "delete":
        for path in step_0.iterdir():
            path.unlink()
    else:
        other = tfl.prune_with_rewinding(small_mlp(input_dim=10), SCHEDULE,
                                         checkpoint_dir=tmp_path / "other")
        assert other.checkpoint_dir.exists()
        for path in step_0.iterdir():
            path.unlink()
        for path in (tmp_path / "other" / "step_0").iterdir():
            (step_0 / path.name).write_bytes(path.read_bytes())
    masks_before = {k: v.copy() for k, v in pruned.masks.items()}
    with pytest.raises(tfl.RewindCheckpointError, match=str(step_0)):
        pruned.fit(np.zeros((8, 784), "float32"), np.zeros(8), batch_size=2, verbose=0)
    assert pruned.imp_step == 0
    assert all(np.array_equal(pruned.masks[k], m) for k, m in masks_before.items())


def test_diverged_round_stops_with_the_round_named_and_masks_untouched(tmp_path):
    pruned = tfl.prune_with_rewinding(small_mlp(), SCHEDULE, checkpoint_dir=tmp_path / "c")
    compile_for_classification(pruned, learning_rate=1e30)
    x = np.full((8, 784), 1e30, "float32")
    with pytest.raises(FloatingPointError, match="round 0 ended with non-finite weights"):
        pruned.fit(x, np.zeros(8), batch_size=2, epochs=1, verbose=0)
    assert pruned.masks.fraction_kept() == 1.0
    assert (tmp_path / "c" / "step_0" / "weights.index").is_file()


def test_steps_per_execution_must_put_round_ends_between_executions(tmp_path):
    pruned = tfl.prune_with_rewinding(small_mlp(), SCHEDULE, checkpoint_dir=tmp_path / "c")
    pruned.compile("adam", "sparse_categorical_crossentropy", steps_per_execution=3)
    x, y = np.zeros((10, 784), "float32"), np.zeros(10)  # 5 steps per epoch: 3 + 2
    with pytest.raises(ValueError, match="steps_per_execution=3 puts the round end.*at step 4 "
                                         "inside an execution"):
        pruned.fit(x, y, batch_size=2, verbose=0)
    assert pruned.imp_step == 0
    # 8 examples: executions of 3 and 1 steps, so the round end at step 4 is an epoch end
    pruned.fit(x[:8], y[:8], batch_size=2, verbose=0)
    assert pruned.imp_step == 4 and [r.round for r in pruned.rounds] == [0]


def test_steps_per_execution_from_an_odd_step_is_checked_at_the_real_boundaries(tmp_path):
    pruned = tfl.prune_with_rewinding(small_mlp(), SCHEDULE, checkpoint_dir=tmp_path / "c")
    pruned.compile("adam", "sparse_categorical_crossentropy")
    x, y = np.zeros((8, 784), "float32"), np.zeros(8)
    pruned.fit(x, y, batch_size=2, steps_per_epoch=3, verbose=0)
    assert pruned.imp_step == 3
    pruned.compile("adam", "sparse_categorical_crossentropy", steps_per_execution=2)
    # from step 3, executions of 2 steps end at 5, 7, ...: the round end at 4 would slip
    with pytest.raises(ValueError, match="steps_per_execution=2 puts the round end.*at step 4 "
                                         r"inside an execution \(this fit starts at step 3"):
        pruned.fit(x, y, batch_size=2, verbose=0)
    assert pruned.imp_step == 3 and pruned.rounds == []
