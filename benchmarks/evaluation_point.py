"""Cost of one evaluation point of the paper's protocol: validation (5,000) and test (10,000).

Lenet-300-100 on MNIST, XLA, for each engine (``--keras 2 3``): the search's evaluation
(``tf_lottery.training.Evaluator`` over ``EvaluationInput``: Keras's ``evaluate`` of each
set, in batches of ``evaluation_batch_size``), the same with cached batches of 1,000 made
by ``from_tensor_slices`` (the package before 2026-11-26), and a bare compiled forward pass
of the same 15,000 images; ms per evaluation point, medians over ``--repeats`` of
``--points`` points.

    python benchmarks/evaluation_point.py
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from tf_lottery.data import load_dataset  # noqa: E402
from tf_lottery.inputs import EvaluationInput, evaluation_batch_size  # noqa: E402
from tf_lottery.models import keras_module, lenet_300_100  # noqa: E402
from tf_lottery.training import Evaluator  # noqa: E402

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


def _evaluation_points(engine: int, data) -> list:
    """(what, call) of one evaluation point of each kind, for one engine's model."""
    keras = keras_module(engine)
    model = lenet_300_100(data.input_shape, seed=0, keras=engine)
    model.compile(optimizer="adam", metrics=["accuracy"], jit_compile=True,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sets = {"val": data.validation, "test": data.test}
    before = [tf.data.Dataset.from_tensor_slices(tuple(s)).batch(1000).cache()
              for s in sets.values()]
    evaluator = Evaluator({name: EvaluationInput(s, name) for name, s in sets.items()})
    images = [tf.constant(x[i:i + 1000]) for x, _ in sets.values()
              for i in range(0, len(x), 1000)]
    forward = tf.function(lambda x: model(x, training=False), jit_compile=True)
    size = evaluation_batch_size(data.test[0])
    return [("evaluate, cached batches of 1,000 (before)",
             lambda: [model.evaluate(b, verbose=0, return_dict=True) for b in before]),
            (f"the search's Evaluator, batches of {size:,}", lambda: evaluator(model)),
            ("bare compiled forward pass, batches of 1,000",
             lambda: [forward(x).numpy() for x in images])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keras", type=int, nargs="+", choices=(2, 3), default=[2, 3])
    args = parser.parse_args()
    data = load_dataset("mnist", data_dir=MNIST_DIR)
    print("| engine | evaluation point (15,000 images) | ms |\n| --- | --- | ---: |")
    for engine in args.keras:
        name = "tf_keras" if engine == 2 else "Keras 3"
        for what, call in _evaluation_points(engine, data):
            print(f"| {name} | {what} | {_median_ms(call, args.points, args.repeats):.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
