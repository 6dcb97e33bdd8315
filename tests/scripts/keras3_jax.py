"""IMP on Keras 3's JAX backend; prints what it checked as JSON (run with KERAS_BACKEND=jax).

    KERAS_BACKEND=jax python keras3_jax.py WORK_DIR
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_lottery as tfl  # noqa: E402
from tf_lottery.engines.callbacks import Callback  # noqa: E402

work = Path(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.random((60, 12), dtype=np.float32)
y = (x[:, :3].argmax(axis=1)).astype("int64")


def build(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu",
                                                                    name="hidden"),
                             keras.layers.BatchNormalization(name="norm"),
                             keras.layers.Dense(3, name="output")])


def weights(model):
    return {path: v.numpy().copy() for path, v in model.engine.model_weights(model).items()}


def compile_(model):
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class Probe(Callback):
    """Runs ``check(step)`` before every step, the JAX state synced into the variables."""

    def __init__(self, check):
        super().__init__()
        self.check, self.step = check, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.model  # noqa: B018 -- brings the training state into the variables
        self.check(self.step)
        self.step += 1


report = {"backend": keras.backend.backend()}
schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=4, prune_rate=0.5)

# rewind to θ0: round ends at steps 4 and 8, inside the 6-step epochs
pruned = compile_(tfl.prune_with_rewinding(build(), schedule, checkpoint_dir=work / "c0"))
theta0 = weights(pruned)
fresh = keras.optimizers.Adam(1e-2)
fresh_values = [v.numpy() for v in pruned.engine.optimizer_variables(
    fresh, pruned.trainable_variables)]
seen = {"steps": [], "exact": True, "zeros": True, "reset": True}


def check(step):
    if step not in (4, 8):
        return
    masks, now = pruned.masks, weights(pruned)
    for path, value in now.items():
        keep = masks[path] if path in masks else np.ones_like(value, bool)
        seen["exact"] &= bool(np.array_equal(value[keep], theta0[path][keep]))
        seen["zeros"] &= bool(np.all(value[~keep] == 0))
    state = pruned.engine.optimizer_variables(pruned.optimizer, pruned.trainable_variables)
    seen["reset"] &= all(np.array_equal(v.numpy(), f) for v, f in zip(state, fresh_values))
    seen["steps"].append(step)


pruned.fit(x, y, batch_size=10, epochs=2, verbose=0, callbacks=[Probe(check)])
final = weights(pruned)
report.update(checked_steps=seen["steps"], imp_step=pruned.imp_step,
              rewound_exactly=seen["exact"], optimizer_reset=seen["reset"],
              pruned_are_zero=seen["zeros"] and all(
                  np.all(final[p][~m] == 0) for p, m in pruned.masks.items()),
              kept=float(pruned.masks.fraction_kept()))

# late rewinding to step 2, and learning-rate rewinding
late = compile_(tfl.prune_with_rewinding(build(1), schedule, rewind_to=2,
                                         checkpoint_dir=work / "c2"))
late.fit(x, y, batch_size=10, epochs=2, steps_per_epoch=3,
         verbose=0)  # 6 steps: round 1 trains steps 2-3, the fit ends with it, rewound
at_2 = tfl.RewindPoint.load(work / "c2" / "step_2", late).values
now = weights(late)
report["late_rewind_exact"] = bool(all(
    np.array_equal(now[p][m], at_2[p][m]) for p, m in late.masks.items()))


class Trained(tfl.RoundCallback):
    def on_round_end(self, round_index, logs):
        self.last = self.model.masked_weights()


lr = compile_(tfl.prune_with_rewinding(build(2), schedule, rewind_to="lr",
                                       checkpoint_dir=work / "clr"))
trained = Trained()
lr.fit(x, y, batch_size=10, epochs=1, steps_per_epoch=4, verbose=0, callbacks=[trained])
now = lr.masked_weights()
report["lr_rewind_kept_trained"] = bool(all(
    np.array_equal(now[p][m], trained.last[p][m]) for p, m in lr.masks.items()))

# the search, and the exports
result = tfl.LotteryTicketSearch(build, tfl.RewindingSchedule(rounds=1, steps_per_round=6,
                                                             prune_rate=0.5),
                                 work / "run", eval_every=3, batch_size=10, verbose=0,
                                 optimizer=keras.optimizers.Adam(1e-2)).run(
    (x, y), (x[:20], y[:20]), (x[20:40], y[20:40]))
report["search_weights"] = [round(r.weights_remaining, 3) for r in result.records]
try:  # pruning at initialization takes gradients with TensorFlow: refused, nothing written
    tfl.LotteryTicketSearch(build, tfl.RewindingSchedule(rounds=1, steps_per_round=6),
                            work / "pai", controls=("snip", "synflow"), verbose=0).run(
        (x, y), (x[:20], y[:20]), (x[20:40], y[20:40]))
except tfl.SettingError as error:
    report["pai_refusal"] = str(error)
report["pai_wrote_nothing"] = not (work / "pai").exists()
saved = tfl.export_saved_model(pruned, work / "served", test_data=(x, y), verbose=False)
report["saved_model_agreement"] = saved.agreement
try:
    tfl.export_tflite(pruned, work / "t.tflite", verbose=False)
except tfl.SettingError as error:
    report["tflite_refusal"] = str(error)
print(json.dumps(report))
