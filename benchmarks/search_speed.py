"""Speed of the search: wall time of a paper-protocol training, before and now, and memory.

The paper's protocol for Lenet-300-100 on MNIST (``load_dataset("mnist")``: 55,000
training, 5,000 validation and the 10,000 test images), batch 60, Adam 1.2e-3, validation
and test evaluated every 100 iterations, ``--steps`` iterations per training (default
50,000: one training of the paper; ``--quick``: 600): a ``LotteryTicketSearch`` with
``RewindingSchedule(rounds=1, steps_per_round=steps, layer_rates={"output": 0.1})``,
``controls=()``, ``verbose=0``, so 2 trainings (round 0 and round 1), whose
``RoundRecord.wall_time`` are the training times (the ``fit`` with its evaluations).

Variants, each run in its own process, one process per variant and repetition:

- ``before``: the same search with the package at ``--baseline-ref`` (default a3fae5a,
  before the speed work), extracted with ``git archive REF tf_lottery | tar -x`` into a
  temporary folder put on ``PYTHONPATH``: tf_keras, its defaults;
- ``keras2``: the current code (the working tree), tf_keras engine (``keras=2``);
- ``keras3``: the current code, Keras 3 engine (``keras=3``);
- ``keras3_no_tb``: as keras3 with ``tensorboard=False`` (no TensorBoard logs);
- ``dense_keras2``, ``dense_keras3``: a plain ``model.fit`` of ``steps`` iterations, written
  the way a Keras user writes it: ``tf.data.Dataset.from_tensor_slices`` of the arrays,
  shuffled over the whole set, batches of 60, Keras's default compile, Adam 1.2e-3, the loss
  and accuracy, no evaluation. The reference of the memory aim (the issue's, as
  ``benchmarks/memory_and_round_time.py`` measured it when the aim was set);
- ``dense_keras3_pipeline``: the same fit on the package's own training pipeline
  (``TrainingInput.batches``: the arrays held once, batches gathered by shuffled indices),
  Keras's default compile: the leanest dense fit (the reference of the stop before);
- ``dense_keras3_xla``: as ``dense_keras3_pipeline`` with the search's compile (XLA,
  ``steps_per_execution=100``): the same training as the search's without its evaluations,
  checkpoints and logs.

The variants are interleaved repetition by repetition (``--repeats``, default 2; the
order rotates each repetition), so drift on the machine hits all alike; medians are
reported. Per variant: training wall time (mean of the two trainings; median over
repetitions), the two trainings apart, ms per iteration (round 1's training, past the
first tracing and compilation), the whole ``search.run`` (commits, TensorBoard summaries of
the round ends included), and the peak RSS of the process (``resource.getrusage``). Ratios:
each current variant's training time / before's (the aim: at most 0.4), Keras 3 with /
without TensorBoard (training time and the whole run), and peak RSS of each search / the
dense fits (the aim: at most 1.2x the user's dense fit of the same engine). It also
projects the wall time of the full MNIST paper protocol, 3 trials x (1 + 18 x 3)
trainings of 50,000 iterations (round 0 has no controls), from round 1's ms per iteration,
taken to scale linearly with iterations.

    python benchmarks/search_speed.py                      # 2 repetitions of 50,000 its
    python benchmarks/search_speed.py --quick              # 600 iterations
    python benchmarks/search_speed.py --quick --repeats 1 --variants keras3 keras3_no_tb

Timings are only meaningful on a quiet machine. Prints markdown tables and writes
benchmarks/results/search_speed[_quick].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from baseline import extract_package

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
MNIST_DIR = ROOT / "examples" / "data" / "mnist"
BATCH, LEARNING_RATE, EVAL_EVERY = 60, 1.2e-3, 100
PAPER_STEPS, PAPER_TRIALS, PAPER_ROUNDS, PAPER_VARIANTS = 50_000, 3, 18, 3
SPEED_AIM, MEMORY_AIM = 0.4, 1.2
VARIANTS = ("before", "keras2", "keras3", "keras3_no_tb", "dense_keras2", "dense_keras3",
            "dense_keras3_pipeline", "dense_keras3_xla")
SEARCHES = VARIANTS[:4]
MEMORY_PAIRS = (("before", "dense_keras2"), ("keras2", "dense_keras2"),
                ("keras3", "dense_keras3"), ("keras3_no_tb", "dense_keras3"),
                ("keras3", "dense_keras3_pipeline"), ("keras3", "dense_keras3_xla"))
AIM_REFERENCES = ("dense_keras2", "dense_keras3")  # the user's dense fit of each engine


# --- child: one variant, one repetition --------------------------------------------------

def _child(variant: str, steps: int, workdir: Path) -> dict:
    import resource

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    import tf_lottery as tfl
    from tf_lottery.zoo.data import load_dataset
    from tf_lottery.zoo.models import lenet_300_100

    started = time.perf_counter()
    data = load_dataset("mnist", data_dir=MNIST_DIR)  # 55,000 / 5,000 / 10,000
    out = {"variant": variant, "steps": steps, "tensorflow": tf.__version__,
           "package": str(Path(tfl.__file__).resolve().parent)}
    if variant in SEARCHES:
        schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=steps,
                                         layer_rates={"output": 0.1})
        options = dict(controls=(), verbose=0, batch_size=BATCH, eval_every=EVAL_EVERY)
        if variant == "before":  # the baseline's API: tf_keras only, no keras= argument
            def build(seed):
                return lenet_300_100(data.input_shape, seed=seed)
        else:
            engine = 2 if variant == "keras2" else 3

            def build(seed):
                return lenet_300_100(data.input_shape, seed=seed, keras=engine)
            options["tensorboard"] = variant != "keras3_no_tb"
        search = tfl.LotteryTicketSearch(build, schedule, workdir / "run", **options)
        began = time.perf_counter()
        result = search.run(data.train, data.validation, data.test)
        out["run_s"] = time.perf_counter() - began
        records = sorted(result.records, key=lambda r: r.round)
        out["training_s"] = [r.wall_time for r in records]
        out["test_accuracy"] = [r.test_accuracy for r in records]
        out["early_stop_iteration"] = [r.early_stop_iteration for r in records]
    else:
        from tf_lottery.search.inputs import TrainingInput
        from tf_lottery.zoo.models import keras_module
        engine = 2 if variant == "dense_keras2" else 3
        keras = keras_module(engine)
        model = lenet_300_100(data.input_shape, seed=0, keras=engine)
        xla = dict(jit_compile=True, steps_per_execution=EVAL_EVERY) \
            if variant == "dense_keras3_xla" else {}
        model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], **xla)
        if variant in ("dense_keras2", "dense_keras3"):
            x, y = data.train
            batches = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0) \
                .batch(BATCH, drop_remainder=True).repeat()
        else:
            batches = TrainingInput(data.train, BATCH).batches(0)
        began = time.perf_counter()
        model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
        out["run_s"] = out["fit_s"] = time.perf_counter() - began
    out["process_s"] = time.perf_counter() - started
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# --- parent ---------------------------------------------------------------------------

def _run_child(variant: str, steps: int, pythonpath: Path, workdir: Path) -> dict:
    """One variant in a fresh process; its result, or {"error": ...}."""
    env = dict(os.environ, PYTHONPATH=str(pythonpath), TF_CPP_MIN_LOG_LEVEL="2")
    began = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", variant, str(steps),
                           str(workdir)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines or not lines[-1].startswith("{"):
        tail = " | ".join(done.stderr.strip().splitlines()[-15:])[-1500:]
        return {"variant": variant, "error": f"exit {done.returncode}: {tail}"}
    result = json.loads(lines[-1])
    expected = pythonpath.resolve() / "tf_lottery"
    if Path(result["package"]) != expected:
        return {"variant": variant, "error": f"imported {result['package']}, not {expected}"}
    return dict(result, wall_s=wall)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _summary(runs: list) -> dict:
    """Medians over the repetitions of one variant."""
    steps = runs[0]["steps"]
    row = {"repetitions": len(runs), "steps": steps,
           "peak_rss_mb": _median([r["peak_rss_mb"] for r in runs]),
           "run_s": _median([r["run_s"] for r in runs]),
           "process_s": _median([r["wall_s"] for r in runs])}
    if "training_s" in runs[0]:
        row["training_s"] = _median([statistics.mean(r["training_s"]) for r in runs])
        row["round0_s"] = _median([r["training_s"][0] for r in runs])
        row["round1_s"] = _median([r["training_s"][-1] for r in runs])
        row["ms_per_iteration"] = row["round1_s"] / steps * 1e3
        row["test_accuracy"] = [_median([r["test_accuracy"][i] for r in runs])
                                for i in range(len(runs[0]["test_accuracy"]))]
    else:
        row["ms_per_iteration"] = row["run_s"] / steps * 1e3
    return row


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="600 iterations per training")
    parser.add_argument("--steps", type=int, default=None,
                        help="iterations per training (default 50,000, quick 600)")
    parser.add_argument("--dense-steps", type=int, default=None,
                        help="iterations of the dense fits (default: --steps); they measure "
                             "memory, which does not depend on it")
    parser.add_argument("--repeats", type=int, default=2, help="repetitions of every variant")
    parser.add_argument("--baseline-ref", default="a3fae5a",
                        help="the commit 'before' runs (default a3fae5a)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "STEPS", "WORKDIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = _child(args.child[0], int(args.child[1]), Path(args.child[2]))
        print(json.dumps(result))
        return
    steps = args.steps or (600 if args.quick else PAPER_STEPS)
    if steps % EVAL_EVERY:
        parser.error(f"--steps must be a multiple of {EVAL_EVERY} (the evaluation period)")
    variants = [v for v in VARIANTS if v in args.variants]
    dense_steps = args.dense_steps or steps

    runs = {v: [] for v in variants}
    errors = {}
    commit = None
    with tempfile.TemporaryDirectory(prefix="search_speed_") as tmp:
        tmp = Path(tmp)
        paths = {v: ROOT for v in variants}
        if "before" in variants:
            (tmp / "baseline").mkdir()
            commit = extract_package(args.baseline_ref, tmp / "baseline")
            paths["before"] = tmp / "baseline"
        for repetition in range(args.repeats):
            shift = repetition % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                if variant in errors:
                    continue
                workdir = tmp / f"{variant}_{repetition}"
                workdir.mkdir()
                result = _run_child(variant, steps if variant in SEARCHES else dense_steps,
                                    paths[variant], workdir)
                if "error" in result:
                    errors[variant] = result["error"]
                    print(f"  {variant} failed: {result['error']}", file=sys.stderr, flush=True)
                    continue
                runs[variant].append(result)
                trainings = ", ".join(f"{t:.1f}" for t in result.get("training_s", []))
                print(f"  repetition {repetition + 1}/{args.repeats}: {variant}: "
                      f"{result['run_s']:.1f} s" + (f" (trainings {trainings} s)"
                                                    if trainings else "") +
                      f", peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
    rows = {v: _summary(r) for v, r in runs.items() if r and v not in errors}

    lines = ["| variant | training (s) | round 0 (s) | round 1 (s) | ms/iteration | "
             "search.run / fit (s) | process (s) | peak RSS (MB) | test acc. (round 0, 1) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for variant, row in rows.items():
        if "training_s" in row:
            accuracy = ", ".join(f"{a:.4f}" for a in row["test_accuracy"])
            lines.append(f"| {variant} | {row['training_s']:.1f} | {row['round0_s']:.1f} | "
                         f"{row['round1_s']:.1f} | {row['ms_per_iteration']:.3f} | "
                         f"{row['run_s']:.1f} | {row['process_s']:.1f} | "
                         f"{row['peak_rss_mb']:.0f} | {accuracy} |")
        else:
            lines.append(f"| {variant} | - | - | - | {row['ms_per_iteration']:.3f} | "
                         f"{row['run_s']:.1f} | {row['process_s']:.1f} | "
                         f"{row['peak_rss_mb']:.0f} | - |")
    ratios = {}
    if "before" in rows:
        lines += ["", f"Training time / before ({args.baseline_ref}) (aim: at most "
                  f"{SPEED_AIM}; per repetition: against the same repetition's before):", "",
                  "| variant | training time / before | per repetition | within aim | "
                  "within aim in every repetition |", "| --- | ---: | --- | --- | --- |"]
        for variant in ("keras2", "keras3", "keras3_no_tb"):
            if variant in rows:
                ratio = rows[variant]["training_s"] / rows["before"]["training_s"]
                each = [statistics.mean(run["training_s"]) / statistics.mean(base["training_s"])
                        for run, base in zip(runs[variant], runs["before"])]
                ratios[f"{variant}_vs_before"] = ratio
                ratios[f"{variant}_vs_before_per_repetition"] = each
                lines.append(f"| {variant} | {ratio:.3f} | "
                             f"{', '.join(f'{r:.3f}' for r in each)} | "
                             f"{'yes' if ratio <= SPEED_AIM else 'NO'} | "
                             f"{'yes' if max(each) <= SPEED_AIM else 'NO'} |")
    if "keras3" in rows and "keras3_no_tb" in rows:
        training = rows["keras3"]["training_s"] / rows["keras3_no_tb"]["training_s"]
        whole = rows["keras3"]["run_s"] / rows["keras3_no_tb"]["run_s"]
        ratios.update(tensorboard_training=training, tensorboard_run=whole)
        lines += ["", "Keras 3, with / without TensorBoard logs:", "",
                  f"- training time: {training:.3f}x",
                  f"- the whole search.run (round ends' summaries included): {whole:.3f}x"]
    memory = []
    for variant, dense in MEMORY_PAIRS:
        if variant in rows and dense in rows:
            ratio = rows[variant]["peak_rss_mb"] / rows[dense]["peak_rss_mb"]
            verdict = "yes" if ratio <= MEMORY_AIM else "NO"
            ratios[f"{variant}_rss_vs_{dense}"] = ratio
            memory.append(f"| {variant} | {dense} | {rows[variant]['peak_rss_mb']:.0f} | "
                          f"{rows[dense]['peak_rss_mb']:.0f} | {ratio:.2f}x | "
                          f"{verdict if dense in AIM_REFERENCES else '(not the reference)'} |")
    if memory:
        lines += ["", f"Peak RSS, search / dense fit (aim: at most {MEMORY_AIM}x the user's "
                  "dense fit of the same engine):", "",
                  "| search | dense fit | search (MB) | dense (MB) | ratio | within aim |",
                  "| --- | --- | ---: | ---: | ---: | --- |", *memory]
    trainings = PAPER_TRIALS * (1 + PAPER_ROUNDS * PAPER_VARIANTS)
    projections = {}
    for variant in SEARCHES:
        if variant in rows:
            per_training = rows[variant]["ms_per_iteration"] / 1e3 * PAPER_STEPS
            projections[variant] = {"per_training_s": per_training,
                                    "total_s": per_training * trainings}
    if projections:
        lines += ["", f"Projected full MNIST paper protocol: {PAPER_TRIALS} trials x (1 + "
                  f"{PAPER_ROUNDS} x {PAPER_VARIANTS}) = {trainings} trainings of "
                  f"{PAPER_STEPS:,} iterations, from round 1's ms/iteration"
                  + (f" (measured at {steps:,} iterations, scaled linearly)"
                     if steps != PAPER_STEPS else "") + ":", "",
                  "| variant | per training | whole protocol |", "| --- | ---: | ---: |"]
        lines += [f"| {v} | {_hours(p['per_training_s'])} | {_hours(p['total_s'])} |"
                  for v, p in projections.items()]
    if errors:
        lines += ["", "Failed variants:", ""] + [f"- {v}: {e}" for v, e in errors.items()]
    table = "\n".join(lines)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    summary = (f"{args.repeats} repetition(s) of each variant, interleaved; {steps:,} "
               f"iterations per training" + (f", {dense_steps:,} per dense fit"
                                             if dense_steps != steps else "") +
               f"; before = {args.baseline_ref}"
               + (f" ({commit[:10]})" if commit else ""))
    print(table)
    print(f"({summary}; {machine})")

    report = {"benchmark": "search_speed", "quick": args.quick, "steps": steps,
              "dense_steps": dense_steps,
              "repeats": args.repeats, "batch_size": BATCH, "eval_every": EVAL_EVERY,
              "learning_rate": LEARNING_RATE, "model": "Lenet-300-100",
              "baseline_ref": args.baseline_ref, "baseline_commit": commit,
              "machine": machine, "rows": rows, "ratios": ratios,
              "projection": {"trainings": trainings, "steps": PAPER_STEPS, **projections},
              "runs": runs, "errors": errors}
    RESULTS.mkdir(exist_ok=True)
    name = "search_speed" + ("_quick" if args.quick else "")
    command = " ".join(["python benchmarks/search_speed.py",
                        *(argv if argv is not None else sys.argv[1:])])
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(f"Command: `{command}`\n\nMachine: {machine}\n\n"
                                        f"{summary}.\n\n{table}\n")


if __name__ == "__main__":
    main()
