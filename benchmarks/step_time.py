"""Time per training step: an IMP round against a dense fit with the same compile settings.

Lenet-300-100 (``tf_lottery.zoo.models.lenet_300_100``) on MNIST (``load_dataset("mnist")``:
55,000 training images, batch 60, Adam 1.2e-3, SparseCategoricalCrossentropy(from_logits=
True) and accuracy, of the model's own Keras), for both engines: tf_keras (``keras=2``,
TF-MOT wrappers) and Keras 3 (``keras=3``, mask constraints). Every variant trains on the
same pipeline, the package's ``TrainingInput(data.train, 60).batches(0)`` (infinite), one
"epoch" of ``--steps`` steps per ``fit`` (default 900, a multiple of 50 and close to the
916 batches of a pass).

- dense: ``model.compile(...)``, ``model.fit(batches, steps_per_epoch=steps)``;
- IMP: ``tfl.prune_with_rewinding(model, RewindingSchedule(rounds=..., steps_per_round=
  steps, layer_rates={"output": 0.1}))`` compiled and fitted exactly as the dense model,
  so an IMP round ends at every epoch end (masks recomputed, weights rewound, optimizer
  reset) and its time includes that round end.

Compile settings, each for dense and IMP and each engine: ``default`` (Keras's defaults:
one step per call, no XLA on a CPU), ``spe50`` (``steps_per_execution=50``) and ``xla``
(``jit_compile=True, steps_per_execution=`` the divisor of ``--steps`` closest to 900: 900
steps, one call per epoch, by default).

Baseline (``--baseline-ref``, default a3fae5a, the commit before the engine refactoring):
that commit's ``tf_lottery`` is extracted (``git archive REF tf_lottery | tar -x``) into a
temporary folder and its tf_keras IMP round (default compile, its
``prune_with_rewinding(model, schedule, checkpoint_dir=...)``) is timed in a process
with ``PYTHONPATH`` on that folder, interleaved with the rest; the two IMP / dense ratios
(before, now) use the same tf_keras dense fit of this run. The baseline has no
``tf_lottery.search.inputs``: its process loads the current ``tf_lottery/inputs.py`` by path,
so it trains on the very same pipeline. ``--baseline-ref none`` leaves it out.

Every variant runs in its own process (started once, warmed up by ``--warmup`` epochs:
tracing, XLA compilation, the first round end); then each repetition times one epoch
(the whole ``fit`` call) of every variant in turn, dense and IMP of one setting next to
each other, the order reversed every other repetition, so drift on the machine hits all
alike. Reported: ms/step median, min and max over repetitions; IMP / dense per engine and
compile setting (ratio of the medians, and the median of each repetition's ratio; the aim:
at most 1.10x); Keras 3 IMP / tf_keras IMP; the baseline's ratio beside the current one.

    python benchmarks/step_time.py              # 15 repetitions of 900 steps
    python benchmarks/step_time.py --quick      # 2 repetitions of 100 steps
    python benchmarks/step_time.py --repetitions 5 --baseline-ref none
    python benchmarks/step_time.py --settings default --repetitions 40   # one setting

Timings are only meaningful on a quiet machine. Prints markdown tables and writes
benchmarks/results/step_time[_quick][_<settings>].{json,md} (settings named when not all).
"""

from __future__ import annotations

import argparse
import gc
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
BATCH, LEARNING_RATE, XLA_TARGET, AIM = 60, 1.2e-3, 900, 1.10
ENGINES = {2: "tf_keras", 3: "Keras 3"}
SETTINGS = ("default", "spe50", "xla")


# --- worker: one variant in its own process ---------------------------------------------

def _compile_kwargs(setting: str, xla_steps: int) -> dict:
    if setting == "default":
        return {}
    if setting == "spe50":
        return {"steps_per_execution": 50}
    return {"jit_compile": True, "steps_per_execution": xla_steps}


