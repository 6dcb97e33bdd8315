"""The full protocol's tables: merged trials beside the reference and the paper's claims.

Reads the run directories of ``benchmarks/paper_full.sh`` (one, or several holding
different trials of one config, or results folders of earlier trials such as
benchmarks/results/<name>/: merged as ``tf-lottery report`` merges them) and prints,
per pruning level, the test accuracy at early stop of the ticket and both controls (mean
and min-max over trials), the reference numbers of ``../shared/DESIGN.md`` (MNIST), the
early-stop iterations, each trial's wall time, and what holds of the paper's claims:

- tickets above the dense network (round 0) by more than 0.3 points down to 13.5%;
- tickets at the dense accuracy down to 3.6% (at: mean no more than 0.1 points below);
- early stop earlier at 21.1% than dense (by how much; the paper: about 38%);
- both controls below the dense accuracy from 21.1% on.

    python benchmarks/paper_tables.py /work/runs/paper_mnist      # paper_mnist_full
    python benchmarks/paper_tables.py runs/a runs/b --name paper_fashion_mnist_full
    python benchmarks/paper_tables.py /work/runs/paper_mnist \
        benchmarks/results/paper_mnist_full_trials_0-1          # trial 2 + saved trials 0-1
    python benchmarks/paper_tables.py /work/runs/paper_mnist --partial   # rounds so far

Only complete trials are merged; ``--partial`` reads every committed round of one run
directory instead (a run in progress). Writes benchmarks/results/<name>.{md,json} and the
merged results.csv, results.json, plot.png and curves.png under benchmarks/results/<name>/.
A trial's wall time is the sum of its trainings' wall times: it includes any time the
process stood paused (SIGSTOP) while it trained. Beside it, the number of trainings times
their median wall time, which a few paused trainings do not move.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from paper_lenet import reference_accuracy

from tf_lottery.cli.config import RunConfig
from tf_lottery.foundations.atomic import write_atomic
from tf_lottery.runs.results import SearchResult

RESULTS = Path(__file__).resolve().parent / "results"
ABOVE_BY, AT_WITHIN = 0.3, 0.1  # points of test accuracy, the claims' thresholds
ABOVE_DOWN_TO, AT_DOWN_TO, CONTROLS_FROM = 13.5, 3.6, 21.1  # % of weights remaining
PROTOCOL_END = 1.9  # % of weights remaining after the protocol's last round
CONTROLS = ("random_reinit", "random_pruning")


def _levels(result: SearchResult) -> list[dict]:
    """Per round: % of weights, and per variant the accuracies (%) and early-stop
    iterations of every trial."""
    rounds = {}
    for record in result.records:
        level = rounds.setdefault(record.round, {"round": record.round, "variants": {}})
        if record.variant == "ticket":
            level["percent"] = 100 * record.weights_remaining
        entry = level["variants"].setdefault(record.variant, {"accuracy": [], "early_stop": []})
        entry["accuracy"].append(100 * record.metric("accuracy"))
        entry["early_stop"].append(record.early_stop_iteration)
    return [rounds[index] for index in sorted(rounds)]


def _cell(values: list, digits: int = 2) -> str:
    if not values:
        return ""
    mean = f"{statistics.mean(values):.{digits}f}"
    if len(values) == 1:
        return mean
    return f"{mean} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _mean(level: dict, variant: str, key: str = "accuracy"):
    values = level["variants"].get(variant, {}).get(key)
    return statistics.mean(values) if values else None


def _at(levels: list, percent: float):
    return next((level for level in levels if abs(level["percent"] - percent) < 0.15), None)


def _verdict(failures: list, complete: bool):
    """NO once a level fails, yes when every level it needs is there and none failed, None
    (not measured yet) in between."""
    return False if failures else (True if complete else None)


def claims(levels: list) -> list[dict]:
    """The paper's four claims, each with the numbers it rests on and whether it holds."""
    dense = _mean(levels[0], "ticket")
    pruned = levels[1:]
    deepest = min(level["percent"] for level in levels)

    def down_to(percent):
        return [lv for lv in pruned if lv["percent"] >= percent - 0.15]

    def margin(level, variant="ticket"):
        return round(_mean(level, variant) - dense, 2)

    above = [f"{lv['percent']:.1f}%" for lv in down_to(ABOVE_DOWN_TO)
             if margin(lv) <= ABOVE_BY]
    at = [f"{lv['percent']:.1f}%" for lv in down_to(AT_DOWN_TO) if margin(lv) < -AT_WITHIN]
    found = [
        {"claim": f"tickets above dense by more than {ABOVE_BY} points down to "
                  f"{ABOVE_DOWN_TO}%",
         "holds": _verdict(above, deepest <= ABOVE_DOWN_TO + 0.15), "not_at": above},
        {"claim": f"tickets at dense (no more than {AT_WITHIN} points below) down to "
                  f"{AT_DOWN_TO}%",
         "holds": _verdict(at, deepest <= AT_DOWN_TO + 0.15), "not_at": at,
         "ticket_minus_dense": {f"{lv['percent']:.1f}%": margin(lv)
                                for lv in down_to(AT_DOWN_TO)}}]
    level = _at(levels, CONTROLS_FROM)
    claim = {"claim": f"early stop earlier at {CONTROLS_FROM}% than dense (paper: about 38%)",
             "holds": None}
    if level is not None:
        dense_stop = _mean(levels[0], "ticket", "early_stop")
        stop = _mean(level, "ticket", "early_stop")
        claim.update(holds=stop < dense_stop, dense_iteration=dense_stop,
                     ticket_iteration=stop, earlier_by=round(1 - stop / dense_stop, 3))
    found.append(claim)
    late = [lv for lv in pruned if lv["percent"] <= CONTROLS_FROM + 0.15]
    below = {f"{lv['percent']:.1f}%": {c: margin(lv, c) for c in CONTROLS
                                      if _mean(lv, c) is not None} for lv in late}
    not_below = [f"{level} {control}" for level, row in below.items()
                 for control, value in row.items() if value >= 0]
    found.append({"claim": f"both controls below dense from {CONTROLS_FROM}% on",
                  "holds": _verdict(not_below, deepest <= PROTOCOL_END + 0.15), "not_at": not_below,
                  "control_minus_dense": below})
    return found


