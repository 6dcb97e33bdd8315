"""Run IMP under a tf.distribute strategy; print what every replica holds, as JSON.

    python distributed_imp.py mirrored CHECKPOINT_DIR        two logical CPU devices
    python distributed_imp.py multi_worker CHECKPOINT_DIR    one worker of TF_CONFIG
    python distributed_imp.py search RUN_DIR                 LotteryTicketSearch, mirrored
"""

import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

mode, directory = sys.argv[1], sys.argv[2]
if mode != "multi_worker":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import tf_keras as keras  # noqa: E402

import tf_lottery as tfl  # noqa: E402
from tf_lottery.engines import engine_named  # noqa: E402

ENGINE = engine_named("tf_keras")

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


if mode == "search":
    schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=8, prune_rate=0.5)
    result = tfl.LotteryTicketSearch(build, schedule, directory, controls=("random_pruning",),
                                     eval_every=4, batch_size=30, verbose=0,
                                     strategy=strategy).run((x, y), (x[:60], y[:60]),
                                                            (x[:60], y[:60]))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "weights_remaining": [r.weights_remaining for r in result.records]}))
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
        step = tfl.wrap.counted_steps(pruned)
        if step not in (4, 8) or str(step) in report["rounds"]:
            return
        masks = {p: [v.numpy() != 0 for v in w.mask.values]
                 for p, w in ENGINE.pruned_weights(pruned).items()}
        entry = {}
        for path, variable in ENGINE.model_weights(pruned).items():
            replicas = [v.numpy() for v in variable.values]
            keep = masks[path][0] if path in masks else np.ones_like(replicas[0], bool)
            entry[path] = {
                "replica_weights": [digest(r) for r in replicas],
                "replica_masks": [digest(m) for m in masks.get(path, [])],
                "rewound_exactly": all(np.array_equal(r[keep], theta0[path][keep])
                                       for r in replicas),
                "pruned_are_zero": all(np.all(r[~keep] == 0) for r in replicas),
                "kept": float(keep.mean()),
            }
        report["rounds"][str(step)] = entry


dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(60)
pruned.fit(dataset, epochs=3, verbose=0, callbacks=[Probe()])
report["final_masks"] = {k: digest(v) for k, v in pruned.masks.items()}
print(json.dumps(report))
