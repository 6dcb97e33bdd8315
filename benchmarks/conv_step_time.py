"""Training step time of the zoo's convolutional models with and without XLA (Keras 3).

keras-io's MNIST convnet and the small MobileNetV2 (width 0.5) on random 28x28x1 images,
batch 60, Adam, ``fit`` with ``jit_compile`` True and False: the median over
``--repetitions`` epochs of ``--steps`` steps, after one untimed epoch (tracing, XLA
compilation). Why examples/convnet_fashion_channels.yaml sets ``jit_compile: false``.

    python benchmarks/conv_step_time.py      # writes benchmarks/results/conv_step_time.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("mnist_convnet", "mobilenet_v2")


def _step_ms(name: str, xla: bool, steps: int, repetitions: int) -> list:
    import keras

    from tf_lottery.zoo.models import build

    model = build(name, (28, 28, 1), 10, seed=0, keras=3)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=xla)
    rng = np.random.default_rng(0)
    x = rng.random((60 * steps, 28, 28, 1), np.float32)
    y = rng.integers(0, 10, 60 * steps)
    model.fit(x, y, batch_size=60, verbose=0)  # untimed: tracing and compilation
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        model.fit(x, y, batch_size=60, verbose=0)
        times.append(1000 * (time.perf_counter() - start) / steps)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    lines = ["| model | XLA | ms per step, median (min-max) |", "| --- | --- | ---: |"]
    for name in MODELS:
        for xla in (False, True):
            times = _step_ms(name, xla, args.steps, args.repetitions)
            lines.append(f"| {name} | {'yes' if xla else 'no'} | {np.median(times):.1f} "
                         f"({min(times):.1f}-{max(times):.1f}) |")
            print(lines[-1], flush=True)
    table = "\n".join(lines)
    (RESULTS / "conv_step_time.md").write_text(
        f"# Training step time, batch 60, Keras 3 on TensorFlow "
        f"(`python benchmarks/conv_step_time.py`, {args.repetitions} epochs of "
        f"{args.steps} steps)\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