def _wall_times(result: SearchResult) -> dict:
    """Per trial: its trainings' wall times (s)."""
    trials = {}
    for record in result.records:
        trials.setdefault(record.trial, []).append(record.wall_time)
    return trials


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", help="run directories or results folders; "
                        "one run directory at least (its run_config.yaml names the dataset)")
    parser.add_argument("--name", default=None,
                        help="results name (default: <run dir name>_full[_partial])")
    parser.add_argument("--partial", action="store_true",
                        help="every committed round of one run directory, trials complete "
                             "or not (a run in progress)")
    args = parser.parse_args(argv)
    if args.partial and len(args.run_dirs) > 1:
        parser.error("--partial reads one run directory")
    if args.partial:
        result, notes = SearchResult.load(args.run_dirs[0]), []
    else:
        result, notes = SearchResult.merged(args.run_dirs)
    if not result.records:
        sys.exit(f"{', '.join(args.run_dirs)}: no complete trial yet (--partial shows the "
                 f"rounds so far); " + "; ".join(notes))
    name = args.name or f"{Path(args.run_dirs[0]).name}_full" + \
        ("_partial" if args.partial else "")
    run_configs = [path for path in (Path(d) / RunConfig.RECORD for d in args.run_dirs)
                   if path.is_file()]
    if not run_configs:
        parser.error("give one run directory at least: its run_config.yaml names the dataset")
    dataset = RunConfig.load(run_configs[0]).dataset
    mnist = dataset == "mnist"  # the reference numbers are MNIST's

    levels = _levels(result)
    header = ["weights", "ticket", "random reinit", "random pruning"]
    header += ["reference ticket", "reference random pruning"] if mnist else []
    header += ["early stop: ticket", "random reinit", "random pruning"]
    lines = ["| " + " | ".join(header) + " |", "| ---: " * len(header) + "|"]
    for level in levels:
        cells = [f"{level['percent']:.1f}%"]
        cells += [_cell(level["variants"].get(v, {}).get("accuracy", []))
                  for v in ("ticket", *CONTROLS)]
        if mnist:
            cells += [reference_accuracy(level["percent"], v)
                      for v in ("ticket", "random_pruning")]
        cells += [_cell(level["variants"].get(v, {}).get("early_stop", []), 0)
                  for v in ("ticket", *CONTROLS)]
        lines.append("| " + " | ".join(cells) + " |")
    found = claims(levels)
    lines += ["", "| claim | holds | numbers |", "| --- | --- | --- |"]
    for claim in found:
        verdict = {True: "yes", False: "NO", None: "not yet measured"}[claim["holds"]]
        numbers = {k: v for k, v in claim.items() if k not in ("claim", "holds")}
        lines.append(f"| {claim['claim']} | {verdict} | `{json.dumps(numbers)}` |")
    walls = _wall_times(result)
    trials = sorted(walls)
    lines += ["", "| trial | rounds | trainings | wall time (sum of trainings) | trainings x "
              "median training |", "| ---: | ---: | ---: | ---: | ---: |"]
    for trial in trials:
        records = [r for r in result.records if r.trial == trial]
        lines.append(f"| {trial} | {len({r.round for r in records})} | {len(records)} | "
                     f"{sum(walls[trial]) / 3600:.2f} h | "
                     f"{len(walls[trial]) * statistics.median(walls[trial]) / 3600:.2f} h |")
    table = "\n".join(lines)
    command = " ".join(["python benchmarks/paper_tables.py", *(argv or sys.argv[1:])])
    about = (f"Lenet-300-100 on {dataset}. Test accuracy (%) at early stop, mean (min-max) "
             f"over {len(trials)} trial(s); early-stop iterations likewise.")
    if mnist:
        about += " Reference: a public PyTorch reproduction of the paper (../shared/DESIGN.md)."
    text = (f"Command: `{command}`\n\n" + "".join(f"{note}\n\n" for note in notes)
            + about + "\n\n" + table + "\n")
    print(text)
    RESULTS.mkdir(exist_ok=True)
    write_atomic(RESULTS / f"{name}.md", text)
    write_atomic(RESULTS / f"{name}.json", json.dumps(
        {"run_dirs": args.run_dirs, "dataset": dataset, "partial": args.partial, "notes": notes,
         "levels": levels, "claims": found,
         "training_wall_times_s": {str(k): v for k, v in walls.items()}}, indent=2) + "\n")
    (RESULTS / name).mkdir(exist_ok=True)
    result.save(RESULTS / name)


if __name__ == "__main__":
    main()
