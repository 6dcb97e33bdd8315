"""Early-bird rounds against full IMP on the quick Lenet protocol.

Runs ``tf-lottery run examples/lenet_mnist_quick.yaml`` (7 rounds of 1,500 iterations,
tickets only) with full IMP and with each ``--epsilons`` setting of ``early_bird`` (window
``--window``), ``--trials`` trials each, and reports per round: where the masks were drawn,
the ticket's test accuracy (mean, min-max over trials), the iterations saved, and how much
of the final ticket's masks early-bird shares with full IMP's (Jaccard, per trial).

    python benchmarks/early_bird.py                     # 3 trials, epsilon 0.1 and 0.02
    python benchmarks/early_bird.py --quick             # 1 trial, 2 rounds

Writes benchmarks/results/early_bird[_quick].{md,json,png}; the run directories go to a
temporary folder (``--keep DIR`` keeps them there).
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
CONFIG = ROOT / "examples" / "lenet_mnist_quick.yaml"


def _run(run_dir: Path, overrides: list) -> None:
    command = [sys.executable, "-m", "tf_lottery.cli", "run", str(CONFIG),
               f"run_dir={run_dir}", "controls=[]", "verbose=0", *overrides]
    subprocess.run(command, check=True, cwd=ROOT)


def _tickets(run_dir: Path) -> list:
    rows = json.loads((run_dir / "results.json").read_text())["records"]
    return [row for row in rows if row["variant"] == "ticket"]


def _kept(run_dir: Path, trial: int, round_index: int) -> np.ndarray:
    with np.load(run_dir / f"trial_{trial}" / f"round_{round_index:02d}" / "ticket" /
                 "masks.npz") as masks:
        return np.concatenate([masks[key].ravel() != 0 for key in sorted(masks.files)])


def _summary(run_dir: Path, rounds: int, reference: Path | None) -> dict:
    records = _tickets(run_dir)
    trials = sorted({row["trial"] for row in records})
    out = {"rounds": []}
    for round_index in range(rounds + 1):
        rows = [row for row in records if row["round"] == round_index]
        accuracy = [row["test_accuracy"] for row in rows]
        drawn = [row.get("mask_drawn_at") for row in rows]
        out["rounds"].append({
            "round": round_index, "weights_remaining": rows[0]["weights_remaining"],
            "test_accuracy": float(np.mean(accuracy)), "test_accuracy_min": min(accuracy),
            "test_accuracy_max": max(accuracy), "mask_drawn_at": drawn,
            "iterations_saved": sum(row.get("iterations_saved") or 0 for row in rows)})
    out["iterations_saved"] = sum(r["iterations_saved"] for r in out["rounds"])
    if reference is not None:
        final = [(_kept(run_dir, t, rounds), _kept(reference, t, rounds)) for t in trials]
        out["final_masks_jaccard"] = [float((a & b).sum() / (a | b).sum()) for a, b in final]
    return out


def _table(results: dict, rounds: int, steps: int, trials: int) -> str:
    names = list(results)
    head = "| round | weights | " + " | ".join(
        f"{name}: drawn at | accuracy" for name in names) + " |"
    lines = [head, "| ---: | ---: |" + " ---: | ---: |" * len(names)]
    for round_index in range(rounds + 1):
        cells = []
        for name in names:
            row = results[name]["rounds"][round_index]
            drawn = ", ".join("-" if d is None else str(d) for d in row["mask_drawn_at"])
            cells += [drawn, f"{100 * row['test_accuracy']:.2f}% "
                             f"({100 * row['test_accuracy_min']:.2f}-"
                             f"{100 * row['test_accuracy_max']:.2f})"]
        weights = results[names[0]]["rounds"][round_index]["weights_remaining"]
        lines.append(f"| {round_index} | {100 * weights:.1f}% | " + " | ".join(cells) + " |")
    total = rounds * steps * trials  # the tickets of rounds 0..R-1 (the final trains in full)
    lines.append("")
    for name in names[1:]:
        saved = results[name]["iterations_saved"]
        lines.append(f"- {name}: {saved:,} of {total:,} ticket iterations of rounds "
                     f"0-{rounds - 1} saved ({100 * saved / total:.0f}%); final masks shared "
                     f"with full IMP's (Jaccard, per trial): "
                     + ", ".join(f"{j:.2f}" for j in results[name]["final_masks_jaccard"]))
    return "\n".join(lines)


def _plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(6.5, 4.2))
    for name, result in results.items():
        rows = result["rounds"]
        x = [100 * row["weights_remaining"] for row in rows]
        mean = np.array([row["test_accuracy"] for row in rows]) * 100
        low = mean - np.array([row["test_accuracy_min"] for row in rows]) * 100
        high = np.array([row["test_accuracy_max"] for row in rows]) * 100 - mean
        axis.errorbar(x, mean, yerr=[low, high], marker="o", capsize=3, label=name)
    axis.set_xscale("log")
    ticks = [100 * row["weights_remaining"] for row in next(iter(results.values()))["rounds"]]
    axis.set_xticks(ticks, [f"{tick:.1f}" for tick in ticks])
    axis.minorticks_off()
    axis.invert_xaxis()
    axis.set_xlabel("percent of weights remaining")
    axis.set_ylabel("ticket's test accuracy (%)")
    axis.set_title("early-bird rounds against full IMP (where each training ended)")
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epsilons", default="0.1,0.02")
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", default=None)
    args = parser.parse_args()
    rounds, steps = (2, 300) if args.quick else (7, 1500)
    trials = 1 if args.quick else args.trials
    common = [f"trials={trials}", f"rounds={rounds}", f"steps_per_round={steps}"]
    folder = Path(args.keep or tempfile.mkdtemp(prefix="early_bird_"))
    full = folder / "full"
    if not (full / "results.json").is_file():
        _run(full, common)
    results = {"full IMP": _summary(full, rounds, None)}
    for epsilon in args.epsilons.split(","):
        name = f"epsilon {epsilon}, window {args.window}"
        run_dir = folder / f"epsilon_{epsilon}"
        if not (run_dir / "results.json").is_file():
            _run(run_dir, [*common, f"early_bird={{epsilon: {epsilon}, window: {args.window}}}"])
        results[name] = _summary(run_dir, rounds, full)
    stem = RESULTS / ("early_bird_quick" if args.quick else "early_bird")
    table = _table(results, rounds, steps, trials)
    stem.with_suffix(".md").write_text(
        f"# Early-bird rounds ({trials} trials, {rounds} rounds of {steps} iterations)\n\n"
        f"{table}\n")
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    _plot(results, stem.with_suffix(".png"))
    print(table)


if __name__ == "__main__":
    main()
