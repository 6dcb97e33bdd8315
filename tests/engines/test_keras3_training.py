"""The user's training, untouched, under IMP on Keras 3's TensorFlow backend: a subclassed
model's own train_step and compute_loss, optimizer features (EMA, gradient accumulation,
loss scaling, weight decay, clipping), models without a config, custom training loops.
The JAX backend runs the same checks in ``scripts/keras3_jax_training.py``."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_lottery as tfl
from tf_lottery.engines import canonical_names, engine_named
from tf_lottery.engines.keras3 import MaskConstraint
from tf_lottery.runs.rundir import RunDirectory

from helpers import ROOT, StepProbe, python_with, toy_data

ENGINE = engine_named("keras3")
SCHEDULE = tfl.RewindingSchedule(rounds=2, steps_per_round=4, prune_rate=0.5)


class Net(keras.Model):
    """A subclassed model without get_config (its argument is not serializable), with its
    own train_step (a counter, an extra loss term in its logs) and compute_loss (+1000)."""

    def __init__(self, activation):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation=activation, name="hidden")
        self.head = keras.layers.Dense(3, name="head")
        self.steps_run = keras.Variable(0, dtype="int32", trainable=False, name="steps_run")
        self.penalty = keras.metrics.Mean(name="penalty")

    def call(self, x, training=None):
        return self.head(self.hidden(x))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x, y, y_pred, sample_weight, training) + 1000.0

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            penalty = 1e-3 * tf.reduce_sum(tf.square(self.hidden.kernel))
            loss = self.compute_loss(x, y, y_pred) + penalty
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.steps_run.assign_add(1)
        self.penalty.update_state(penalty)
        return {**self.compute_metrics(x, y, y_pred), "total": loss,
                "penalty": self.penalty.result()}


def _net(seed=0):
    keras.utils.set_random_seed(seed)
    net = Net(lambda t: keras.activations.relu(t))
    net(np.zeros((1, 12), "float32"))
    return net


def _weights(model):
    return {path: v.numpy().copy() for path, v in ENGINE.model_weights(model).items()}


def _assert_round_start(pruned, theta0, optimizer=None):
    """θ0 bit for bit under the masks, pruned weights exactly 0, a fresh optimizer."""
    masks, now = pruned.masks, _weights(pruned)
    for path, value in now.items():
        keep = masks[path] if path in masks else np.ones_like(value, bool)
        np.testing.assert_array_equal(value[keep], theta0[path][keep])
        assert np.all(value[~keep] == 0), path
    assert ENGINE.optimizer_step(optimizer or pruned.optimizer) == 0


def _assert_zeros(pruned):
    now = _weights(pruned)
    for path, keep in pruned.masks.items():
        assert np.all(now[path][~keep] == 0), path


def test_a_subclassed_model_s_own_step_runs_and_strips_and_exports_without_a_config(tmp_path):
    net = _net()
    assert not ENGINE.can_copy(net)
    theta0 = _weights(net)
    pruned = tfl.prune_with_rewinding(net, SCHEDULE, checkpoint_dir=tmp_path / "c")
    pruned.compile(keras.optimizers.Adam(1e-2),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    starts, counted = [], []

    def check(batch):  # round ends after 4 and 8 steps, inside the 6-batch epochs
        counted.append(int(net.steps_run.numpy()))
        if batch in (4, 8):
            _assert_round_start(pruned, theta0)
            starts.append(batch)

    x, y = toy_data()
    history = pruned.fit(x, y, batch_size=10, epochs=2, verbose=0,
                         callbacks=[StepProbe(check)])
    # its step ran on every batch; its counter is model state, rewound with θ0
    assert starts == [4, 8] and counted == [0, 1, 2, 3] * 3 + [4] and pruned.imp_step == 12
    assert [(r.round, r.step) for r in pruned.rounds] == [(0, 4), (1, 8), (2, 12)]
    assert min(history.history["total"]) > 1000  # its compute_loss
    assert all(p > 0 for p in history.history["penalty"])  # its metric
    assert pruned.masks.fraction_kept() == pytest.approx(0.25, abs=0.02)
    _assert_zeros(pruned)
    expected = pruned.predict(x, verbose=0)

    report = tfl.export_tflite(pruned, tmp_path / "net.tflite", test_data=(x, y),
                               latency_runs=5, verbose=False)
    assert report.agreement == 1.0 and report.max_abs_diff < 1e-4
    assert report.layer_sparsity["head/kernel"] == pytest.approx(0.75, abs=0.02)
    # no config, so no copy: strip gives the network itself, detached from IMP
    ticket = tfl.strip_pruning(pruned)
    assert ticket is net
    assert not any(isinstance(v.constraint, MaskConstraint) for v in net.weights)
    np.testing.assert_allclose(ticket.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(tfl.SettingError, match="was stripped"):
        pruned.fit(x, y, verbose=0)
    saved = tfl.export_saved_model(ticket, tmp_path / "net_saved", test_data=(x, y),
                                   verbose=False)
    assert saved.agreement == 1.0 and saved.layer_sparsity["head/kernel"] > 0.7


def _optimizer(feature):
    return {"ema": lambda: keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.5),
            "accumulation": lambda: keras.optimizers.Adam(1e-2, gradient_accumulation_steps=2),
            "loss_scale": lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-2)),
            "weight_decay": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.5),
            "clipping": lambda: keras.optimizers.SGD(0.1, momentum=0.9, clipnorm=0.1),
            }[feature]()


@pytest.mark.parametrize("feature", ["ema", "accumulation", "loss_scale", "weight_decay",
                                     "clipping"])
@pytest.mark.parametrize("fits", ["one_fit", "a_fit_per_round"])
def test_optimizer_features_compose_with_imp(tmp_path, feature, fits):
    net = _net(seed=1)
    theta0 = _weights(net)
    pruned = tfl.prune_with_rewinding(net, SCHEDULE, checkpoint_dir=tmp_path / "c")
    pruned.compile(_optimizer(feature),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches_per_step = 2 if feature == "accumulation" else 1
    round_batches = SCHEDULE.steps_per_round * batches_per_step
    starts, previous = [], {}

    def check(batch):
        if batch % round_batches == 0 and 0 < batch < pruned.total_steps * batches_per_step:
            _assert_round_start(pruned, theta0)
            masks = pruned.masks
            assert all(not np.any(masks[p] & ~previous[p]) for p in previous)  # nested
            previous.update(masks)
            starts.append(batch // round_batches)

    x, y = toy_data(80)
    if fits == "one_fit":  # 6 batches an epoch: the round ends fall inside epochs
        pruned.fit(x[:60], y[:60], batch_size=10, epochs=2 * batches_per_step, verbose=0,
                   callbacks=[StepProbe(check)])
        assert starts == [1, 2]
    else:  # each round a fit of its own: the round ends with the fit
        for round_index in range(SCHEDULE.rounds + 1):
            pruned.fit(x[:round_batches * 10], y[:round_batches * 10], batch_size=10,
                       verbose=0)
            if round_index < SCHEDULE.rounds:
                check(round_batches * (round_index + 1))
        assert starts == [1, 2]
    assert [(r.round, r.step) for r in pruned.rounds] == [(0, 4), (1, 8), (2, 12)]
    assert pruned.imp_step == 12
    _assert_zeros(pruned)  # after every fit, EMA's averages included
    assert pruned.masks.fraction_kept() == pytest.approx(0.25, abs=0.02)
    assert np.any(_weights(pruned)["head/kernel"] != 0)  # the last round trained


def test_ema_rounds_start_from_the_rewound_weights_and_the_trained_network_is_the_average(
        tmp_path):
    """A round's trained network is what a fit ending there leaves (the moving average), and
    the average restarts from the rewound weights: no dead network after a round end."""
    net = _net(seed=2)
    theta0 = _weights(net)
    pruned = tfl.prune_with_rewinding(net, SCHEDULE, checkpoint_dir=tmp_path / "c")
    pruned.compile(_optimizer("ema"), keras.losses.SparseCategoricalCrossentropy(True))
    trained = {}

    class Trained(tfl.RoundCallback):
        def on_round_end(self, round_index, logs):
            trained[round_index] = _weights(self.model)

    x, y = toy_data(40)
    for _ in range(SCHEDULE.rounds + 1):  # 4 batches: a fit per round
        pruned.fit(x, y, batch_size=10, verbose=0, callbacks=[Trained()])
        averages = ENGINE.moving_averages(pruned.optimizer, pruned.trainable_variables)
        if len(pruned.rounds) <= SCHEDULE.rounds:  # rewound: the average is where it starts
            _assert_round_start(pruned, theta0)
            for variable, average in averages:
                np.testing.assert_array_equal(average.numpy(), variable.numpy())
    assert sorted(trained) == [0, 1, 2]
    for weights in trained.values():  # no round trained a dead network
        assert np.abs(weights["head/kernel"]).sum() > 0


def test_fitting_the_wrapped_network_itself_is_refused(tmp_path):
    """It would train under the masks without anyone ending a round."""
    pruned = tfl.prune_with_rewinding(_net(seed=3), SCHEDULE, checkpoint_dir=tmp_path / "c")
    x, y = toy_data(20)
    pruned.network.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    with pytest.raises(tfl.SettingError, match="outside fit"):
        pruned.network.fit(x, y, verbose=0)


class Frozen(Net):
    """A train_step that updates no optimizer: IMP cannot count its rounds."""

    def train_step(self, data):
        return {"loss": 0.0}


@pytest.mark.parametrize("batch_size", [10, 60], ids=["round-end-in-epoch", "epoch-end"])
def test_a_train_step_that_never_updates_the_optimizer_is_refused(tmp_path, batch_size):
    keras.utils.set_random_seed(5)
    frozen = Frozen(lambda t: t)
    frozen(np.zeros((1, 12), "float32"))
    pruned = tfl.prune_with_rewinding(frozen, SCHEDULE, checkpoint_dir=tmp_path / "c")
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    x, y = toy_data()
    with pytest.raises(tfl.SettingError, match="must update self.optimizer"):
        pruned.fit(x, y, batch_size=batch_size, epochs=2, verbose=0)
    assert pruned.rounds == [] and pruned.masks.fraction_kept() == 1.0


def test_the_jax_backend_runs_the_user_s_training_under_imp(tmp_path):
    pytest.importorskip("jax")
    script = ROOT / "tests" / "scripts" / "keras3_jax_training.py"
    report = json.loads(python_with(script, tmp_path, KERAS_BACKEND="jax"))
    assert report["backend"] == "jax"
    assert report["own_step"] == {"steps_run": [0, 1, 2, 3] * 3, "imp_step": 12,
                                  "rounds": [4, 8, 12],
                                  "loss_above_1000": True, "penalty_logged": True,
                                  "round_starts_exact": True}
    for feature in ("ema", "accumulation", "loss_scale", "weight_decay", "clipping"):
        assert report[feature] == {"rounds": [4, 8, 12], "round_starts_exact": True,
                                   "zeros_after_fit": True}, feature
    assert report["custom_loop_refused"] and report["custom_training_rounds"] == [0, 1, 2]
    assert report["saved_model_agreement"] == 1.0
    assert report["data_parallel"] == {"devices": 2, "zeros": True, "rounds": [4, 8, 12]}


class _Trainings(tfl.RoundCallback):
    """Each training's optimizer step at its end and its starting weights."""

    def __init__(self):
        super().__init__()
        self.starts, self.ends = [], []

    def on_train_begin(self, logs=None):
        self.starts.append(_weights(self.model))

    def on_train_end(self, logs=None):
        self.ends.append(ENGINE.optimizer_step(self.model.optimizer))