def _training_input(baseline: bool):
    """The current package's TrainingInput; for the baseline (which has no tf_lottery.search.inputs)
    the current tf_lottery/inputs.py loaded by path beside the baseline's package."""
    if not baseline:
        from tf_lottery.search.inputs import TrainingInput
        return TrainingInput
    import importlib.util
    import types

    import tf_lottery
    from tf_lottery.zoo.data import DataError  # the baseline's; inputs.py only raises it
    if "tf_lottery.foundations.errors" not in sys.modules:
        errors = types.ModuleType("tf_lottery.foundations.errors")
        errors.DataError = DataError
        sys.modules["tf_lottery.foundations.errors"] = errors
        tf_lottery.foundations.errors = errors
    spec = importlib.util.spec_from_file_location("_current_tf_lottery_inputs",
                                                  ROOT / "tf_lottery" / "inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TrainingInput


def _worker(spec: dict) -> None:
    """Build, compile and warm up one variant, then time one epoch per "run" line of stdin."""
    protocol = os.fdopen(os.dup(1), "w")  # the replies; anything else printed goes to stderr
    os.dup2(2, 1)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    import tf_lottery as tfl
    from tf_lottery.zoo.data import load_dataset
    from tf_lottery.zoo.models import lenet_300_100

    engine, steps, baseline = spec["engine"], spec["steps"], spec["baseline"]
    data = load_dataset("mnist", data_dir=MNIST_DIR)
    batches = _training_input(baseline)(data.train, BATCH).batches(0)
    if baseline:
        import tf_keras as keras
        model = lenet_300_100(data.input_shape, seed=0)
    else:
        from tf_lottery.zoo.models import keras_module
        keras = keras_module(engine)
        model = lenet_300_100(data.input_shape, seed=0, keras=engine)
    if spec["kind"] == "imp":
        schedule = tfl.RewindingSchedule(rounds=spec["rounds"], steps_per_round=steps,
                                         layer_rates={"output": 0.1})
        model = tfl.prune_with_rewinding(model, schedule,
                                         checkpoint_dir=str(Path(spec["workdir"]) / "rewind"))
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], **_compile_kwargs(spec["setting"], spec["xla_steps"]))

    def epoch() -> dict:
        gc.collect()
        began = time.perf_counter()
        model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
        seconds = time.perf_counter() - began
        reply = {"seconds": seconds}
        if spec["kind"] == "imp":
            reply.update(rounds=len(model.rounds), weights_remaining=model.rounds[-1]
                         .weights_remaining if model.rounds else 1.0)
        return reply

    def say(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    warmup = [epoch()["seconds"] for _ in range(spec["warmup"])]
    jit = getattr(model, "jit_compile", None) if engine == 3 and not baseline else \
        getattr(model, "_jit_compile", None)
    say({"ready": True, "package": str(Path(tfl.__file__).resolve().parent),
         "warmup_seconds": warmup, "jit_compile": bool(jit), "tensorflow": tf.__version__,
         "keras": keras.__version__})
    for line in sys.stdin:
        if line.strip() != "run":
            break
        say(epoch())


# --- parent ---------------------------------------------------------------------------

class Worker:
    """One variant's process: started, warmed up, then asked for one timed epoch at a time."""

    def __init__(self, name: str, spec: dict, pythonpath: str, logdir: Path):
        self.name, self.spec, self.error, self.ready = name, spec, None, {}
        self.package = Path(pythonpath).resolve() / "tf_lottery"  # the one it must import
        env = dict(os.environ, PYTHONPATH=pythonpath, TF_CPP_MIN_LOG_LEVEL="2")
        self.log = logdir / f"{name.replace(' ', '_').replace('/', '_')}.log"
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(spec)], env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("w"))

    def reply(self) -> dict | None:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            tail = self.log.read_text().strip().splitlines()[-15:]
            self.error = f"exit {self.process.returncode}: " + " | ".join(tail)[-1500:]
            print(f"  {self.name} failed: {self.error}", file=sys.stderr, flush=True)
            return None
        return json.loads(line)

    def run(self) -> dict | None:
        if self.error:
            return None
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return self.reply()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
                self.process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def _xla_steps(steps: int) -> int:
    """The divisor of ``steps`` closest to 900 (the larger one on a tie)."""
    divisors = [d for d in range(1, steps + 1) if steps % d == 0]
    return min(divisors, key=lambda d: (abs(d - XLA_TARGET), -d))


def _variants(args, steps: int, workdir: Path, baseline_dir: Path | None) -> list:
    """(name, spec, PYTHONPATH) of every variant, dense and IMP of one setting adjacent."""
    rounds = args.warmup + args.repetitions + 1
    common = {"steps": steps, "xla_steps": _xla_steps(steps), "rounds": rounds,
              "warmup": args.warmup}
    variants = []
    for engine in (2, 3):
        for setting in args.settings:
            for kind in ("dense", "imp"):
                name = f"{ENGINES[engine]} {setting} {kind}"
                variants.append((name, dict(common, engine=engine, setting=setting, kind=kind,
                                            baseline=False, workdir=str(workdir / name)),
                                 str(ROOT)))
    if baseline_dir is not None and "default" in args.settings:
        name = f"tf_keras default imp @{args.baseline_ref}"
        variants.append((name, dict(common, engine=2, setting="default", kind="imp",
                                    baseline=True, workdir=str(workdir / name)),
                         str(baseline_dir)))
    return variants


