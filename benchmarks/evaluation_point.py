"""Cost of one evaluation point of the paper's protocol: validation (5,000) and test (10,000).

Lenet-300-100 on MNIST, XLA, for each engine (``--keras 2 3``): the search's evaluation
(``tf_lottery.search.evaluation.Evaluator`` over ``EvaluationInput``, batches of
``evaluation_batch_size``, on the search's prepared model: one TensorFlow graph running the model's
``test_step`` over both sets, without XLA), the same Evaluator through Keras's ``evaluate`` (the
search before 2026-11-26, and on JAX or under a strategy), ``evaluate`` of cached batches of
1,000 made by ``from_tensor_slices`` (the package before 2026-11-25), and bare forward
passes of the same 15,000 images, with and without XLA; ms per evaluation point, medians
over ``--repeats`` of ``--points`` points (the kinds interleaved).

    python benchmarks/evaluation_point.py
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from tf_lottery.core.schedule import RewindingSchedule  # noqa: E402
from tf_lottery.core.settings import ImpSettings  # noqa: E402
from tf_lottery.imp.wrap import prepare  # noqa: E402
from tf_lottery.search.evaluation import Evaluator  # noqa: E402
from tf_lottery.search.inputs import EvaluationInput, evaluation_batch_size  # noqa: E402
from tf_lottery.search.training import compile_model  # noqa: E402
from tf_lottery.zoo.data import load_dataset  # noqa: E402
from tf_lottery.zoo.models import keras_module, lenet_300_100  # noqa: E402

MNIST_DIR = Path(__file__).resolve().parent.parent / "examples" / "data" / "mnist"


def _medians_ms(calls: list, points: int, repeats: int) -> list:
    """Median ms per call of each of ``calls``, their repetitions interleaved."""
    for call in calls:
        call()  # tracing and compilation
    times = [[] for _ in calls]
    for _ in range(repeats):
        for call, spent in zip(calls, times):
            began = time.perf_counter()
            for _ in range(points):
                call()
            spent.append((time.perf_counter() - began) / points * 1e3)
    return [statistics.median(spent) for spent in times]


def _evaluation_points(engine: int, data) -> list:
    """(what, call) of one evaluation point of each kind, for one engine's model."""
    keras = keras_module(engine)
    model = prepare(lenet_300_100(data.input_shape, seed=0, keras=engine),
                    RewindingSchedule(rounds=1, steps_per_round=100), ImpSettings())
    compile_model(model, optimizer="adam", metrics=["accuracy"], jit_compile=True,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*[a[:60] for a in data.train], verbose=0)  # builds the metrics, as in a search
    sets = {"val": data.validation, "test": data.test}
    before = [tf.data.Dataset.from_tensor_slices(tuple(s)).batch(1000).cache()
              for s in sets.values()]
    inputs = {name: EvaluationInput(s, name) for name, s in sets.items()}
    in_graph, keras_evaluate = Evaluator(inputs, in_graph=True), Evaluator(inputs, False)
    size = evaluation_batch_size(data.test[0])
    images = [tf.constant(x[i:i + size]) for x, _ in sets.values()
              for i in range(0, len(x), size)]
    forward = {xla: tf.function(lambda x: model(x, training=False), jit_compile=xla)
               for xla in (True, False)}
    return [("evaluate, cached batches of 1,000 (before 2026-11-25)",
             lambda: [model.evaluate(b, verbose=0, return_dict=True) for b in before]),
            (f"the Evaluator through evaluate, batches of {size:,}",
             lambda: keras_evaluate(model)),
            (f"the Evaluator in a graph (the search), batches of {size:,}",
             lambda: in_graph(model)),
            *[(f"bare forward pass, {'XLA' if xla else 'no XLA'}, batches of {size:,}",
               lambda f=f: [f(x).numpy() for x in images]) for xla, f in forward.items()]]


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
        points = _evaluation_points(engine, data)
        medians = _medians_ms([call for _, call in points], args.points, args.repeats)
        for (what, _), ms in zip(points, medians):
            print(f"| {name} | {what} | {ms:.1f} |", flush=True)

if __name__ == "__main__":
    main()
