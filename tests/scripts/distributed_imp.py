"""Run IMP under a tf.distribute strategy; print what every replica holds, as JSON.

    python distributed_imp.py mirrored CHECKPOINT_DIR [KERAS]      two logical CPU devices
    python distributed_imp.py multi_worker CHECKPOINT_DIR [KERAS]  one worker of TF_CONFIG
    python distributed_imp.py search RUN_DIR [KERAS]               LotteryTicketSearch, mirrored

KERAS is tf_keras (the default) or keras3.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

mode, directory = sys.argv[1], sys.argv[2]
which = sys.argv[3] if len(sys.argv) > 3 else "tf_keras"
if mode != "multi_worker":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

if which == "keras3":
    import keras  # noqa: E402
else:
    import tf_keras as keras  # noqa: E402

import tf_lottery as tfl  # noqa: E402
from tf_lottery.engines import engine_named  # noqa: E402

ENGINE = engine_named(which)

strategy = tf.distribute.MultiWorkerMirroredStrategy() if mode == "multi_worker" else \
    tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
x = rng.random((240, 20), dtype=np.float32)
y = (x[:, :3].argmax(axis=1)).astype(np.int64)


def build(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((20,)), keras.layers.Dense(32, activation="relu",
                                                                    name="hidden"),
                             keras.layers.Dense(3, name="output")])


def digest(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def replicas(variable):
    """The values every replica holds of a (Keras 3 or tf_keras) variable."""
    held = variable if hasattr(variable, "values") else variable.value  # Keras 3 wraps it
    return [v.numpy() for v in held.values]


if mode == "search":
    schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=8, prune_rate=0.5)
    result = tfl.LotteryTicketSearch(build, schedule, directory, controls=("random_pruning",),
                                     eval_every=4, batch_size=30, verbose=0,
                                     strategy=strategy).run((x, y), (x[:60], y[:60]),
                                                            (x[:60], y[:60]))
    config = json.loads((Path(directory) / "config.json").read_text())
    refused, refusal = Path(directory + "_spe4"), None
    if which == "keras3":  # Keras 3 cannot run several steps per call under a strategy
        try:
            tfl.LotteryTicketSearch(build, schedule, refused, steps_per_execution=4,
                                    strategy=strategy).run((x, y), (x, y), (x, y))
        except tfl.SettingError as error:
            refusal = str(error)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "weights_remaining": [r.weights_remaining for r in result.records],
                      "steps_per_execution": config["steps_per_execution"],
                      "engine": config["engine"], "refusal": refusal,
                      "refusal_wrote": refused.exists()}))
    sys.exit(0)

schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=4, prune_rate=0.5)
with strategy.scope():
    model = build()
    theta0 = {k: v.numpy() for k, v in ENGINE.model_weights(model).items()}
    pruned = tfl.prune_with_rewinding(model, schedule, checkpoint_dir=directory)
    pruned.compile(keras.optimizers.Adam(1e-2),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
report = {"replicas": strategy.num_replicas_in_sync, "rounds": {}}


class Probe(keras.callbacks.Callback):
    """Right after each round end: every replica's masks and weights."""

    def on_train_batch_begin(self, batch, logs=None):
        step = pruned.imp_step
        if step not in (4, 8) or str(step) in report["rounds"]:
            return
        masks = {p: [m != 0 for m in replicas(w.mask)]
                 for p, w in ENGINE.pruned_weights(pruned).items()}
        entry = {}
        for path, variable in ENGINE.model_weights(pruned).items():
            values = replicas(variable)
            keep = masks[path][0] if path in masks else np.ones_like(values[0], bool)
            entry[path] = {
                "replica_weights": [digest(r) for r in values],
                "replica_masks": [digest(m) for m in masks.get(path, [])],
                "rewound_exactly": all(np.array_equal(r[keep], theta0[path][keep])
                                       for r in values),
                "pruned_are_zero": all(np.all(r[~keep] == 0) for r in values),
                "kept": float(keep.mean()),
            }
        report["rounds"][str(step)] = entry


dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(60)
pruned.fit(dataset, epochs=3, verbose=0, callbacks=[Probe()])
report["final_masks"] = {k: digest(v) for k, v in pruned.masks.items()}
print(json.dumps(report))