def _start(variants, logdir: Path, jobs: int) -> list:
    """Start every worker, ``jobs`` at a time (their warm-up is not measured)."""
    workers = []
    for first in range(0, len(variants), jobs):
        chunk = []
        for name, spec, path in variants[first:first + jobs]:
            Path(spec["workdir"]).mkdir(parents=True)
            chunk.append(Worker(name, spec, path, logdir))
        for worker in chunk:
            ready = worker.reply()
            if ready is not None:
                if Path(ready["package"]) != worker.package:
                    worker.error = f"imported {ready['package']}, not {worker.package}"
                    worker.close()
                else:
                    worker.ready = ready
                    print(f"  ready: {worker.name} (warm-up "
                          f"{', '.join(f'{s:.1f}' for s in ready['warmup_seconds'])} s)",
                          flush=True)
            workers.append(worker)
    return workers


def _stats(values: list) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _ratio_rows(times: dict, engine: int, setting: str) -> dict | None:
    dense = times.get(f"{ENGINES[engine]} {setting} dense")
    imp = times.get(f"{ENGINES[engine]} {setting} imp")
    if not dense or not imp:
        return None
    paired = [i / d for i, d in zip(imp, dense)]
    return {"engine": ENGINES[engine], "setting": setting,
            "dense_ms": statistics.median(dense), "imp_ms": statistics.median(imp),
            "ratio_of_medians": statistics.median(imp) / statistics.median(dense),
            "median_paired_ratio": statistics.median(paired)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions of 100 steps")
    parser.add_argument("--repetitions", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per epoch (a multiple of 50; default 900, quick 100)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs per variant")
    parser.add_argument("--baseline-ref", default="a3fae5a",
                        help="the commit to compare the tf_keras IMP round with ('none': skip)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS,
                        help="compile settings to time (default: all)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="workers started (and warmed up) at once")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.settings = [s for s in SETTINGS if s in args.settings]
    if args.worker:
        _worker(json.loads(args.worker))
        return
    args.repetitions = args.repetitions or (2 if args.quick else 15)
    steps = args.steps or (100 if args.quick else 900)
    if steps % 50:
        parser.error(f"--steps must be a multiple of 50 (steps_per_execution=50), got {steps}")
    baseline = None if args.baseline_ref.lower() == "none" else args.baseline_ref

    with tempfile.TemporaryDirectory(prefix="step_time_") as tmp:
        tmp = Path(tmp)
        commit = None
        if baseline:
            (tmp / "baseline").mkdir()
            commit = extract_package(baseline, tmp / "baseline")
        variants = _variants(args, steps, tmp / "work", tmp / "baseline" if baseline else None)
        (tmp / "logs").mkdir()
        print(f"starting {len(variants)} workers ({args.warmup} warm-up epoch(s) of {steps} "
              "steps each)", flush=True)
        workers = _start(variants, tmp / "logs", max(1, args.jobs))
        samples = {w.name: [] for w in workers}
        rounds = {w.name: [] for w in workers}
        try:
            for repetition in range(args.repetitions):
                order = workers if repetition % 2 == 0 else workers[::-1]
                for worker in order:
                    reply = worker.run()
                    if reply is not None:
                        samples[worker.name].append(reply["seconds"] / steps * 1e3)
                        if "rounds" in reply:
                            rounds[worker.name].append(reply["rounds"])
                print(f"  repetition {repetition + 1}/{args.repetitions} done", flush=True)
        finally:
            for worker in workers:
                worker.close()
    errors = {w.name: w.error for w in workers if w.error}
    info = {w.name: w.ready for w in workers}
    # the IMP variants must have ended one round per epoch
    for name, seen in rounds.items():
        expected = list(range(args.warmup + 1, args.warmup + 1 + len(seen)))
        if seen != expected:
            errors[name] = f"rounds after each epoch {seen}, expected {expected}"
    times = {name: values for name, values in samples.items()
             if values and len(values) == args.repetitions and name not in errors}

    rows = [{"variant": name, **{k: round(v, 4) for k, v in _stats(values).items()},
             "jit_compile": info[name].get("jit_compile"),
             "samples_ms": [round(v, 4) for v in values]} for name, values in times.items()]
    ratios = [r for r in (_ratio_rows(times, e, s) for e in (2, 3) for s in SETTINGS) if r]
    engines = []
    for setting in SETTINGS:
        k2, k3 = times.get(f"tf_keras {setting} imp"), times.get(f"Keras 3 {setting} imp")
        if k2 and k3:
            engines.append({"setting": setting, "tf_keras_imp_ms": statistics.median(k2),
                            "keras3_imp_ms": statistics.median(k3),
                            "keras3_vs_tf_keras": statistics.median(k3) / statistics.median(k2)})
    before = None
    if baseline:
        base = times.get(f"tf_keras default imp @{baseline}")
        dense, now = times.get("tf_keras default dense"), times.get("tf_keras default imp")
        if base and dense and now:
            before = {"ref": baseline, "commit": commit, "dense_ms": statistics.median(dense),
                      "before_imp_ms": statistics.median(base),
                      "now_imp_ms": statistics.median(now),
                      "before_ratio": statistics.median(base) / statistics.median(dense),
                      "now_ratio": statistics.median(now) / statistics.median(dense),
                      "before_paired": statistics.median([b / d for b, d in zip(base, dense)]),
                      "now_paired": statistics.median([n / d for n, d in zip(now, dense)])}

    lines = ["| variant | XLA | median ms/step | min | max |", "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {r['variant']} | {'yes' if r['jit_compile'] else 'no'} | {r['median']:.3f} | "
              f"{r['min']:.3f} | {r['max']:.3f} |" for r in rows]
    lines += ["", f"IMP round / dense fit, same compile settings (aim: at most {AIM:.2f}x):", "",
              "| engine | compile | dense ms/step | IMP ms/step | IMP / dense | "
              "median of per-repetition ratios | within aim |",
              "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    lines += [f"| {r['engine']} | {r['setting']} | {r['dense_ms']:.3f} | {r['imp_ms']:.3f} | "
              f"{r['ratio_of_medians']:.3f}x | {r['median_paired_ratio']:.3f}x | "
              f"{'yes' if r['ratio_of_medians'] <= AIM else 'NO'} |" for r in ratios]
    if engines:
        lines += ["", "Keras 3 IMP round / tf_keras IMP round:", "",
                  "| compile | tf_keras IMP ms/step | Keras 3 IMP ms/step | Keras 3 / tf_keras |",
                  "| --- | ---: | ---: | ---: |"]
        lines += [f"| {r['setting']} | {r['tf_keras_imp_ms']:.3f} | {r['keras3_imp_ms']:.3f} | "
                  f"{r['keras3_vs_tf_keras']:.3f}x |" for r in engines]
    if before:
        lines += ["", f"tf_keras IMP round (default compile) before ({before['ref']}, "
                  f"{before['commit'][:10]}) and now, against the same dense fit "
                  f"({before['dense_ms']:.3f} ms/step):", "",
                  "| | IMP ms/step | IMP / dense | median of per-repetition ratios |",
                  "| --- | ---: | ---: | ---: |",
                  f"| before ({before['ref']}) | {before['before_imp_ms']:.3f} | "
                  f"{before['before_ratio']:.3f}x | {before['before_paired']:.3f}x |",
                  f"| now (working tree) | {before['now_imp_ms']:.3f} | "
                  f"{before['now_ratio']:.3f}x | {before['now_paired']:.3f}x |"]
    if errors:
        lines += ["", "Failed variants:", ""] + [f"- {n}: {e}" for n, e in errors.items()]
    table = "\n".join(lines)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    summary = (f"{args.repetitions} repetitions of one {steps}-step epoch per variant, "
               f"interleaved, after {args.warmup} warm-up epoch(s); xla: "
               f"steps_per_execution={_xla_steps(steps)}")
    print(table)
    print(f"({summary}; {machine})")

    versions = next((i for i in info.values() if i), {})
    report = {"benchmark": "step_time", "quick": args.quick, "steps_per_epoch": steps,
              "repetitions": args.repetitions, "warmup_epochs": args.warmup,
              "batch_size": BATCH, "learning_rate": LEARNING_RATE, "model": "Lenet-300-100",
              "compile_settings": {s: _compile_kwargs(s, _xla_steps(steps)) for s in args.settings},
              "machine": machine, "tensorflow": versions.get("tensorflow"),
              "baseline": before, "rows": rows, "imp_vs_dense": ratios,
              "keras3_vs_tf_keras": engines, "errors": errors}
    RESULTS.mkdir(exist_ok=True)
    name = "step_time" + ("_quick" if args.quick else "") + \
        ("" if args.settings == list(SETTINGS) else "_" + "_".join(args.settings))
    command = " ".join(["python benchmarks/step_time.py", *(argv if argv is not None
                                                            else sys.argv[1:])])
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(f"Command: `{command}`\n\nMachine: {machine}\n\n"
                                        f"{summary}.\n\n{table}\n")


if __name__ == "__main__":
    main()
