"""Cost of one evaluation point of the paper's protocol: validation (5,000) and test (10,000).

Lenet-300-100 (Keras 3, XLA) on MNIST, evaluated the way the search does it
(``tf_lottery.training.Evaluator``: Keras's ``evaluate`` over the cached batches of
``EvaluationInput``) with 1,000 examples per batch (the package before 2026-11-26) and with
``evaluation_batch_size`` (now), against a bare compiled forward pass of the same 15,000
images; ms per evaluation point, medians over ``--repeats`` of ``--points`` points.

    python benchmarks/evaluation_point.py
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_lottery.data import load_dataset  # noqa: E402
from tf_lottery.inputs import evaluation_batch_size  # noqa: E402
from tf_lottery.models import lenet_300_100  # noqa: E402

MNIST_DIR = Path(__file__).resolve().parent.parent / "examples" / "data" / "mnist"


def _median_ms(call, points: int, repeats: int) -> float:
    call()  # tracing and compilation
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(points):
            call()
        times.append((time.perf_counter() - began) / points * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = load_dataset("mnist", data_dir=MNIST_DIR)
    model = lenet_300_100(data.input_shape, seed=0, keras=3)
    model.compile(optimizer="adam", metrics=["accuracy"], jit_compile=True,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sets = (data.validation, data.test)

    def evaluation(batch: int):
        batches = [tf.data.Dataset.from_tensor_slices(tuple(s)).batch(batch).cache()
                   for s in sets]
        return lambda: [model.evaluate(b, verbose=0, return_dict=True) for b in batches]

    images = [tf.constant(x[i:i + 1000]) for x, _ in sets for i in range(0, len(x), 1000)]
    forward = tf.function(lambda x: model(x, training=False), jit_compile=True)
    size = evaluation_batch_size(data.test[0])
    rows = [("evaluate, batches of 1,000", evaluation(1000)),
            (f"evaluate, batches of {size:,} (evaluation_batch_size)", evaluation(size)),
            ("bare compiled forward pass, batches of 1,000",
             lambda: [forward(x).numpy() for x in images])]
    print("| evaluation point (15,000 images) | ms |\n| --- | ---: |")
    for name, call in rows:
        print(f"| {name} | {_median_ms(call, args.points, args.repeats):.1f} |")


if __name__ == "__main__":
    main()
