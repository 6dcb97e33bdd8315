"""Instability analysis (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery
Ticket Hypothesis"): is a network, from rewind step k on, stable to the order of its data?

For the dense network (round 0) and the tickets of chosen rounds of a search: train the
network to step k (dense, one data order), then two copies from there to the end of a
round, each with its own data order, under the round's masks; evaluate the test error (and
loss) at evenly spaced points of the straight line between the two results. The **error
barrier** is the highest error on that line minus the mean of its two ends: about 0 means
the copies found the same linearly connected minimum (stable); IMP finds matching tickets
when it rewinds to a stable step (LeNet on MNIST is stable at step 0 in the paper).

Everything goes to ``RUN_DIR/instability/``: ``instability.json`` (every repetition's path,
written after each, so an interrupted analysis resumes), ``instability.png`` (barrier
against rewind step, a line per sparsity) and TensorBoard scalars in ``logs/``.

Example::

    search = tfl.LotteryTicketSearch(build, schedule, "runs/lenet")
    search.run(train, validation, test)                      # the tickets of every round
    result = tfl.instability(search, train, validation, test,
                             rewind_steps=(0, 100, 500), rounds=(0, 3), repetitions=2)
    result.summary()   # per (round, rewind step): the barrier's mean, min and max
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf

from tf_lottery.core.masks import Masks
from tf_lottery.foundations.atomic import read_json, remove, replacing, write_json
from tf_lottery.foundations.checks import whole_number
from tf_lottery.foundations.errors import RunDirectoryError, SettingError
from tf_lottery.imp.rewind import RewindPoint
from tf_lottery.runs.results import png_bytes, pyplot
from tf_lottery.search.inputs import TrainingInput
from tf_lottery.search.training import TrainingSpec, train

_FILE = "instability.json"


def error_barrier(errors) -> float:
    """The highest value on a linear path minus the mean of its two ends (Frankle et al.
    2020, definition 1), for errors evaluated at evenly spaced points of the path.

        error_barrier([0.02, 0.05, 0.03])   # 0.025
    """
    errors = np.asarray(errors, dtype=np.float64)
    return float(errors.max() - (errors[0] + errors[-1]) / 2)


@dataclasses.dataclass(frozen=True)
class InstabilityResult:
    """The measured paths: one entry per (round, rewind step, repetition), with its
    ``weights_remaining``, the path's ``alphas``, ``test_error`` and ``test_loss``, and the
    ``error_barrier`` and ``loss_barrier``."""

    setup: dict
    entries: tuple

    def summary(self) -> list[dict]:
        """Per (round, rewind step): the error and loss barriers' mean, min and max over the
        repetitions, ordered by round then step."""
        groups = {}
        for entry in self.entries:
            groups.setdefault((entry["round"], entry["rewind_step"]), []).append(entry)
        rows = []
        for (round_index, step), entries in sorted(groups.items()):
            row = {"round": round_index, "rewind_step": step,
                   "weights_remaining": entries[0]["weights_remaining"],
                   "repetitions": len(entries)}
            for key in ("error_barrier", "loss_barrier"):
                values = [entry[key] for entry in entries]
                row.update({key: float(np.mean(values)), f"{key}_min": min(values),
                            f"{key}_max": max(values)})
            rows.append(row)
        return rows

    def table(self) -> str:
        """The summary as aligned text."""
        lines = ["round  weights  rewind step  error barrier (min-max)     loss barrier"]
        for row in self.summary():
            lines.append(
                f"{row['round']:>5}  {100 * row['weights_remaining']:6.1f}%  "
                f"{row['rewind_step']:>11}  {100 * row['error_barrier']:6.2f} pp "
                f"({100 * row['error_barrier_min']:.2f}-{100 * row['error_barrier_max']:.2f})"
                f"  {row['loss_barrier']:12.4f}")
        return "\n".join(lines)

    def plot_png(self) -> bytes:
        """The error barrier (percentage points) against the rewind step, a line per
        sparsity, the spread over repetitions as bars."""
        from matplotlib import ticker

        plt = pyplot()
        figure, axis = plt.subplots(figsize=(6, 4.2))
        summary = self.summary()
        for round_index in sorted({row["round"] for row in summary}):
            rows = [row for row in summary if row["round"] == round_index]
            steps = [row["rewind_step"] for row in rows]
            mean = np.array([row["error_barrier"] for row in rows]) * 100
            low = mean - np.array([row["error_barrier_min"] for row in rows]) * 100
            high = np.array([row["error_barrier_max"] for row in rows]) * 100 - mean
            axis.errorbar(steps, mean, yerr=[low, high], marker="o", capsize=3,
                          label=f"{100 * rows[0]['weights_remaining']:.1f}% of weights")
        steps = sorted({row["rewind_step"] for row in summary})
        axis.set_xscale("symlog", linthresh=max(1, min((s for s in steps if s), default=1)))
        axis.set_xticks(steps, [str(step) for step in steps])
        axis.xaxis.set_minor_locator(ticker.NullLocator())
        axis.set_xlabel("rewind step k")
        axis.set_ylabel("test error barrier (percentage points)")
        axis.axhline(0, color="gray", linewidth=0.8)
        axis.grid(True, alpha=0.3)
        axis.legend()
        figure.tight_layout()
        return png_bytes(figure, dpi=110)

    def save(self, folder) -> None:
        """Write ``instability.json``, ``instability.png`` and TensorBoard scalars
        (``logs/``, written anew: the barriers against the rewind step, a run per round)."""
        folder = Path(folder)
        self.save_json(folder)
        with replacing(folder / "instability.png") as staged:
            staged.write_bytes(self.plot_png())
        summary = self.summary()
        remove(folder / "logs")
        with replacing(folder / "logs") as logs:
            for round_index in sorted({row["round"] for row in summary}):
                writer = tf.summary.create_file_writer(str(logs / f"round_{round_index:02d}"))
                with writer.as_default():
                    for row in summary:
                        if row["round"] == round_index:
                            for key in ("error_barrier", "loss_barrier"):
                                tf.summary.scalar(f"instability/{key}", row[key],
                                                  step=row["rewind_step"])
                writer.close()

    def save_json(self, folder) -> None:
        """Write ``instability.json``: what a resumed analysis starts from."""
        write_json(Path(folder) / _FILE, {"setup": self.setup, "entries": list(self.entries),
                                          "summary": self.summary()})

    @classmethod
    def load(cls, folder) -> InstabilityResult:
        saved = read_json(Path(folder) / _FILE)
        return cls(saved["setup"], tuple(saved["entries"]))


def instability(search, train, validation, test, rewind_steps=(0,), rounds=(0,),
                repetitions: int = 2, points: int = 11, trial: int = 0,
                data_identity=None) -> InstabilityResult:
    """Measure the error barrier between two copies trained from each of ``rewind_steps``
    for the dense network (round 0) and the tickets of ``rounds`` of ``search`` (committed
    in its run directory), ``repetitions`` times each; resumes what ``RUN_DIR/instability``
    holds. ``train``, ``validation`` and ``test`` are the search's data (arrays: each copy
    draws its own order); the path is evaluated on ``test`` at ``points`` points.
    See the module for an example.
    """
    rewind_steps, rounds = _checked(search, rewind_steps, rounds, repetitions, points)
    if TrainingInput(train, search.options.batch_size).arrays is None:
        raise SettingError("an instability analysis trains two copies with different data "
                           "orders; a tf.data.Dataset yields its own order: give the data as "
                           "(x, y) arrays")
    run_dir = search.run_dir
    tickets = {r: _committed_masks(run_dir, trial, r) for r in rounds if r > 0}
    with run_dir.locked(trial):
        prepared = search.prepared_trial(train, validation, test, trial, data_identity)
        masks = {0: prepared.masks, **tickets}
        folder = run_dir.instability_dir()
        setup = {"trial": trial, "points": points,
                 "steps_per_round": search.schedule.steps_per_round}
        result = _resumed(folder, setup)
        done = {(e["round"], e["rewind_step"], e["repetition"]) for e in result.entries}
        entries = list(result.entries)
        for step in rewind_steps:
            start = None
            for round_index in rounds:
                for repetition in range(repetitions):
                    if (round_index, step, repetition) in done:
                        continue
                    start = start or _trained_to(prepared, step, trial)
                    entries.append(_measure(prepared, start, masks[round_index], round_index,
                                            repetition, points, search.schedule.steps_per_round,
                                            trial))
                    result = InstabilityResult(setup, tuple(entries))
                    result.save_json(folder)  # each repetition kept at once
        result.save(folder)
    return result


def _checked(search, rewind_steps, rounds, repetitions, points) -> tuple:
    steps_per_round = search.schedule.steps_per_round
    steps = tuple(whole_number(k, "rewind_steps", minimum=0) for k in rewind_steps)
    for k in steps:
        if k >= steps_per_round:
            raise SettingError(f"rewind step {k} is not within a round of {steps_per_round} "
                               "steps: the copies train from it to the round's end")
    rounds = tuple(whole_number(r, "rounds", minimum=0) for r in rounds)
    for r in rounds:
        if r > search.schedule.rounds:
            raise SettingError(f"round {r} does not exist: the search has rounds 0 to "
                               f"{search.schedule.rounds}")
    whole_number(repetitions, "repetitions")
    whole_number(points, "points", minimum=3)
    if not steps or not rounds:
        raise SettingError("give at least one rewind step and one round")
    return steps, rounds


def _committed_masks(run_dir, trial: int, round_index: int) -> Masks:
    if run_dir.completed_rounds(trial) <= round_index:
        raise RunDirectoryError(
            f"round {round_index} of trial {trial} is not committed in {run_dir.path}: run the "
            f"search to that round first (its ticket's masks are what is analysed)")
    return Masks.load(run_dir.round_files(trial, round_index).masks("ticket"))


def _resumed(folder: Path, setup: dict) -> InstabilityResult:
    """What an earlier analysis of the same setup measured (nothing if none)."""
    if not (folder / _FILE).is_file():
        return InstabilityResult(setup, ())
    result = InstabilityResult.load(folder)
    if result.setup != setup:
        raise RunDirectoryError(
            f"{folder / _FILE} holds an analysis of another setup ({result.setup}, now "
            f"{setup}); give the same trial and points to resume it, or move that folder away "
            "to start another")
    return result


def _trained_to(prepared, step: int, trial: int) -> RewindPoint:
    """The dense network trained from θ0 to ``step`` (θ0 itself for step 0)."""
    if step == 0:
        return prepared.theta0
    spec = TrainingSpec(trial, 0, "ticket", _seed("rewind", trial, step), range(0, step),
                        prepared.masks, prepared.theta0)
    return RewindPoint(train(prepared.context, spec).trained, step)


def _measure(prepared, start: RewindPoint, masks: Masks, round_index: int, repetition: int,
             points: int, steps_per_round: int, trial: int) -> dict:
    """Two copies from ``start`` under ``masks`` with their own data orders, and the test
    error and loss along the line between them."""
    ends = []
    for copy in (0, 1):
        spec = TrainingSpec(trial, round_index, "ticket",
                            _seed("copy", trial, start.step, round_index, repetition, copy),
                            range(start.step, steps_per_round), masks, start)
        ends.append(train(prepared.context, spec).trained)
    model, alphas = prepared.context.model, np.linspace(0.0, 1.0, points)
    errors, losses = [], []
    for alpha in alphas:
        RewindPoint({path: (1 - alpha) * ends[0][path] + alpha * ends[1][path]
                     for path in ends[0]}, steps_per_round).restore(model, masks)
        metrics = prepared.context.evaluator(model)
        losses.append(metrics["test_loss"])
        errors.append(1.0 - metrics["test_accuracy"] if "test_accuracy" in metrics
                      else float("nan"))
    return {"round": round_index, "rewind_step": start.step, "repetition": repetition,
            "weights_remaining": masks.fraction_kept() if len(masks) else 1.0,
            "alphas": alphas.tolist(), "test_error": errors, "test_loss": losses,
            "error_barrier": error_barrier(errors), "loss_barrier": error_barrier(losses)}


def _seed(*parts) -> int:
    """A seed of its own for each training of the analysis (none of the search's)."""
    numbers = [part if isinstance(part, int) else sum(map(ord, part)) for part in parts]
    return int(np.random.SeedSequence(numbers).generate_state(1)[0]) % 2 ** 31
