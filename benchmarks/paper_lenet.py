"""Reproduce Frankle & Carbin's Lenet-300-100 table: tickets vs. controls across sparsities.

The full run is the paper's protocol (examples/lenet_mnist_paper.yaml: 50,000 iterations
per round, batch 60, Adam 1.2e-3, 20% / 10% per round down to 1.9% of weights, evaluation
every 100 iterations, early stop at minimum validation loss, 3 trials, both controls):
many hours on a CPU. ``--quick`` shortens rounds to 1,000 iterations, 5 rounds, 1 trial, a
few minutes, as a smoke test whose accuracies are not the paper's.

    python benchmarks/paper_lenet.py --quick
    python benchmarks/paper_lenet.py [--dataset fashion_mnist --data-dir DIR]

The run directory is resumable: run the same command again after an interruption.
``--steps-per-round N`` and ``--trials N`` run a shorter protocol (saved under its own name).
Prints a markdown table beside the paper's reference numbers and writes
benchmarks/results/paper_<dataset>[_quick].{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_lottery.cli.config import RunConfig  # noqa: E402
from tf_lottery.foundations.atomic import write_atomic, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
# Test accuracy at early stop, % (a public PyTorch reproduction, ../shared/DESIGN.md).
REFERENCE = {
    100.0: {"ticket": 98.04, "random_pruning": 98.10},
    51.3: {"ticket": 98.44, "random_pruning": 98.20},
    21.1: {"ticket": 98.40, "random_pruning": 97.74},
    13.5: {"ticket": 98.33, "random_pruning": 97.26},
    7.0: {"ticket": 98.24, "random_pruning": 96.48},
    3.6: {"ticket": 98.08, "random_pruning": 94.90},
    1.9: {"ticket": 97.64, "random_pruning": 93.65},
}


def reference_accuracy(percent: float, variant: str) -> str:
    """The reference test accuracy (%) at ``percent`` weights remaining, or "" if none."""
    for level, row in REFERENCE.items():
        if abs(level - percent) < 0.15 and variant in row:
            return f"{row[variant]:.2f}"
    return ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--steps-per-round", type=int, default=None,
                        help="shorter rounds than the paper's 50,000 iterations")
    parser.add_argument("--trials", type=int, default=None)
    args = parser.parse_args(argv)

    suffix = "_quick" if args.quick else ""
    if args.steps_per_round:
        suffix += f"_{args.steps_per_round}it"
    run_dir = args.run_dir or str(ROOT / "runs" / f"paper_{args.dataset}{suffix}")
    overrides = [f"run_dir={run_dir}", f"dataset={args.dataset}", "verbose=0"]
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    if args.quick:
        overrides += ["rounds=5", "steps_per_round=1000", "trials=1"]
    if args.steps_per_round:
        overrides.append(f"steps_per_round={args.steps_per_round}")
    if args.trials:
        overrides.append(f"trials={args.trials}")
    config = RunConfig.load(ROOT / "examples" / "lenet_mnist_paper.yaml", overrides)
    splits = config.data()
    began = time.perf_counter()
    result = config.search(splits).run(splits.train, splits.validation, splits.test)
    elapsed = time.perf_counter() - began

    rows = result.summary()
    lines = ["| weights remaining | variant | test acc. at early stop (mean, min-max over "
             "trials) | reference | early-stop iteration | trials |",
             "| ---: | --- | --- | ---: | ---: | ---: |"]
    for row in rows:
        percent = 100 * row["weights_remaining"]
        reference = reference_accuracy(percent, row["variant"]) if args.dataset == "mnist" else ""
        lines.append(
            f"| {percent:.1f}% | {row['variant']} | {100 * row['test_accuracy']:.2f} "
            f"({100 * row['test_accuracy_min']:.2f}-{100 * row['test_accuracy_max']:.2f}) | "
            f"{reference} | {row['early_stop_iteration']:.0f} | {row['trials']} |")
    table = "\n".join(lines)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    command = " ".join(["python benchmarks/paper_lenet.py", *(argv or sys.argv[1:])])
    header = (f"Command: `{command}`\n\n"
              f"Machine: {machine}. Wall time of this invocation: {elapsed / 60:.1f} min "
              f"({config.schedule.rounds} rounds of {config.schedule.steps_per_round} "
              f"iterations, {config.options.trials} trial(s)).\n\nReference: test accuracy at "
              "early stop of a public PyTorch reproduction of the paper (MNIST only).\n\n")
    print(header + table)
    RESULTS.mkdir(exist_ok=True)
    name = f"paper_{args.dataset}{suffix}"
    write_json(RESULTS / f"{name}.json", {"config": dataclasses.asdict(config), "summary": rows,
                                          "wall_time_s": elapsed, "machine": machine})
    write_atomic(RESULTS / f"{name}.md", header + table + "\n")


if __name__ == "__main__":
    main()
