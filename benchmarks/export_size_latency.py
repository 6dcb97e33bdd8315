"""TFLite size, latency and accuracy of the Lenet-300-100 MNIST ticket at 3.6% of weights.

Three tickets from the same initialisation and data order, by IMP at the paper's rates
(20% of the hidden weights, 10% of the output layer's per round, 15 rounds: 3.6% kept):
unstructured, 1x4 blocks and 1x16 blocks. Rounds are short (one or two epochs, not the
paper's 50,000 iterations), so the accuracies are those of short training, the same for
all three tickets. A fourth ticket is the 1x16 one with the last, partial block of each
Dense kernel (Lenet's 300 and 100 inputs are not multiples of 16) pruned after IMP: what
TFLite's block-sparse int8 encoding can store without dropping weights.

Each ticket is exported with ``tfl.export_tflite`` as sparse float32, sparse
dynamic-range int8 and sparse int8 (full integer), and as dense-format dynamic-range and
full-integer int8 (plain storage, for the gzip comparison); every export is verified in
LiteRT, and an encoding the export refuses is listed with the first sentence of its
error. Sizes and latencies (median of single-image runs on one thread) are against the
dense float32 TFLite of the same network, measured interleaved with each export.

    python benchmarks/export_size_latency.py            # 55,000 training images, 2 epochs a round
    python benchmarks/export_size_latency.py --quick    # 10,000 images, 1 epoch a round

Prints a table and writes benchmarks/results/export_size_latency[_quick].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ai_edge_litert  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

import tf_lottery as tfl  # noqa: E402
from tf_lottery.zoo.data import load_mnist  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "examples"))
from deploy_tflite import make_ticket  # noqa: E402  (the ticket the example deploys)

BLOCKS = (1, 4, 16)
ENCODINGS = [(None, True), ("dynamic", True), ("int8", True), ("dynamic", False),
             ("int8", False)]  # (quantize, sparse)
TARGETS = {"size_reduction": 20.0, "speedup": 4.0, "accuracy_points": 0.3}


def information_bound_bytes(masks) -> float:
    """Bytes to store the ticket at best: each mask's entropy plus one byte per kept weight."""
    total = 0.0
    for mask in masks.values():
        p = float(mask.mean())
        entropy = 0.0 if p in (0.0, 1.0) else -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
        total += mask.size * entropy / 8 + int(mask.sum())
    return total


def dense_layers(model) -> list:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def without_partial_blocks(ticket, size: int = 16):
    """A copy of ``ticket`` whose Dense kernels also prune their last, partial 1 x ``size``
    block: what TFLite's block-sparse int8 encoding can store without losing weights."""
    trimmed = keras.models.clone_model(ticket)
    trimmed.set_weights(ticket.get_weights())
    for layer in dense_layers(trimmed):
        kernel, bias = layer.get_weights()
        kernel[len(kernel) - len(kernel) % size:] = 0
        layer.set_weights([kernel, bias])
    return trimmed


def measure(name, ticket, dense_accuracy, calibration, test, runs) -> dict:
    """A ticket's sparsity and accuracy, and every encoding's export (in a temporary folder)."""
    masks = tfl.Masks({layer.name: layer.kernel.numpy() != 0 for layer in dense_layers(ticket)})
    outputs = ticket.predict(test[0], batch_size=1000, verbose=0)
    with tempfile.TemporaryDirectory() as workdir:
        exports = [export_row(ticket, workdir, quantize, sparse, calibration, test, runs)
                   for quantize, sparse in ENCODINGS]
    return {"ticket": name, "weights_kept": masks.fraction_kept(),
            "dense_keras_accuracy": dense_accuracy,
            "keras_accuracy": float(np.mean(outputs.argmax(axis=1) == test[1])),
            "information_bound_bytes": round(information_bound_bytes(masks)),
            "exports": exports}


