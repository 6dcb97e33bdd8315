"""Peak memory of a search against a dense fit, and the wall time of one paper-protocol round.

Each variant runs in its own process (peak RSS is per process), on Lenet-300-100 and the
embedded MNIST (55,000 training images, batch 60, Adam 1.2e-3):

- dense fit: plain ``model.fit`` for ``steps`` iterations;
- one-call IMP: ``prune_with_rewinding`` + ``fit``, one round end inside;
- search: a LotteryTicketSearch of 1 pruning round (2 trainings of ``steps`` iterations,
  validation and test every 100 iterations), no controls.

The default ``steps`` is the paper's 50,000 iterations, so the search's wall time per
training is the wall time of one round of the paper protocol (about ten minutes here);
``--quick`` uses 600.

    python benchmarks/memory_and_round_time.py [--quick]

Writes benchmarks/results/memory_and_round_time[_quick].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _child(variant: str, steps: int, workdir: str) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf_keras as keras

    import tf_lottery as tfl
    from tf_lottery.data import load_dataset
    from tf_lottery.models import lenet_300_100

    data = load_dataset("mnist")
    x, y = data.train
    began = time.perf_counter()
    if variant == "search":
        schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=steps,
                                         layer_rates={"output": 0.1})
        result = tfl.LotteryTicketSearch(
            lambda seed: lenet_300_100(data.input_shape, seed=seed), schedule,
            Path(workdir) / "run", controls=(), verbose=0).run(data.train, data.validation,
                                                               data.test)
        per_round = [r.wall_time for r in result.records]
    else:
        model = lenet_300_100(data.input_shape, seed=0)
        if variant == "one-call IMP":
            schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=steps // 2)
            model = tfl.prune_with_rewinding(model, schedule,
                                             checkpoint_dir=Path(workdir) / "ckpt")
        model.compile(keras.optimizers.Adam(1.2e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0) \
            .batch(60, drop_remainder=True).repeat()
        model.fit(train, steps_per_epoch=steps, epochs=1, verbose=0)
        per_round = []
    return {"variant": variant, "steps": steps,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "wall_s": time.perf_counter() - began, "training_wall_s": per_round}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "STEPS", "WORKDIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child[0], int(args.child[1]), args.child[2])))
        return
    steps = 600 if args.quick else 50_000
    rows = []
    for variant in ("dense fit", "one-call IMP", "search"):
        with tempfile.TemporaryDirectory() as workdir:
            done = subprocess.run([sys.executable, __file__, "--child", variant, str(steps),
                                   workdir], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    dense = rows[0]["peak_rss_mb"]
    lines = ["| variant | iterations | peak RSS (MB) | vs dense fit | wall time (s) | "
             "wall time per training (s) |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        trainings = ", ".join(f"{t:.1f}" for t in row["training_wall_s"]) or "-"
        steps = row['steps'] * (2 if row['variant'] == 'search' else 1)
        lines.append(f"| {row['variant']} | {steps}"
                     f" | {row['peak_rss_mb']:.0f} | {row['peak_rss_mb'] / dense:.2f}x | "
                     f"{row['wall_s']:.1f} | {trainings} |")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    text = (f"Command: `python benchmarks/memory_and_round_time.py{' --quick' * args.quick}`"
            f"\n\nMachine: {machine}\n\n" + "\n".join(lines) + "\n")
    print(text)
    RESULTS.mkdir(exist_ok=True)
    name = "memory_and_round_time" + ("_quick" if args.quick else "")
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine, "rows": rows},
                                                     indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(text)


if __name__ == "__main__":
    main()
