"""IMP through the one-call path on both engines (tf_keras with real TF-MOT wrappers, Keras 3
with mask constraints): real training, real checkpoints, exact zeros and rewinds."""

import warnings

import numpy as np
import pytest
import tensorflow as tf

import tf_lottery as tfl
from tf_lottery.core.masks import kept_count

from helpers import StepProbe, compile_for_classification, small_mlp, weights_by_path

BATCH = 60  # 600 training images: 10 steps per epoch


def _dataset(data):
    (x, y), _ = data
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)


def _masks(model):
    return {path: mask.copy() for path, mask in model.masks.items()}


def _fresh_optimizer_values(pruned, make_optimizer):
    fresh = make_optimizer()
    return [v.numpy() for v in pruned.engine.optimizer_variables(
        fresh, pruned.trainable_variables)]


@pytest.mark.parametrize("steps_per_round", [10, 15], ids=["round-ends-with-epoch", "mid-epoch"])
def test_rounds_prune_to_schedule_and_rewind_to_theta0_exactly(mnist_slice, tmp_path, K,
                                                               steps_per_round):
    model = small_mlp(seed=1, keras=K)
    theta0 = weights_by_path(model)
    schedule = tfl.RewindingSchedule(rounds=3, steps_per_round=steps_per_round,
                                     prune_rate=0.3, layer_rates={"output": 0.1})
    pruned = compile_for_classification(
        tfl.prune_with_rewinding(model, schedule, checkpoint_dir=tmp_path / "ckpt"))
    seen = {}
    fresh = _fresh_optimizer_values(pruned, lambda: K.optimizers.Adam(1e-3))

    def check(step):
        if step % steps_per_round or not 0 < step <= schedule.total_steps - steps_per_round:
            return
        round_index = step // steps_per_round
        masks = _masks(pruned)
        weights = weights_by_path(pruned)
        for path, mask in masks.items():
            layer = path.split("/")[0]
            expected = kept_count(mask.size, schedule.kept_fraction(layer, round_index))
            assert abs(int(mask.sum()) - expected) <= 1, (path, round_index)
            assert mask.sum() == pytest.approx(mask.size * (1 - schedule.rate(layer)) **
                                               round_index, abs=1)
        for path, value in weights.items():
            mask = masks.get(path, np.ones_like(value, dtype=bool))
            np.testing.assert_array_equal(value[mask], theta0[path][mask])  # bit for bit
            assert np.all(value[~mask] == 0)
        opt = pruned.optimizer
        assert int(opt.iterations.numpy()) == 0
        state = pruned.engine.optimizer_variables(opt, pruned.trainable_variables)
        for variable, value in zip(state, fresh):  # Adam's m and v, and the step, reset
            np.testing.assert_array_equal(variable.numpy(), value)
        if seen:
            previous = seen[max(seen)]
            assert all(not np.any(masks[p] & ~previous[p]) for p in masks)  # nested
        seen[round_index] = masks

    pruned.fit(_dataset(mnist_slice).repeat(), steps_per_epoch=10,
               epochs=schedule.total_steps // 10, verbose=0, callbacks=[StepProbe(check)])
    assert sorted(seen) == [1, 2, 3]
    # after training, every pruned weight is exactly zero
    final = weights_by_path(pruned)
    for path, mask in _masks(pruned).items():
        assert np.all(final[path][~mask] == 0)
        assert np.any(final[path][mask] != theta0[path][mask])  # and the last round trained
    assert [r.round for r in pruned.rounds] == [0, 1, 2, 3]
    total = sum(mask.size for mask in seen[1].values())
    for summary in pruned.rounds:
        expected = sum(kept_count(mask.size, schedule.kept_fraction(path.split("/")[0],
                                                                    summary.round))
                       for path, mask in seen[1].items())
        assert summary.weights_remaining * total == pytest.approx(expected, abs=2)


def test_theta0_checkpoint_on_disk_is_the_initial_weights(tmp_path, K):
    model = small_mlp(seed=2, keras=K)
    theta0 = weights_by_path(model)
    schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=5)
    pruned = tfl.prune_with_rewinding(model, schedule, checkpoint_dir=tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "step_0" / "weights.index").is_file()
    point = tfl.RewindPoint.load(tmp_path / "ckpt" / "step_0", pruned)
    assert point.step == 0 and set(point.values) == set(theta0)
    for path, value in theta0.items():
        np.testing.assert_array_equal(point.values[path], value)
    # and what TensorFlow's own reader finds there is the same values
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt" / "step_0" / "weights"))
    stored = sorted(reader.get_tensor(k).tobytes() for k, shape in
                    reader.get_variable_to_shape_map().items() if k.startswith("weights/"))
    assert stored == sorted(v.tobytes() for v in theta0.values())


