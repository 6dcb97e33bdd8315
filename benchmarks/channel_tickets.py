"""Channel tickets against weight tickets: accuracy, size and speed on this CPU, in one run.

Runs ``examples/convnet_fashion_channels.yaml`` (keras-io's MNIST convnet on Fashion-MNIST,
5 rounds, tickets only) three ways: unstructured IMP (``granularity: weight``), plain channel
IMP (``granularity: channel``) and IMP-Refill (Chen et al. 2022, ``refill: true``), for
``--trials`` trials. Then, with nothing else running, exports every trial's dense network
and its tickets of rounds 2, 3 and 5 (about 36%, 49% and 67% of channels removed, or of
weights) to TFLite, channel tickets shrunk (``tfl.shrink``), and measures parameters,
multiply-adds, file size and LiteRT latency at 1 and 2 threads (batch 1, median of 200
runs, ticket against the full-size dense network). Accuracy: the search's test accuracy at
the early-stop iteration, on the 10,000 test images.

    python benchmarks/channel_tickets.py --runs /work/runs/channel_tickets     # train, measure
    python benchmarks/channel_tickets.py --runs DIR --train-only              # train only
    python benchmarks/channel_tickets.py --runs DIR --measure-only            # measure again
    python benchmarks/channel_tickets.py --quick --runs /tmp/ct               # 1 trial, short

Training resumes where it stopped (each search is a resumable run directory under
``--runs``, kept out of git). Writes benchmarks/results/channel_tickets[_quick].{md,json}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = ROOT / "examples" / "convnet_fashion_channels.yaml"
METHODS = {"weight ticket": ["granularity=weight"],
           "channel IMP": ["granularity=channel", "refill=false"],
           "refill": ["granularity=channel", "refill=true"]}
ROUNDS = (0, 2, 3, 5)


def _train(folder: Path, method: str, trials: int, quick: bool) -> Path:
    run_dir = folder / method.replace(" ", "_")
    short = ["steps_per_round=200", "eval_every=100", "train_size=5000"] if quick else []
    command = [sys.executable, "-m", "tf_lottery.cli", "run", str(CONFIG), f"run_dir={run_dir}",
               "controls=[]", "verbose=0", f"trials={trials}", f"data_dir={_data_dir()}",
               *short, *METHODS[method]]
    subprocess.run(command, check=True, cwd=ROOT)
    return run_dir


def _data_dir() -> Path:
    return (ROOT.parent / "shared" / "data" / "fashion-mnist").resolve()


def _test_data(run_dir: Path):
    """The run's test images and labels, as its recorded config loads them."""
    from tf_lottery.cli.config import RunConfig
    from tf_lottery.search.inputs import as_arrays

    config = RunConfig.load(run_dir / RunConfig.RECORD)
    return as_arrays(config.data(strict=False).test, 10_000)


def _measure(run_dir: Path, trial: int, round_index: int, shrink: bool, test,
             workdir: Path) -> dict:
    import tf_lottery as tfl
    from tf_lottery.runs.rundir import RunDirectory

    ticket, _ = RunDirectory(run_dir).ticket(trial, round_index)
    model = tfl.shrink(ticket) if shrink else ticket
    path = workdir / f"{run_dir.name}_{trial}_{round_index}.tflite"
    report = tfl.export_tflite(model, path, test_data=test, dense_reference=ticket,
                               verbose=False)
    weights = [w for layer in model.layers for w in layer.get_weights()]
    return {"parameters": int(sum(np.count_nonzero(w) for w in weights)),
            "multiply_adds": tfl.cost_estimate(model).multiply_adds,
            "channels": {name: after for name, (_, after)
                         in tfl.shrink_summary(ticket, model).items()} if shrink else None,
            "size_bytes": report.size_bytes, "dense_size_bytes": report.dense_size_bytes,
            "latency_ms": {lat.threads: lat.ms for lat in report.latencies},
            "dense_latency_ms": {lat.threads: lat.dense_ms for lat in report.latencies},
            "tflite_accuracy": report.exported_accuracy}


