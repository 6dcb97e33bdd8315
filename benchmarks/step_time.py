"""Time per training step: an IMP round vs plain Keras fit vs TF-MOT's ConstantSparsity.

Lenet-300-100 on MNIST (55,000 training images, batch 60, Adam 1.2e-3), the same tf.data
pipeline for all three, measured side by side: each repetition times one epoch of every
variant in turn, so drift on the machine hits all of them alike. The IMP variant ends a
round at every epoch end (masks recomputed, weights rewound from the θ0 checkpoint,
optimizer reset), so its time includes the round-end work, amortized over the epoch.

    python benchmarks/step_time.py            # 15 repetitions of a full epoch
    python benchmarks/step_time.py --quick    # 3 repetitions of 200 steps

Prints a table and writes benchmarks/results/step_time[_quick][_jit_compile].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

import tf_lottery as tfl  # noqa: E402
from tf_lottery.data import load_mnist  # noqa: E402
from tf_lottery.models import lenet_300_100  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _compile(model, jit_compile=False):
    model.compile(optimizer=keras.optimizers.Adam(1.2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=jit_compile)
    return model


def build_variants(steps_per_epoch: int, workdir: Path, jit_compile: bool):
    """name -> (compiled model, callbacks for fit)."""
    dense = _compile(lenet_300_100(seed=0), jit_compile)
    tfmot_model = _compile(tfmot.sparsity.keras.prune_low_magnitude(
        lenet_300_100(seed=0),
        pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.8, begin_step=0)),
        jit_compile=False)  # TF-MOT's mask update (top_k in a tf.cond) does not compile
    schedule = tfl.RewindingSchedule(rounds=1000, steps_per_round=steps_per_epoch,
                                     prune_rate=0.2, layer_rates={"output": 0.1})
    imp = _compile(tfl.prune_with_rewinding(lenet_300_100(seed=0), schedule,
                                            checkpoint_dir=workdir / "rewind"), jit_compile)
    return {
        "dense fit": (dense, []),
        "TF-MOT ConstantSparsity": (tfmot_model, [tfmot.sparsity.keras.UpdatePruningStep()]),
        "tf_lottery IMP round": (imp, []),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions of 200 steps")
    parser.add_argument("--repetitions", type=int, default=None)
    parser.add_argument("--jit-compile", action="store_true",
                        help="compile the dense and IMP train steps with XLA")
    args = parser.parse_args(argv)
    repetitions = args.repetitions or (3 if args.quick else 15)

    (x_train, y_train), _ = load_mnist()
    x_train, y_train = x_train[:55000], y_train[:55000]  # the paper's 5,000-image holdout
    steps = 200 if args.quick else len(x_train) // 60
    train = tf.data.Dataset.from_tensor_slices((x_train[:steps * 60], y_train[:steps * 60])) \
        .batch(60).cache().prefetch(tf.data.AUTOTUNE)

    with tempfile.TemporaryDirectory() as workdir:
        variants = build_variants(steps, Path(workdir), args.jit_compile)
        for model, callbacks in variants.values():  # warm-up: tracing, first round end
            model.fit(train, epochs=1, verbose=0, callbacks=callbacks)
        times = {name: [] for name in variants}
        for _ in range(repetitions):
            for name, (model, callbacks) in variants.items():
                start = time.perf_counter()
                model.fit(train, epochs=1, verbose=0, callbacks=callbacks)
                times[name].append((time.perf_counter() - start) / steps * 1e3)

    dense_median = float(np.median(times["dense fit"]))
    rows = []
    for name, values in times.items():
        median = float(np.median(values))
        rows.append({"variant": name, "median_ms_per_step": round(median, 4),
                     "min_ms": round(min(values), 4), "max_ms": round(max(values), 4),
                     "vs_dense": round(median / dense_median, 4),
                     "samples_ms": [round(v, 4) for v in values]})
    report = {
        "benchmark": "step_time", "quick": args.quick, "jit_compile": args.jit_compile,
        "steps_per_repetition": steps,
        "repetitions": repetitions, "batch_size": 60, "model": "Lenet-300-100",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "versions": {"tensorflow": tf.__version__, "tf_keras": keras.__version__,
                     "tfmot": tfmot.__version__, "tf_lottery": tfl.__version__},
        "rows": rows,
    }
    lines = ["| variant | median ms/step | min | max | vs dense fit |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['variant']} | {r['median_ms_per_step']:.3f} | {r['min_ms']:.3f} | "
              f"{r['max_ms']:.3f} | {r['vs_dense']:.3f}x |" for r in rows]
    table = "\n".join(lines)
    print(table)
    print(f"({repetitions} repetitions of {steps} steps; {report['machine']})")
    RESULTS.mkdir(exist_ok=True)
    flags = [flag for flag, on in (("--quick", args.quick), ("--jit-compile", args.jit_compile))
             if on]
    name = "step_time" + "".join("_" + flag[2:].replace("-", "_") for flag in flags)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(
        f"Command: `python benchmarks/step_time.py {' '.join(flags)}`\n\n"
        f"Machine: {report['machine']}\n\n{table}\n")


if __name__ == "__main__":
    main()