def test_late_rewinding_restores_iteration_k_and_resumes_its_schedule_there(mnist_slice,
                                                                             tmp_path, K):
    """Rounds after the first train steps k to T again (Frankle et al. 2020, open_lth): the
    weights of iteration k, the optimizer's step count and learning-rate schedule at k."""
    model = small_mlp(seed=3, keras=K)
    schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=10, prune_rate=0.5)
    pruned = tfl.prune_with_rewinding(model, schedule, rewind_to=3, checkpoint_dir=tmp_path / "c")
    decay = K.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=2, decay_rate=0.5)
    pruned.compile(K.optimizers.Adam(decay),
                   K.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert pruned.total_steps == 10 + 7 + 7
    at_k, rates = {}, {}

    def check(step):
        if step == 3:
            at_k.update(weights_by_path(pruned))
        if step in (10, 17):  # round ends: 10, then 7 steps a round
            masks, weights = _masks(pruned), weights_by_path(pruned)
            for path, value in weights.items():
                mask = masks.get(path, np.ones_like(value, dtype=bool))
                np.testing.assert_array_equal(value[mask], at_k[path][mask])
                assert np.all(value[~mask] == 0)
            rates[step] = (int(pruned.optimizer.iterations.numpy()),
                           float(decay(pruned.optimizer.iterations)))

    pruned.fit(_dataset(mnist_slice).repeat(), steps_per_epoch=8, epochs=3, verbose=0,
               callbacks=[StepProbe(check)])
    assert rates == {10: (3, pytest.approx(1e-2 / 2 ** 1.5)),
                     17: (3, pytest.approx(1e-2 / 2 ** 1.5))}  # the rate of step 3
    assert [(r.round, r.step) for r in pruned.rounds] == [(0, 10), (1, 17), (2, 24)]
    assert tfl.RewindPoint.load(tmp_path / "c" / "step_3", pruned).step == 3
    theta0 = tfl.RewindPoint.load(tmp_path / "c" / "step_0", pruned).values
    assert any(not np.array_equal(theta0[p], at_k[p]) for p in at_k)


class _TrainedWeights(tfl.RoundCallback):
    def __init__(self):
        super().__init__()
        self.by_round = {}

    def on_round_end(self, round_index, logs):
        self.by_round[round_index] = weights_by_path(self.model)
        assert 0 < logs["weights_remaining"] <= 1 and np.isfinite(logs["loss"])
        assert set(self.model.masks) and self.model.imp_step >= 0


@pytest.mark.parametrize("rewind_to, restarts_schedule", [(None, False), ("lr", True)])
def test_fine_tuning_and_lr_rewinding_keep_the_trained_weights(mnist_slice, tmp_path, K,
                                                               rewind_to, restarts_schedule):
    schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=10, prune_rate=0.5)
    pruned = compile_for_classification(tfl.prune_with_rewinding(
        small_mlp(seed=4, keras=K), schedule, rewind_to=rewind_to, checkpoint_dir=tmp_path / "c"))
    trained = _TrainedWeights()

    def check(step):
        if step in (10, 20):
            masks, weights = _masks(pruned), weights_by_path(pruned)
            before = trained.by_round[step // 10 - 1]
            for path, value in weights.items():
                mask = masks.get(path, np.ones_like(value, dtype=bool))
                np.testing.assert_array_equal(value[mask], before[path][mask])
                assert np.all(value[~mask] == 0)
            expected_iterations = 0 if restarts_schedule else step
            assert int(pruned.optimizer.iterations.numpy()) == expected_iterations

    pruned.fit(_dataset(mnist_slice), epochs=3, verbose=0,
               callbacks=[trained, StepProbe(check)])
    assert sorted(trained.by_round) == [0, 1, 2]


def _conv_model(keras, kind):
    keras.utils.set_random_seed(5)
    layers = keras.layers
    if kind == "conv1d":
        inputs = keras.Input((12, 3))
        x = layers.Conv1D(4, 3, name="conv")(inputs)
    elif kind == "conv2d":
        inputs = keras.Input((8, 8, 3))
        x = layers.Conv2D(4, 3, name="conv")(inputs)
    elif kind == "conv3d":
        inputs = keras.Input((5, 5, 5, 2))
        x = layers.Conv3D(4, 3, name="conv")(inputs)
    elif kind == "separable":
        inputs = keras.Input((8, 8, 3))
        x = layers.SeparableConv2D(4, 3, name="conv")(inputs)
    elif kind == "depthwise":  # TF-MOT leaves depthwise kernels dense; the conv after it prunes
        inputs = keras.Input((8, 8, 3))
        x = layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(inputs)
        x = layers.Conv2D(4, 1, name="conv")(x)
    elif kind == "transpose":
        inputs = keras.Input((6, 6, 3))
        x = layers.Conv2DTranspose(4, 3, name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(3, name="output")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("kind", ["conv1d", "conv2d", "conv3d", "separable", "depthwise",
                                  "transpose"])
def test_conv_models_with_batchnorm_rewind_biases_and_statistics(kind, tmp_path, K):
    model = _conv_model(K, kind)
    theta0 = weights_by_path(model)
    assert "bn/moving_mean" in theta0 and "conv/bias" in theta0
    schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=4, prune_rate=0.5)
    pruned = compile_for_classification(
        tfl.prune_with_rewinding(model, schedule, checkpoint_dir=tmp_path / "c"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32,) + tuple(model.input_shape[1:])).astype("float32")
    y = rng.integers(0, 3, size=32)
    rewound = {}

    def check(step):
        if step == 4:
            rewound.update(weights_by_path(pruned), masks=_masks(pruned))

    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[StepProbe(check)])
    masks = rewound.pop("masks")
    assert "output/kernel" in masks and any(p.startswith("conv/") for p in masks)
    for path, value in rewound.items():
        mask = masks.get(path, np.ones_like(value, dtype=bool))
        np.testing.assert_array_equal(value[mask], theta0[path][mask])  # BN stats, biases too
    for mask in masks.values():
        assert mask.sum() == kept_count(mask.size, 0.5)
    final = weights_by_path(pruned)
    assert not np.array_equal(final["bn/moving_mean"], theta0["bn/moving_mean"])
    assert all(np.all(final[p][~m] == 0) for p, m in _masks(pruned).items())