def export_row(pruned, workdir, quantize, sparse, calibration, test, runs) -> dict:
    """One export's measurements, or the reason LiteRT cannot run the encoding."""
    name = f"{'sparse' if sparse else 'dense'}_{quantize or 'float32'}"
    try:
        report = tfl.export_tflite(pruned, Path(workdir) / f"{name}.tflite", quantize=quantize,
                                   sparse=sparse, representative_data=calibration
                                   if quantize == "int8" else None, test_data=test,
                                   latency_runs=runs, verbose=False)
    except tfl.ExportError as error:
        return {"encoding": name.replace("_", " "), "error": str(error).split(". ")[0]}
    row = json.loads(report.to_json())
    del row["path"]
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="10,000 training and 2,000 test images, 1 epoch a round")
    parser.add_argument("--epochs-per-round", type=int, default=None)
    parser.add_argument("--latency-runs", type=int, default=None)
    args = parser.parse_args(argv)
    epochs = args.epochs_per_round or (1 if args.quick else 2)
    runs = args.latency_runs or (300 if args.quick else 2000)

    (x_train, y_train), (x_test, y_test) = load_mnist()
    train_size, test_size = (10000, 2000) if args.quick else (55000, 10000)
    x_train, y_train = x_train[:train_size], y_train[:train_size]  # the paper's holdout
    test = (x_test[:test_size], y_test[:test_size])

    tickets, started = [], time.perf_counter()
    for block in BLOCKS:
        pruned = make_ticket(x_train, y_train, block, rounds=15, epochs_per_round=epochs,
                             validation_data=test)
        dense_accuracy = pruned.rounds[0].metrics["val_accuracy"]
        ticket = tfl.strip_pruning(pruned)
        name = "unstructured" if block == 1 else f"1x{block} blocks"
        tickets.append(measure(name, ticket, dense_accuracy, x_train[:500], test, runs))
        if block == 16:
            tickets.append(measure("1x16 blocks, partial blocks pruned after IMP",
                                   without_partial_blocks(ticket), dense_accuracy,
                                   x_train[:500], test, runs))
        print(f"{name} ticket done ({time.perf_counter() - started:.0f} s)", flush=True)

    report = {
        "benchmark": "export_size_latency", "quick": args.quick, "model": "Lenet-300-100",
        "rounds": 15, "epochs_per_round": epochs, "train_images": train_size,
        "test_images": test_size, "latency_runs": runs, "targets": TARGETS,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "versions": {"tensorflow": tf.__version__, "tf_keras": keras.__version__,
                     "ai_edge_litert": ai_edge_litert.__version__,
                     "tf_lottery": tfl.__version__},
        "tickets": tickets,
    }
    table = markdown(report)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    name = "export_size_latency" + ("_quick" if args.quick else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(
        f"Command: `python benchmarks/export_size_latency.py{' --quick' if args.quick else ''}`"
        f"\n\nMachine: {report['machine']}\n\n{table}\n")


def markdown(report) -> str:
    dense = next(row for t in report["tickets"] for row in t["exports"] if "error" not in row)
    lines = [f"Lenet-300-100 on MNIST, 15 IMP rounds of {report['epochs_per_round']} epoch(s) on "
             f"{report['train_images']} images; accuracy on {report['test_images']} test images. "
             f"Reference: the dense float32 TFLite, {dense['dense_size_bytes'] / 1024:.0f} KB, "
             f"{dense['dense_latency_ms'] * 1e3:.1f} µs per image (batch 1, one thread).", "",
             "| ticket | weights kept | Keras acc. (dense net) | information bound |",
             "| --- | ---: | ---: | ---: |"]
    for t in report["tickets"]:
        lines.append(f"| {t['ticket']} | {t['weights_kept']:.2%} | {t['keras_accuracy']:.2%} "
                     f"({t['dense_keras_accuracy']:.2%}) | "
                     f"{t['information_bound_bytes'] / 1024:.1f} KB |")
    lines += ["", "| ticket | encoding | file KB | gzip KB | x smaller | µs/image | x faster | "
              "TFLite acc. | vs Keras (points) | agreement | targets |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for t in report["tickets"]:
        for row in t["exports"]:
            if "error" in row:
                lines.append(f"| {t['ticket']} | {row['encoding']} | fails: {row['error']} "
                             "| | | | | | | | |")
                continue
            points = (row["exported_accuracy"] - row["keras_accuracy"]) * 100
            met = (row["size_reduction"] >= TARGETS["size_reduction"]
                   and row["speedup"] >= TARGETS["speedup"]
                   and abs(points) <= TARGETS["accuracy_points"])
            lines.append(
                f"| {t['ticket']} | {row['encoding']} | {row['size_bytes'] / 1024:.1f} | "
                f"{row['gzip_bytes'] / 1024:.1f} | {row['size_reduction']:.1f} | "
                f"{row['latency_ms'] * 1e3:.1f} | {row['speedup']:.2f} | "
                f"{row['exported_accuracy']:.2%} | {points:+.2f} | {row['agreement']:.2%} | "
                f"{'met' if met else '-'} |")
    lines += ["", f"Targets: at least {TARGETS['size_reduction']:.0f}x smaller and "
              f"{TARGETS['speedup']:.0f}x faster than the dense float32 TFLite, TFLite test "
              f"accuracy within {TARGETS['accuracy_points']} points of the Keras ticket."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
