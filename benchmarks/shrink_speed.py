"""How much faster a shrunk network runs in LiteRT, by the share of channels removed.

No training: the zoo's models (keras-io's MNIST convnet at 28x28, the small MobileNetV2 at
32x32, width 0.5 and 1.0) get random channel masks (``granularity="channel"``'s groups,
``criterion="random"``) at about 30%, 50% and 70% of channels removed, are shrunk with
``tfl.shrink`` and exported to TFLite; the report times each against the full-size dense
network (batch 1, median of 200 runs, 1 and 2 threads). What accuracy those channel counts
keep is benchmarks/channel_tickets.py's question; this one is only the speed.

A second table times the convnet with 16 filters in conv_1 and 32, 33, 40 or 48 in conv_2:
XNNPACK computes output channels in tiles (16 floats on this AVX-512 CPU), so a channel
past a multiple of the tile costs a whole tile.

    python benchmarks/shrink_speed.py            # writes benchmarks/results/shrink_speed.md
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = (("mnist_convnet", (28, 28, 1), {}), ("mobilenet_v2", (28, 28, 1), {"width": 0.5}),
          ("mobilenet_v2", (28, 28, 1), {"width": 1.0}))
REMOVED = (0.3, 0.5, 0.7)
TILE_WIDTHS = ((16, 32), (16, 33), (16, 40), (16, 48))  # conv_1, conv_2 filters


def _pruned(model, removed: float):
    """``model`` with ``removed`` of every channel group's channels zeroed at random."""
    from tf_lottery.core.masks import Masks, next_masks
    from tf_lottery.engines import engine_for
    from tf_lottery.engines.channel_graph import channel_plan

    plan = channel_plan(model)
    variables = engine_for(model).model_weights(model)
    full = Masks.full({path: tuple(variables[path].shape) for path in plan.paths()})
    masks = next_masks({path: np.zeros(shape.shape) for path, shape in full.items()}, full,
                       dict.fromkeys(full, removed), criterion="random", channels=plan)
    for path, mask in masks.items():
        variables[path].assign(np.where(mask, variables[path].numpy(), 0))
    return model


def _convnet(filters: tuple):
    """keras-io's MNIST convnet with ``filters`` in conv_1 and conv_2."""
    import keras

    layers = [keras.Input((28, 28, 1))]
    for count in filters:
        layers += [keras.layers.Conv2D(count, 3, activation="relu"),
                   keras.layers.MaxPooling2D(2)]
    return keras.Sequential([*layers, keras.layers.Flatten(), keras.layers.Dense(10)])


def _tiles(folder: Path, runs: int) -> str:
    import tf_lottery as tfl

    dense = _convnet((32, 64))
    lines = ["| conv_1, conv_2 filters | 1 thread | 2 threads | dense: 1 / 2 threads |",
             "| --- | ---: | ---: | ---: |"]
    for filters in TILE_WIDTHS:
        report = tfl.export_tflite(_convnet(filters), folder / f"tile_{filters[1]}.tflite",
                                   dense_reference=dense, latency_runs=runs, verbose=False)
        one, two = report.latencies[0], report.latencies[-1]
        lines.append(f"| {filters[0]}, {filters[1]} | {1000 * one.ms:.1f} us | "
                     f"{1000 * two.ms:.1f} us | {1000 * one.dense_ms:.1f} / "
                     f"{1000 * two.dense_ms:.1f} us |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    import tf_lottery as tfl
    from tf_lottery.zoo.models import MODELS as ZOO

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tiles = _tiles(Path(folder), args.runs)
        for name, shape, options in MODELS:
            for removed in REMOVED:
                dense = ZOO[name](input_shape=shape, seed=0, keras=3, **options)
                small = tfl.shrink(_pruned(dense, removed))
                report = tfl.export_tflite(
                    small, Path(folder) / f"{len(rows)}.tflite", dense_reference=dense,
                    latency_runs=args.runs, verbose=False)
                rows.append({"model": name + "".join(f", {k} {v}" for k, v in options.items()),
                             "removed": removed,
                             "parameters": small.count_params(),
                             "dense_parameters": dense.count_params(),
                             "multiply_adds": tfl.cost_estimate(small).multiply_adds,
                             "dense_multiply_adds": tfl.cost_estimate(dense).multiply_adds,
                             **{f"{what}_{lat.threads}": 1000 * getattr(lat, what)
                                for lat in report.latencies for what in ("ms", "dense_ms")}})
                print(rows[-1], flush=True)
    lines = ["| model | channels removed | parameters | multiply-adds | latency, 1 thread "
             "(dense) | 2 threads (dense) | speed-up, 1 / 2 threads |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['removed']:.0%} | {row['parameters']:,} of "
            f"{row['dense_parameters']:,} | {row['multiply_adds']:,} of "
            f"{row['dense_multiply_adds']:,} | {row['ms_1']:.1f} us ({row['dense_ms_1']:.1f}) | "
            f"{row['ms_2']:.1f} us ({row['dense_ms_2']:.1f}) | "
            f"{row['dense_ms_1'] / row['ms_1']:.2f}x / {row['dense_ms_2'] / row['ms_2']:.2f}x |")
    table = "\n".join(lines)
    (RESULTS / "shrink_speed.md").write_text(
        f"# Shrunk networks in LiteRT (random channel masks; "
        f"`python benchmarks/shrink_speed.py`)\n\n{table}\n\n"
        f"## Channel counts around XNNPACK's tile\n\n{tiles}\n")
    (RESULTS / "shrink_speed.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(table)


if __name__ == "__main__":
    main()