def test_recurrent_and_embedding_layers_are_pruned(tmp_path, K):
    keras = K
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((7,), dtype="int32"),
                              keras.layers.Embedding(50, 8, name="embed"),
                              keras.layers.LSTM(6, name="lstm"),
                              keras.layers.Dense(2, name="output")])
    schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=2, prune_rate=0.25)
    pruned = compile_for_classification(
        tfl.prune_with_rewinding(model, schedule, checkpoint_dir=tmp_path / "c"))
    x = np.random.default_rng(0).integers(0, 50, size=(16, 7))
    pruned.fit(x, np.zeros(16, dtype=int), batch_size=8, epochs=2, verbose=0)
    sparsity = pruned.masks.sparsity()
    cell = "lstm/" if pruned.engine.name == "tf_keras" else "lstm/lstm_cell/"  # Keras 3's cell
    assert set(sparsity) == {"embed/embeddings", f"{cell}kernel", f"{cell}recurrent_kernel",
                             "output/kernel"}
    assert all(s == pytest.approx(0.25, abs=0.02) for s in sparsity.values())


def test_global_scope_one_threshold_across_layers(mnist_slice, tmp_path, K):
    schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=10, prune_rate=0.6)
    pruned = compile_for_classification(tfl.prune_with_rewinding(
        small_mlp(seed=7, keras=K), schedule, scope="global", checkpoint_dir=tmp_path / "c"))
    trained = _TrainedWeights()
    pruned.fit(_dataset(mnist_slice), epochs=2, verbose=0, callbacks=[trained])
    masks = _masks(pruned)
    weights = trained.by_round[0]
    kept = np.concatenate([np.abs(weights[p][m]) for p, m in masks.items()])
    dropped = np.concatenate([np.abs(weights[p][~m]) for p, m in masks.items()])
    assert kept.min() >= dropped.max()
    assert sum(int(m.sum()) for m in masks.values()) == \
        sum(kept_count(m.size, 0.4) for m in masks.values())
    sparsity = pruned.masks.sparsity()
    assert abs(sparsity["hidden/kernel"] - sparsity["output/kernel"]) > 0.01