def _records(run_dir: Path) -> dict:
    rows = json.loads((run_dir / "results.json").read_text())["records"]
    return {(row["trial"], row["round"]): row for row in rows if row["variant"] == "ticket"}


def _spread(values, digits: int = 2) -> str:
    """The mean, and the range over trials where there are several."""
    values = list(values)
    mean = f"{np.mean(values):.{digits}f}"
    return mean if len(values) == 1 else \
        f"{mean} ({min(values):.{digits}f} to {max(values):.{digits}f})"


def _table(results: list) -> str:
    lines = ["| ticket | round | weights or channels kept | test accuracy % | vs dense, points "
             "| parameters | multiply-adds | file KB | latency, 1 thread | 2 threads | "
             "speed-up, 1 / 2 threads |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    dense = {(row["method"], row["trial"]): row["test_accuracy"]
             for row in results if row["round"] == 0}
    first = list(METHODS)[0]
    for method in METHODS:
        for round_index in ROUNDS:
            if round_index == 0 and method != first:
                continue  # round 0 trains the dense network, the same for every method
            rows = [row for row in results
                    if row["method"] == method and row["round"] == round_index]
            if not rows:
                continue
            lost = [r["test_accuracy"] - dense[method, r["trial"]] for r in rows]
            one = [r["dense_latency_ms"]["1"] / r["latency_ms"]["1"] for r in rows]
            two = [r["dense_latency_ms"]["2"] / r["latency_ms"]["2"] for r in rows]
            lines.append(
                f"| {'dense' if round_index == 0 else method} | {round_index} | "
                f"{100 * rows[0]['kept']:.1f}% | "
                f"{_spread(100 * r['test_accuracy'] for r in rows)} | "
                f"{_spread(100 * difference for difference in lost)} | "
                f"{np.mean([r['parameters'] for r in rows]):,.0f} | "
                f"{np.mean([r['multiply_adds'] for r in rows]):,.0f} | "
                f"{np.mean([r['size_bytes'] for r in rows]) / 1024:.1f} | "
                f"{_spread((1000 * r['latency_ms']['1'] for r in rows), 1)} us | "
                f"{_spread((1000 * r['latency_ms']['2'] for r in rows), 1)} us | "
                f"{_spread(one)}x / {_spread(two)}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="where the run directories go")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--measure-only", action="store_true")
    parser.add_argument("--train-only", action="store_true",
                        help="train (or resume) only: measure later on a quiet machine")
    args = parser.parse_args()
    trials = 1 if args.quick else args.trials
    folder = Path(args.runs)
    run_dirs = {method: folder / method.replace(" ", "_") for method in METHODS}
    if not args.measure_only:
        for method in METHODS:
            _train(folder, method, trials, args.quick)
    if args.train_only:
        return
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for method, run_dir in run_dirs.items():
            records, test = _records(run_dir), _test_data(run_dir)
            for trial in range(trials):
                for round_index in ROUNDS:
                    record = records[(trial, round_index)]
                    measured = _measure(run_dir, trial, round_index,
                                        shrink=method != "weight ticket" and round_index > 0,
                                        test=test, workdir=Path(workdir))
                    measured = json.loads(json.dumps(measured))  # thread counts as keys "1"
                    results.append({"method": method, "trial": trial, "round": round_index,
                                    "kept": record["weights_remaining"],
                                    "test_accuracy": record["test_accuracy"], **measured})
                    print(method, trial, round_index, results[-1], flush=True)
    stem = RESULTS / ("channel_tickets_quick" if args.quick else "channel_tickets")
    table = _table(results)
    stem.with_suffix(".md").write_text(
        f"# Channel tickets against weight tickets ({trials} trials; "
        f"`python benchmarks/channel_tickets.py{' --quick' if args.quick else ''}`)\n\n"
        f"{table}\n")
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print(table)


if __name__ == "__main__":
    main()
