"""The user's training under IMP on Keras 3's JAX backend: a model's own stateless
train_step and compute_loss, optimizer features, custom loops, DataParallel; prints what it
checked as JSON (tests/test_keras3_training.py reads it).

    KERAS_BACKEND=jax python keras3_jax_training.py WORK_DIR
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"  # for DataParallel

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_lottery as tfl  # noqa: E402
from tf_lottery.engines import engine_named  # noqa: E402
from tf_lottery.engines.callbacks import Callback  # noqa: E402

ENGINE = engine_named("keras3")
work = Path(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.random((60, 12), dtype=np.float32)
y = (x[:, :3].argmax(axis=1)).astype("int64")
SCHEDULE = tfl.RewindingSchedule(rounds=2, steps_per_round=4, prune_rate=0.5)


class Net(keras.Model):
    """No get_config; its own stateless train_step (a counter, an extra loss term in its
    logs) and compute_loss (+1000 and a penalty on the hidden kernel)."""

    def __init__(self, activation):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation=activation, name="hidden")
        self.head = keras.layers.Dense(3, name="head")
        self.steps_run = keras.Variable(0, dtype="int32", trainable=False, name="steps_run")

    def call(self, inputs, training=None):
        return self.head(self.hidden(inputs))

    def penalty(self):
        return 1e-3 * keras.ops.sum(keras.ops.square(self.hidden.kernel))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x, y, y_pred, sample_weight, training) + 1000.0 + \
            self.penalty()

    def train_step(self, state, data):
        logs, (trainable, non_trainable, optimizer, metrics) = super().train_step(state, data)
        index = [id(v) for v in self.non_trainable_variables].index(id(self.steps_run))
        non_trainable = list(non_trainable)
        non_trainable[index] = non_trainable[index] + 1
        kernel = trainable[[id(v) for v in self.trainable_variables].index(
            id(self.hidden.kernel))]
        logs = {**logs, "penalty": 1e-3 * keras.ops.sum(keras.ops.square(kernel))}
        return logs, (trainable, non_trainable, optimizer, metrics)


def net(seed=0):
    keras.utils.set_random_seed(seed)
    model = Net(lambda t: keras.activations.relu(t))
    model(np.zeros((1, 12), "float32"))
    return model


def weights(model):
    return {path: v.numpy().copy() for path, v in ENGINE.model_weights(model).items()}


class Probe(Callback):
    """``check(batch)`` before every batch and at the end, the JAX state synced first."""

    def __init__(self, check):
        super().__init__()
        self.check, self.batch = check, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.model  # noqa: B018 -- brings the training state into the variables
        self.check(self.batch)
        self.batch += 1


def round_start_exact(pruned, theta0) -> bool:
    masks, now = pruned.masks, weights(pruned)
    exact = ENGINE.optimizer_step(pruned.optimizer) == 0
    for path, value in now.items():
        keep = masks[path] if path in masks else np.ones_like(value, bool)
        exact &= bool(np.array_equal(value[keep], theta0[path][keep]))
        exact &= bool(np.all(value[~keep] == 0))
    return exact


def zeros(pruned) -> bool:
    now = weights(pruned)
    return all(bool(np.all(now[path][~keep] == 0)) for path, keep in pruned.masks.items())


def imp_run(optimizer, seed, batches_per_step=1):
    """Rounds of 4 steps in one fit, round starts checked; the pruned model and checks."""
    model = net(seed)
    theta0 = weights(model)
    pruned = tfl.prune_with_rewinding(model, SCHEDULE, checkpoint_dir=work / f"c{seed}")
    pruned.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    round_batches = SCHEDULE.steps_per_round * batches_per_step
    exact, counted = [], []

    def check(batch):
        counted.append(int(model.steps_run.numpy()))
        if batch in (round_batches, 2 * round_batches):
            exact.append(round_start_exact(pruned, theta0))

    history = pruned.fit(x, y, batch_size=10, epochs=2 * batches_per_step, verbose=0,
                         callbacks=[Probe(check)])
    return pruned, history, {"rounds": [r.step for r in pruned.rounds],
                             "round_starts_exact": exact == [True, True],
                             "zeros_after_fit": zeros(pruned), "counted": counted}


report = {"backend": keras.backend.backend()}

pruned, history, checks = imp_run(keras.optimizers.Adam(1e-2), seed=0)
report["own_step"] = {"steps_run": checks["counted"],
                      "imp_step": pruned.imp_step, "rounds": checks["rounds"],
                      "loss_above_1000": min(history.history["loss"]) > 1000,
                      "penalty_logged": all(p > 0 for p in history.history["penalty"]),
                      "round_starts_exact": checks["round_starts_exact"]}
saved = tfl.export_saved_model(pruned, work / "saved", test_data=(x, y), verbose=False)
report["saved_model_agreement"] = saved.agreement

FEATURES = {
    "ema": (lambda: keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.5), 1),
    "accumulation": (lambda: keras.optimizers.Adam(1e-2, gradient_accumulation_steps=2), 2),
    "loss_scale": (lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-2)), 1),
    "weight_decay": (lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.5), 1),
    "clipping": (lambda: keras.optimizers.SGD(0.1, momentum=0.9, clipnorm=0.1), 1),
}
for seed, (feature, (make, batches_per_step)) in enumerate(FEATURES.items(), start=1):
    checks = imp_run(make(), seed, batches_per_step)[2]
    report[feature] = {key: value for key, value in checks.items() if key != "counted"}

# a custom loop: refused without custom_training, rounds with it
model = net(10)
pruned = tfl.prune_with_rewinding(model, SCHEDULE, checkpoint_dir=work / "loop")
optimizer = keras.optimizers.Adam(1e-2)
optimizer.build(pruned.trainable_variables)
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def loss_of(trainable, non_trainable):
    y_pred, non_trainable = pruned.stateless_call(trainable, non_trainable, x, training=True)
    return loss_fn(y, y_pred), non_trainable


def update():
    """One stateless step, its state then assigned back to the variables."""
    trainable = [v.value for v in pruned.trainable_variables]
    non_trainable = [v.value for v in pruned.non_trainable_variables]
    (loss, non_trainable), grads = jax.value_and_grad(loss_of, has_aux=True)(
        trainable, non_trainable)
    trainable, state = optimizer.stateless_apply(
        [v.value for v in optimizer.variables], grads, trainable)
    for variable, value in zip(pruned.trainable_variables, trainable):
        variable.assign(value)
    for variable, value in zip(optimizer.variables, state):
        variable.assign(value)
    return float(loss)


try:
    update()
    report["custom_loop_refused"] = False
except tfl.SettingError as error:
    report["custom_loop_refused"] = "custom_training" in str(error)
with pruned.custom_training(optimizer) as rounds:
    while not rounds.step({"loss": update()}):
        pass
report["custom_training_rounds"] = [r.round for r in pruned.rounds]

# keras.distribution.DataParallel over 2 virtual CPU devices
devices = jax.devices("cpu")
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
pruned, _, checks = imp_run(keras.optimizers.Adam(1e-2), seed=20)
report["data_parallel"] = {"devices": len(devices), "zeros": checks["zeros_after_fit"],
                           "rounds": checks["rounds"]}

print(json.dumps(report))