def test_block_strategy_and_excluded_layers(mnist_slice, tmp_path, K):
    model = small_mlp(seed=8, keras=K)
    theta0 = weights_by_path(model)
    schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=10, prune_rate=0.5)
    pruned = compile_for_classification(tfl.prune_with_rewinding(
        model, schedule, block_size=4, exclude=["output"], checkpoint_dir=tmp_path / "c"))
    if pruned.engine.name == "tf_keras":
        assert [type(layer).__name__ for layer in pruned.layers[1:]] == \
            ["PruneLowMagnitude", "Dense"]
    pruned.fit(_dataset(mnist_slice), epochs=3, verbose=0)
    masks = _masks(pruned)
    assert list(masks) == ["hidden/kernel"]
    blocks = masks["hidden/kernel"].reshape(784 // 4, 4, 32)
    assert np.all(blocks.all(axis=1) == blocks.any(axis=1))
    assert masks["hidden/kernel"].mean() == pytest.approx(0.25, abs=1e-3)
    # the excluded layer stays dense but trains and rewinds like every other weight
    assert np.all(weights_by_path(pruned)["output/kernel"] != 0)
    assert not np.array_equal(weights_by_path(pruned)["output/kernel"], theta0["output/kernel"])


def test_strip_pruning_gives_a_plain_model_with_the_same_predictions_and_zeros(mnist_slice,
                                                                                tmp_path, K):
    schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=10, prune_rate=0.7)
    pruned = compile_for_classification(tfl.prune_with_rewinding(
        small_mlp(seed=9, keras=K), schedule, checkpoint_dir=tmp_path / "c"))
    pruned.fit(_dataset(mnist_slice), epochs=2, verbose=0)
    ticket = tfl.strip_pruning(pruned)
    assert not isinstance(ticket, tfl.LotteryModel)
    assert [type(layer).__name__ for layer in ticket.layers if type(layer).__name__ !=
            "InputLayer"] == ["Dense", "Dense"]
    assert isinstance(ticket, K.Model)
    (_, _), (x_test, _) = mnist_slice
    np.testing.assert_array_equal(ticket.predict(x_test, verbose=0),
                                  pruned.predict(x_test, verbose=0))
    masks = _masks(pruned)
    ticket_weights = weights_by_path(ticket)
    for path, mask in masks.items():
        assert np.all(ticket_weights[path][~mask] == 0) and np.all(ticket_weights[path][mask] != 0)
    # the ticket owns its weights: more training of the wrapped model leaves it alone
    pruned.fit(_dataset(mnist_slice), epochs=1, verbose=0)
    for path, value in weights_by_path(ticket).items():
        np.testing.assert_array_equal(value, ticket_weights[path])