def test_a_search_of_a_model_without_a_config_with_accumulation_and_ema(tmp_path):
    x, y = toy_data(120)
    data = ((x, y), (x[:40], y[:40]), (x[40:80], y[40:80]))
    schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=6, prune_rate=0.5)
    with pytest.raises(TypeError, match="model=lambda seed: Net"):  # no fresh draws of it
        tfl.LotteryTicketSearch(_net(), schedule, tmp_path / "refused", verbose=0).run(*data)
    assert not (tmp_path / "refused").exists()
    seeds, trainings = [], _Trainings()

    def build(seed):
        seeds.append(seed)
        return _net(seed)

    optimizer = keras.optimizers.Adam(1e-2, gradient_accumulation_steps=2, use_ema=True)
    result = tfl.LotteryTicketSearch(build, schedule, tmp_path / "run", eval_every=3,
                                     batch_size=10, verbose=0, optimizer=optimizer).run(
        *data, callbacks=[trainings])
    assert [(r.round, r.variant) for r in result.records] == [
        (0, "ticket"), (1, "ticket"), (1, "random_reinit"), (1, "random_pruning")]
    assert trainings.ends == [6, 6, 6, 6]  # 6 optimizer steps each, of 2 batches
    assert all(r.early_stop_iteration in (3, 6) for r in result.records)
    # the random-reinit control started from the model function's fresh draw
    assert len(seeds) == 2
    with canonical_names():  # as the search builds: the layer names of a fresh process
        fresh = _weights(_net(seeds[1]))
    masks = tfl.Masks.load(tmp_path / "run" / "trial_0" / "round_01" / "random_reinit" /
                           "masks.npz")
    for path, value in fresh.items():
        keep = masks[path] if path in masks else np.ones_like(value, bool)
        np.testing.assert_array_equal(trainings.starts[2][path][keep], value[keep])
    # the run directory records the weights (no config to rebuild from): the ticket is
    # rebuilt with the function, pruned weights exactly 0 under EMA
    run = RunDirectory(tmp_path / "run")
    assert json.loads((run.path / "model.json").read_text())["config"] is None
    with pytest.raises(tfl.SettingError, match="no config"):
        run.ticket(0, 1)
    with canonical_names():
        ticket, _ = run.ticket(0, 1, build=lambda: _net(0))
    ticket_masks = tfl.Masks.load(run.round(0, 1) / "ticket" / "masks.npz")
    weights = _weights(ticket)
    for path, keep in ticket_masks.items():
        assert np.all(weights[path][~keep] == 0) and np.any(weights[path][keep] != 0)
