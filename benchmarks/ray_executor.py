"""The search on Ray: the main job on this machine's cores, and the paper's protocol on a
simulated cluster.

1. ``main_job``: the README's main job (``tf-lottery run examples/lenet_mnist_quick.yaml``:
   Lenet-300-100 on MNIST, 7 rounds of 1,500 iterations, both controls: 22 trainings), once
   with the local executor and once with ``executor=ray workers=2``, each command a process
   of its own timed from start to exit (Ray's start-up included), the two interleaved
   ``--repeats`` times (the order alternating). Reports the wall times, their ratio
   (ray / local; the aim: at most 0.8), whether the two runs committed the same results
   (every round's masks bit for bit, every record but its wall time), and the trainings'
   own times (measured where they ran): two side by side against one at a time.
2. ``simulation``: the full MNIST protocol's graph, 3 trials x 55 trainings (19 ticket
   rounds, 2 controls in rounds 1-18), each training a Ray task that sleeps for the
   training's measured wall time (``benchmarks/results/paper_mnist_full/results.json``)
   divided by ``--scale`` (default 500). The tasks are scheduled by the executor's own
   loop (``tf_lottery.search.executors.run_graph``: tickets first, ``slots`` in flight) on a
   stand-in graph that makes trainings ready by the search graph's rule (round r's ticket
   and controls once round r-1's ticket returned; trials independent). For 1, 2, 9, 27
   and 165 slots: the projected wall time of the protocol (measured x scale) against the
   graph's critical path (the longest chain of tickets 0..r-1 and then any training of
   round r), the longest trial's chain of 19 tickets, and max(critical path, all the work
   / slots).

    python benchmarks/ray_executor.py                 # both parts
    python benchmarks/ray_executor.py --quick         # main job of 2 rounds x 300 its
    python benchmarks/ray_executor.py --parts simulation --scale 1000

Prints markdown tables; writes benchmarks/results/ray_executor[_quick].{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
MAIN_JOB = ROOT / "examples" / "lenet_mnist_quick.yaml"
DURATIONS = RESULTS / "paper_mnist_full" / "results.json"
SLOTS = (1, 2, 9, 27, 165)
SPEED_AIM, BOUND_AIM = 0.8, 1.10
LOGICAL_CPUS = 32  # the simulation's Ray runtime: more than the graph ever has in flight


# --- 1. the main job, local against Ray -----------------------------------------------

def _main_job(executor: str, run_dir: Path, overrides: list) -> float:
    """One ``tf-lottery run`` of the main job in a process of its own; its wall time (the
    trainings' own, each measured where it ran, are in its results.json)."""
    ray = ["executor=ray", "workers=2"] if executor == "ray" else []
    command = [str(Path(sys.executable).parent / "tf-lottery"), "run", str(MAIN_JOB),
               f"run_dir={run_dir}", "verbose=0", *overrides, *ray]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    wall = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return wall


def _differences(local: Path, ray: Path) -> list:
    """What differs between two run directories' committed rounds: records (wall times
    aside) and masks, bit for bit; empty if nothing."""
    import numpy as np

    from tf_lottery.core.masks import Masks
    from tf_lottery.runs.results import SearchResult
    from tf_lottery.runs.rundir import RunDirectory

    def records(path):
        return [dict(r.to_dict(), wall_time=None) for r in SearchResult.load(path).records]

    out = [] if records(local) == records(ray) else ["records"]
    runs = RunDirectory(local), RunDirectory(ray)
    for round_index in range(runs[0].completed_rounds(0)):
        files = [run.round_files(0, round_index) for run in runs]
        for variant in ("ticket", "random_reinit", "random_pruning"):
            paths = [f.masks(variant) for f in files]
            if not paths[0].is_file():
                continue
            masks = [Masks.load(p) for p in paths]
            if masks[0].keys() != masks[1].keys() or not all(
                    np.array_equal(masks[0][k], masks[1][k]) for k in masks[0]):
                out.append(f"round {round_index} {variant} masks")
    return out


def main_job(repeats: int, overrides: list) -> dict:
    runs, trainings = {"local": [], "ray": []}, {"local": [], "ray": []}
    differences = []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(repeats):
            order = ("local", "ray") if repeat % 2 == 0 else ("ray", "local")
            dirs = {executor: Path(scratch) / f"{executor}_{repeat}" for executor in order}
            for executor in order:
                runs[executor].append(_main_job(executor, dirs[executor], overrides))
                print(f"  main job, {executor}, repetition {repeat + 1}: "
                      f"{runs[executor][-1]:.1f} s", flush=True)
            differences += [f"repetition {repeat + 1}: {d}"
                            for d in _differences(dirs["local"], dirs["ray"])]
            for executor, path in dirs.items():
                trainings[executor] += _training_times(path)
            for path in dirs.values():
                shutil.rmtree(path)
    ratios = [on_ray / local for local, on_ray in zip(runs["local"], runs["ray"])]
    training = {executor: statistics.median(times) for executor, times in trainings.items()}
    return {"local_s": runs["local"], "ray_s": runs["ray"], "ratios": ratios,
            "median_ratio": statistics.median(ratios), "differences": differences,
            "overrides": overrides, "median_training_s": training,
            # the work per second of 2 trainings side by side against one at a time
            "throughput_ratio": 2 * training["local"] / training["ray"]}


def _training_times(run_dir: Path) -> list:
    """Every training's wall time (measured where it ran), round 0's aside: it builds and
    compiles what the later ones reuse."""
    records = json.loads((run_dir / "results.json").read_text())["records"]
    return [r["wall_time"] for r in records if r["round"] > 0]


# --- 2. the paper's protocol on a simulated cluster -----------------------------------

@dataclasses.dataclass(frozen=True)
class StandIn:
    """One training of the protocol, as the scheduler sees it."""

    trial: int
    round: int
    variant: str
    seconds: float  # its measured wall time, scaled down


class ProtocolGraph:
    """The protocol's trainings made ready by the search graph's rule: round r's ticket
    and controls once round r-1's ticket returned (round 0: the ticket alone)."""

    def __init__(self, durations: dict, rounds: int, controls: tuple):
        self.durations, self.rounds, self.controls = durations, rounds, controls
        self.pending = []
        self.left = len(durations)
        self.in_flight = self.peak = 0  # trainings taken and not returned; the most at once
        for trial in sorted({key[0] for key in durations}):
            self._make_round(trial, 0)

    def _make_round(self, trial: int, round_index: int) -> None:
        for variant in ("ticket", *(self.controls if round_index else ())):
            self.pending.append(StandIn(trial, round_index, variant,
                                        self.durations[trial, round_index, variant]))

    @property
    def done(self) -> bool:
        return self.left == 0

    def ready(self) -> list:
        return list(self.pending)

    def take(self, spec: StandIn) -> None:
        self.pending.remove(spec)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    def finished(self, spec: StandIn) -> None:
        self.left -= 1
        self.in_flight -= 1
        if spec.variant == "ticket" and spec.round < self.rounds - 1:
            self._make_round(spec.trial, spec.round + 1)


def _sleep(spec: StandIn) -> StandIn:
    time.sleep(spec.seconds)
    return spec


def _longest_path(durations: dict) -> float:
    """The graph's critical path: a training of round r ends, at the earliest, when its
    trial's tickets of rounds 0..r-1 and it have run one after the other."""
    def chain(trial, rounds):
        return sum(durations[trial, r, "ticket"] for r in range(rounds))
    return max(chain(trial, round_index) + seconds
               for (trial, round_index, _), seconds in durations.items())


def simulation(scale: float) -> dict:
    import ray

    from tf_lottery.search.executors import run_graph

    records = json.loads(DURATIONS.read_text())["records"]
    durations = {(r["trial"], r["round"], r["variant"]): r["wall_time"] for r in records}
    rounds = 1 + max(r["round"] for r in records)
    controls = tuple(sorted({r["variant"] for r in records} - {"ticket"}, reverse=True))
    trials = sorted({r["trial"] for r in records})
    chain = max(sum(durations[t, r, "ticket"] for r in range(rounds)) for t in trials)
    critical = _longest_path(durations)
    work = sum(durations.values())
    ray.init(num_cpus=LOGICAL_CPUS, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(_sleep).options(num_cpus=1)
        ray.get([task.remote(StandIn(0, 0, "warm-up", 1.0)) for _ in range(LOGICAL_CPUS)])
        rows = []
        for slots in SLOTS:
            graph = ProtocolGraph({k: v / scale for k, v in durations.items()}, rounds,
                                  controls)
            began = time.perf_counter()
            run_graph(ray, graph, task.remote, slots)
            projected = (time.perf_counter() - began) * scale
            bound = max(critical, work / slots)
            rows.append({"slots": slots, "projected_s": projected,
                         "critical_path_s": critical, "ticket_chain_s": chain,
                         "bound_s": bound, "over_critical_path": projected / critical,
                         "over_ticket_chain": projected / chain,
                         "over_bound": projected / bound, "peak_in_flight": graph.peak})
            assert graph.peak <= LOGICAL_CPUS, "the runtime, not the slots, limited it"
            print(f"  simulation, {slots} slots: {projected / 3600:.2f} h projected, "
                  f"{projected / bound:.3f}x the bound", flush=True)
    finally:
        ray.shutdown()
    return {"scale": scale, "trainings": len(durations), "trials": len(trials),
            "rounds": rounds, "work_s": work, "critical_path_s": critical,
            "ticket_chain_s": chain, "longest": max(durations, key=durations.get),
            "longest_s": max(durations.values()),
            "rows": rows,
            "source": str(DURATIONS.relative_to(ROOT))}


# --- report ---------------------------------------------------------------------------

def _markdown(result: dict) -> str:
    lines = [f"# Ray executor ({result['machine']}, {result['date']})", ""]
    job = result.get("main_job")
    if job:
        lines += ["## The main job: executor=ray workers=2 against the local executor", "",
                  f"Overrides: {' '.join(job['overrides']) or 'none'}; wall time of the "
                  "whole command (s), per repetition:", "",
                  "| repetition | local | ray | ray / local |", "| ---: | ---: | ---: | ---: |"]
        for i, (local, ray, ratio) in enumerate(zip(job["local_s"], job["ray_s"],
                                                    job["ratios"])):
            lines.append(f"| {i + 1} | {local:.1f} | {ray:.1f} | {ratio:.3f} |")
        same = "yes" if not job["differences"] else "NO: " + ", ".join(job["differences"])
        lines += ["", f"Median ratio {job['median_ratio']:.3f} (aim <= {SPEED_AIM}); "
                  f"results identical (masks bit for bit, records): {same}.", "",
                  f"One training (rounds 1 on, median): {job['median_training_s']['local']:.2f}"
                  f" s alone in the local process, {job['median_training_s']['ray']:.2f} s "
                  f"on a Ray worker beside another: two side by side do "
                  f"{job['throughput_ratio']:.2f}x the work per second of one at a time.", ""]
    sim = result.get("simulation")
    if sim:
        trial, round_index, variant = sim["longest"]
        lines += ["## The full MNIST protocol on a simulated cluster", "",
                  f"{sim['trials']} trials x {sim['trainings'] // sim['trials']} trainings "
                  f"({sim['rounds']} rounds), stand-in tasks sleeping for each training's "
                  f"wall time in `{sim['source']}` / {sim['scale']:g}; all the work in one "
                  f"process: {sim['work_s'] / 3600:.2f} h. Critical path of the graph: "
                  f"{sim['critical_path_s'] / 3600:.2f} h; the longest trial's chain of "
                  f"tickets: {sim['ticket_chain_s'] / 3600:.2f} h (they differ where a control "
                  f"outlasts the tickets after it: the longest training, trial {trial}'s "
                  f"round {round_index} {variant}, took "
                  f"{sim['longest_s'] / 3600:.2f} h).", "",
                  "| slots | projected | critical path | ticket chain | "
                  "max(critical path, work / slots) | projected / critical path | "
                  "projected / ticket chain | projected / bound | most in flight |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row in sim["rows"]:
            lines.append(f"| {row['slots']} | {row['projected_s'] / 3600:.2f} h | "
                         f"{row['critical_path_s'] / 3600:.2f} h | "
                         f"{row['ticket_chain_s'] / 3600:.2f} h | "
                         f"{row['bound_s'] / 3600:.2f} h | {row['over_critical_path']:.3f} | "
                         f"{row['over_ticket_chain']:.3f} | {row['over_bound']:.3f} | "
                         f"{row['peak_in_flight']} |")
        lines += ["", f"Aim: within {BOUND_AIM:.2f}x of the critical path from 9 slots on."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the main job cut to 2 rounds of 300 iterations")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scale", type=float, default=500.0,
                        help="the simulation's training times divided by this")
    parser.add_argument("--parts", nargs="+", choices=("main_job", "simulation"),
                        default=["main_job", "simulation"])
    args = parser.parse_args(argv)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                         f"Python {platform.python_version()}",
              "date": time.strftime("%Y-%m-%d %H:%M"), "command": sys.argv}
    if "main_job" in args.parts:
        overrides = ["rounds=2", "steps_per_round=300"] if args.quick else []
        result["main_job"] = main_job(args.repeats, overrides)
    if "simulation" in args.parts:
        result["simulation"] = simulation(args.scale)
    text = _markdown(result)
    print(text)
    name = "ray_executor_quick" if args.quick else "ray_executor"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
    (RESULTS / f"{name}.md").write_text(text)


if __name__ == "__main__":
    main()