@pytest.mark.parametrize("make_optimizer", [
    lambda k: k.optimizers.Adagrad(0.05, initial_accumulator_value=0.1),
    lambda k: k.optimizers.SGD(0.05, momentum=0.9),
    lambda k: k.optimizers.legacy.Adam(1e-3) if k.__name__ == "tf_keras" else
    k.optimizers.AdamW(1e-3),
], ids=["adagrad", "sgd-momentum", "legacy-adam-or-adamw"])
def test_each_round_starts_with_a_fresh_optimizer(mnist_slice, tmp_path, K, make_optimizer):
    schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=10, prune_rate=0.5)
    pruned = tfl.prune_with_rewinding(small_mlp(seed=12, keras=K), schedule,
                                      checkpoint_dir=tmp_path / "c")
    pruned.compile(make_optimizer(K), K.losses.SparseCategoricalCrossentropy(from_logits=True))
    fresh_values = _fresh_optimizer_values(pruned, lambda: make_optimizer(K))
    states = {}

    def check(step):
        if step in (9, 10):
            states[step] = [v.numpy() for v in pruned.engine.optimizer_variables(
                pruned.optimizer, pruned.trainable_variables)]

    pruned.fit(_dataset(mnist_slice), epochs=2, verbose=0, callbacks=[StepProbe(check)])
    assert any(not np.array_equal(a, b) for a, b in zip(states[9], fresh_values))  # trained
    assert len(states[10]) == len(fresh_values)
    for value, expected in zip(states[10], fresh_values):
        np.testing.assert_array_equal(value, expected)


def test_training_stopped_mid_epoch_counts_real_steps_and_resumes_exactly(mnist_slice, tmp_path,
                                                                          K):
    class StopAt(tfl.RoundCallback):
        def __init__(self, at):
            super().__init__()
            self.at = at

        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 == self.at:
                self.model.stop_training = True

    model = small_mlp(seed=13, keras=K)
    theta0 = weights_by_path(model)
    schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=10, prune_rate=0.5)
    pruned = compile_for_classification(
        tfl.prune_with_rewinding(model, schedule, checkpoint_dir=tmp_path / "c"))
    pruned.fit(_dataset(mnist_slice), epochs=3, verbose=0, callbacks=[StopAt(5)])
    assert pruned.imp_step == 5 and pruned.rounds == [] and pruned.masks.fraction_kept() == 1
    rewound = {}

    def check(step):
        if step == 5:  # 5 steps into this fit: the round ended after step 10 in all
            rewound.update(weights_by_path(pruned), masks=_masks(pruned))

    pruned.fit(_dataset(mnist_slice), epochs=1, verbose=0, callbacks=[StepProbe(check)])
    assert pruned.imp_step == 15 and [r.round for r in pruned.rounds] == [0]
    assert pruned.rounds[0].step == 10
    masks = rewound.pop("masks")
    for path, mask in masks.items():
        assert mask.sum() == kept_count(mask.size, 0.5)
        np.testing.assert_array_equal(rewound[path][mask], theta0[path][mask])


def _shared_layer_model(keras, topology):
    keras.utils.set_random_seed(14)
    a, b = keras.Input((8,), name="a"), keras.Input((8,), name="b")
    if topology == "shared-on-two-inputs":
        shared = keras.layers.Dense(6, name="shared")
        hidden = keras.layers.Concatenate()([shared(a), shared(b)])
    elif topology == "applied-three-times":
        shared = keras.layers.Dense(8, name="shared")
        hidden = shared(shared(shared(a)))
        b = None
    else:  # a nested model, itself applied to two inputs
        inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, name="shared")],
                                 name="inner")
        hidden = keras.layers.Concatenate()([inner(a), inner(b)])
    outputs = keras.layers.Dense(2, name="output")(hidden)
    return keras.Model([a] if b is None else [a, b], outputs)


class _TrainedByPath(tfl.RoundCallback):
    """The masked weights by tf_lottery path at every round end, before the rewind."""

    def __init__(self):
        super().__init__()
        self.by_round = {}

    def on_round_end(self, round_index, logs):
        self.by_round[round_index] = self.model.masked_weights()


@pytest.mark.parametrize("topology", ["shared-on-two-inputs", "applied-three-times",
                                      "shared-in-nested"])
def test_steps_are_counted_once_per_optimizer_step_whatever_the_topology(tmp_path, K, topology):
    model = _shared_layer_model(K, topology)
    schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=4, prune_rate=0.5)
    pruned = compile_for_classification(
        tfl.prune_with_rewinding(model, schedule, checkpoint_dir=tmp_path / "c"))
    theta0 = tfl.RewindPoint.load(tmp_path / "c" / "step_0", pruned).values
    trained = _TrainedByPath()
    x = np.random.default_rng(0).random((16, 8), dtype=np.float32)
    pruned.fit([x] * len(model.inputs), np.zeros(16), batch_size=2, epochs=1, verbose=0,
               callbacks=[trained])
    assert pruned.imp_step == 8
    assert [(r.round, r.step) for r in pruned.rounds] == [(0, 4), (1, 8)]
    # round 1 trained 4 steps from θ0, so round 2's masks come from trained weights, not
    # from the rewound θ0 magnitudes
    for path, value in trained.by_round[1].items():
        keep = value != 0
        assert not np.array_equal(value[keep], theta0[path][keep]), path
    assert pruned.masks.fraction_kept() == pytest.approx(0.25, abs=0.02)


def test_magnitude_increase_compares_the_trained_weights_with_theta0(mnist_slice, tmp_path, K):
    schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=10, prune_rate=0.5)
    pruned = compile_for_classification(tfl.prune_with_rewinding(
        small_mlp(seed=15, keras=K), schedule, criterion="magnitude_increase",
        checkpoint_dir=tmp_path / "c"))
    theta0 = tfl.RewindPoint.load(tmp_path / "c" / "step_0", pruned).values
    trained = _TrainedByPath()
    pruned.fit(_dataset(mnist_slice), epochs=1, verbose=0, callbacks=[trained])
    for path, mask in pruned.masks.items():
        growth = np.abs(trained.by_round[0][path].astype(np.float64)) - \
            np.abs(theta0[path].astype(np.float64))
        order = np.argsort(-growth.ravel(), kind="stable")[:kept_count(growth.size, 0.5)]
        expected = np.zeros(growth.size, bool)
        expected[order] = True
        np.testing.assert_array_equal(mask, expected.reshape(mask.shape))


def _round_start_exact(pruned, theta0):
    masks, weights = _masks(pruned), weights_by_path(pruned)
    for path, value in weights.items():
        keep = masks.get(path, np.ones_like(value, dtype=bool))
        np.testing.assert_array_equal(value[keep], theta0[path][keep])
        assert np.all(value[~keep] == 0)


def test_a_gradient_tape_loop_runs_rounds_through_custom_training_only(mnist_slice, tmp_path,
                                                                        K):
    """TF-MOT's guide trains in a GradientTape loop: uncounted, it would never prune, so it
    is refused at its first step; inside custom_training, step() ends the rounds."""
    (x, y), _ = mnist_slice
    x, y = x[:60], y[:60]
    schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=3, prune_rate=0.5)
    loss_fn = K.losses.SparseCategoricalCrossentropy(from_logits=True)

    def update(pruned, optimizer):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, pruned(x, training=True))
        grads = tape.gradient(loss, pruned.trainable_variables)
        optimizer.apply_gradients(zip(grads, pruned.trainable_variables))
        return float(loss)

    pruned = tfl.prune_with_rewinding(small_mlp(seed=16, keras=K), schedule,
                                      checkpoint_dir=tmp_path / "a")
    with pytest.raises(tfl.SettingError, match="outside fit.*custom_training"):
        update(pruned, K.optimizers.Adam(1e-3))
    model = small_mlp(seed=17, keras=K)
    theta0 = weights_by_path(model)
    pruned = tfl.prune_with_rewinding(model, schedule, checkpoint_dir=tmp_path / "b")
    optimizer = K.optimizers.Adam(1e-3)
    steps = 0
    with pruned.custom_training(optimizer) as rounds:
        while not rounds.finished:
            rounds.step({"loss": update(pruned, optimizer)})
            steps += 1
            if steps in (3, 6):
                _round_start_exact(pruned, theta0)
                assert int(optimizer.iterations.numpy()) == 0
    assert steps == 9 and [(r.round, r.step) for r in pruned.rounds] == [(0, 3), (1, 6), (2, 9)]
    assert pruned.rounds[1].metrics["loss"] > 0
    assert pruned.masks.fraction_kept() == pytest.approx(0.25, abs=0.01)
    with pytest.raises(tfl.SettingError, match="outside fit"):  # the block has ended
        update(pruned, optimizer)


def test_train_on_batch_counts_steps_and_ends_rounds(mnist_slice, tmp_path, K):
    (x, y), _ = mnist_slice
    model = small_mlp(seed=18, keras=K)
    theta0 = weights_by_path(model)
    schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=3, prune_rate=0.5)
    pruned = compile_for_classification(
        tfl.prune_with_rewinding(model, schedule, checkpoint_dir=tmp_path / "c"))
    for step in range(1, 8):
        pruned.train_on_batch(x[:60], y[:60])
        if step in (3, 6):
            _round_start_exact(pruned, theta0)
    assert pruned.imp_step == 7 and [(r.round, r.step) for r in pruned.rounds] == [(0, 3), (1, 6)]


def test_a_fit_that_cuts_a_round_short_or_overruns_warns_and_epochs_are_exact(mnist_slice,
                                                                              tmp_path, K):
    """Issue 31, item 5: 52 steps of rounds in epochs of 10 steps."""
    (x, y), _ = mnist_slice
    x, y = x[:100], y[:100]  # 10 steps per epoch at batch 10
    schedule = tfl.RewindingSchedule(rounds=3, steps_per_round=13)

    def wrapped(name):
        return compile_for_classification(tfl.prune_with_rewinding(
            small_mlp(seed=3, keras=K), schedule, checkpoint_dir=tmp_path / name))
    pruned = wrapped("uneven")
    assert pruned.epochs(13) == 4 and pruned.epochs(4) == 13
    with pytest.raises(tfl.SettingError, match=r"epochs=13, steps_per_epoch=4\)"):
        pruned.epochs(10)
    with pytest.warns(UserWarning, match=r"ended at step 50, inside round 3, which trained 11 "
                      r"of its 13 steps .*pruned.epochs\(10\) gives the epochs"):
        pruned.fit(x, y, batch_size=10, epochs=5, verbose=0)  # the README's old recipe
    assert [r.round for r in pruned.rounds] == [0, 1, 2]
    with pytest.warns(UserWarning, match="trained the final round 8 steps longer than the "
                      "others: it ended at step 60, the rounds at step 52"):
        pruned.fit(x, y, batch_size=10, epochs=1, verbose=0)
    assert [r.round for r in pruned.rounds] == [0, 1, 2, 3]

    exact = wrapped("exact")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exact.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(10).repeat(), epochs=13,
                  steps_per_epoch=4, verbose=0)
    assert not [w for w in caught if "pruned.epochs" in str(w.message)]
    assert exact.imp_step == 52 and [r.round for r in exact.rounds] == [0, 1, 2, 3]
    assert exact.epochs(4) == 0
