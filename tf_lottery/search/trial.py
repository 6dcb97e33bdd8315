"""One trial of a search: its model, its trainings, their evaluation and their backups.

A :class:`Trial` trains the ticket and the controls of each round from their starting
weights under their masks, evaluating the compiled loss and metrics on validation and test
data every ``eval_every`` iterations; the early-stop iteration is the best value of the
search's ``monitor`` (minimum validation loss by default, as in the paper). A training in
progress is saved at every epoch end (:class:`EpochBackup`), so a killed run resumes from
its last epoch, bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from tf_lottery.core.controls import CONTROLS
from tf_lottery.core.masks import Masks
from tf_lottery.core.plan import RoundPlan
from tf_lottery.engines import Callback, engine_for
from tf_lottery.engines.fused import FusedSteps
from tf_lottery.foundations.atomic import remove, replacing
from tf_lottery.foundations.errors import DivergedError, reason
from tf_lottery.foundations.integrity import verify, write_manifest
from tf_lottery.foundations.interrupts import raise_if_interrupted
from tf_lottery.imp.rewind import (
    OptimizerReset,
    RewindPoint,
    load_rewind_point,
    rewind_point_dir,
    save_rewind_point,
)
from tf_lottery.imp.rounds import start_round, trained_masks
from tf_lottery.runs.results import VARIANTS, RoundRecord
from tf_lottery.runs.rundir import read_json, write_json


@dataclasses.dataclass(frozen=True)
class TrialSetup:
    """What every training of a search shares; each trial gets it explicitly."""

    schedule: object                # the RewindingSchedule
    settings: object                # the ImpSettings
    options: object                 # the SearchSettings
    steps_per_execution: int        # as the search resolved "auto" for the model's engine
    run_dir: object                 # the RunDirectory
    callbacks: tuple = ()           # the user's Keras callbacks, added to every fit
    summaries: object = None        # the SearchSummaries writing TensorBoard logs (or None)
    progress: object = None         # the Progress printing to the terminal (or None)

    def better(self, value: float, best: float) -> bool:
        """Whether ``value`` of the monitored metric beats ``best``."""
        return value < best if self.options.mode == "min" else value > best

    @property
    def plan(self) -> RoundPlan:
        return RoundPlan(self.schedule, self.settings.policy)

    def steps(self, variant: str, round_index: int) -> range:
        """The optimizer steps one training trains: the ticket's are the rewind policy's; a
        control trains the ticket's where rounds rewind (the same budget and schedule
        position, as open_lth's controls do), else a whole round from step 0."""
        if variant == "ticket" or self.settings.policy.rewinds_weights:
            return self.plan.steps(round_index)
        return range(0, self.schedule.steps_per_round)

    def round_seed(self, trial: int, round_index: int, variant: str) -> int:
        """The seed of one training: shuffling, dropout and the controls' draws."""
        return (self.settings.seed + trial) * 1_000_003 + round_index * 10 + \
            VARIANTS.index(variant)


@dataclasses.dataclass
class TrainingState:
    """Where one training is: steps taken, every evaluation so far (the curve), the best and
    the last, the step whose loss was not finite (if any), and the seconds it has trained
    (over every process that ran it). The epoch backup saves and restores it whole."""

    step: int = 0
    best: Optional[dict] = None
    last: Optional[dict] = None
    diverged_at: Optional[int] = None
    curve: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def to_config(self) -> dict:
        return dataclasses.asdict(self)


class Evaluator:
    """The compiled loss and metrics of a model on fixed data sets, through the model's own
    ``test_step``; keys are ``<set>_<metric>`` (``val_loss``, ``test_accuracy``).

    On TensorFlow, without a distribution strategy, one evaluation is one call of a
    TensorFlow graph that runs ``test_step`` over every set's batches, resetting the metrics
    between sets (traced again when the model is compiled again); without XLA, whose CPU
    kernels are slower than TensorFlow's for large evaluation batches. It skips
    ``evaluate``'s per-call machinery (iterator, callbacks, eager metric resets: 20-40 ms
    per MNIST evaluation point, beside 70-80 ms of computation; measured by
    ``benchmarks/evaluation_point.py``). Elsewhere (JAX, strategies) it is Keras's
    ``evaluate`` of each set. Both give what ``evaluate`` gives: the metrics after the set's
    last batch.

        evaluator = Evaluator({"val": EvaluationInput((x_val, y_val), "validation")},
                              in_graph=True)
        evaluator(model)  # {"val_loss": 0.08, "val_accuracy": 0.977}
    """

    def __init__(self, sets: dict, in_graph: bool):
        self._sets = {name: data.batches() for name, data in sets.items()}
        self._in_graph = in_graph
        self._graph, self._traced_for = None, None

    def __call__(self, model) -> dict:
        if self._in_graph:
            return {key: float(value) for key, value in self._graph_of(model)().items()}
        out = {}
        for name, dataset in self._sets.items():
            metrics = model.evaluate(dataset, verbose=0, return_dict=True)
            out.update({f"{name}_{key}": float(value) for key, value in metrics.items()})
        return out

    def _graph_of(self, model):
        """The graph evaluating every set, for the model as it is compiled now."""
        if self._traced_for is not model.compile_settings:
            sets = self._sets

            @tf.function(jit_compile=False)
            def evaluate():
                out = {}
                for name, dataset in sets.items():
                    for metric in model.metrics:
                        metric.reset_state()
                    batches = iter(dataset)
                    logs = model.test_step(next(batches))
                    for batch in batches:
                        logs = model.test_step(batch)
                    out.update({f"{name}_{key}": value for key, value in logs.items()})
                return out
            self._graph, self._traced_for = evaluate, model.compile_settings
        return self._graph


class RoundTracker(Callback):
    """Evaluates every ``eval_every`` iterations, remembers the best ``monitor`` value, stops
    the fit after the training's ``steps`` or at a non-finite loss; captures a rewind point if
    asked. Iterations are the optimizer's: ``steps`` (a range) starts where its counter
    does, and ``batches_per_step`` batches make one step (gradient accumulation)."""

    def __init__(self, setup: TrialSetup, evaluator: Evaluator, steps: range, capture=None,
                 listeners=(), batches_per_step: int = 1):
        super().__init__()
        self.setup, self.evaluator, self.steps = setup, evaluator, steps
        self.capture = capture  # (iteration, callback(model)) or None
        self.listeners = listeners  # called with the state after every evaluation
        self.batches_per_step = batches_per_step
        self.state = TrainingState()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.state.step

    def on_train_batch_end(self, batch, logs=None):
        """Called once per compiled call of ``steps_per_execution`` steps: ``batch`` is the
        index (in the epoch) of the call's last batch."""
        raise_if_interrupted()
        state, setup = self.state, self.setup
        state.step = self._epoch_start + (batch + 1) // self.batches_per_step
        iteration = self.steps.start + state.step
        if self.capture and iteration == self.capture[0]:
            self.capture[1](self.model)
        if iteration % setup.options.eval_every == 0 or state.step == len(self.steps):
            metrics = self.evaluator(self.model)
            train_loss = float(logs["loss"]) if logs and "loss" in logs else 0.0
            if not (math.isfinite(metrics["val_loss"]) and math.isfinite(train_loss)):
                state.diverged_at = iteration
                self.model.stop_training = True
                return
            state.last = dict(metrics, iteration=iteration)
            state.curve.append(dict(state.last, train_loss=train_loss))
            if state.best is None or setup.better(metrics[setup.options.monitor],
                                                  state.best[setup.options.monitor]):
                state.best = state.last
            for listener in self.listeners:
                listener(state)
        if state.step >= len(self.steps):
            self.model.stop_training = True


class EpochBackup(Callback):
    """One training, saved at every epoch end into ``folder/epoch_NNNN`` (weights, optimizer
    state, training state), so a killed run resumes from its last epoch. The last backup of
    a finished training stays until its round is committed: a run killed during a later
    training of the round restores it instead of training it again."""

    def __init__(self, folder, identity: dict, tracker: RoundTracker, optimizer_variables):
        super().__init__()
        self.folder, self.identity, self.tracker = Path(folder), identity, tracker
        self.optimizer_variables = optimizer_variables

    def on_train_begin(self, logs=None):
        self._began, self._before = time.perf_counter(), self.tracker.state.seconds

    def on_train_end(self, logs=None):
        self._count_time()

    def _count_time(self):
        self.tracker.state.seconds = self._before + time.perf_counter() - self._began

    def on_epoch_end(self, epoch, logs=None):
        self._count_time()
        previous = sorted(self.folder.glob("epoch_*"))
        with replacing(self.folder / f"epoch_{epoch + 1:04d}", keep_existing=True) as stage:
            stage.mkdir()
            RewindPoint.capture(self.model, self.tracker.state.step).save(stage / "weights")
            np.savez(stage / "optimizer.npz", *[v.numpy() for v in self.optimizer_variables])
            write_json(stage / "state.json", dict(self.identity, epoch=epoch + 1,
                                                  state=self.tracker.state.to_config()))
            write_manifest(stage)
        for old in previous:
            remove(old)

    def restore(self, model, masks) -> int:
        """Load the last backup of this very training, if any: the epoch to start at."""
        backups = sorted(self.folder.glob("epoch_*"))
        if not backups:
            return 0
        verify(backups[-1])
        saved = read_json(backups[-1] / "state.json")
        if any(saved.get(key) != value for key, value in self.identity.items()):
            self.discard()  # a backup of another training: that one was committed or redone
            return 0
        RewindPoint.load(backups[-1] / "weights", model).restore(model, masks)
        with np.load(backups[-1] / "optimizer.npz") as values:
            for index, variable in enumerate(self.optimizer_variables):
                variable.assign(values[f"arr_{index}"])
        self.tracker.state = TrainingState(**saved["state"])
        return saved["epoch"]

    def discard(self) -> None:
        remove(self.folder)


class Training(NamedTuple):
    """One training's record, masks, trained values of the masked weights, and its
    evaluations (the curve: iteration, train loss, validation and test metrics)."""

    record: RoundRecord
    masks: Masks
    weights: dict
    curve: list


class Trial:
    """One trial: its prepared model, optimizer reset, evaluator and rewind checkpoints.

    ``model`` is the LotteryModel of the trial (compiled), ``fresh_draw(seed)`` gives its
    model's weights drawn again (a RewindPoint: the random-reinit control's start).
    """

    def __init__(self, setup: TrialSetup, trial: int, model, fresh_draw, train, eval_sets):
        self.setup, self.trial, self.model = setup, trial, model
        self.fresh_draw = fresh_draw
        self.train_data = train  # a TrainingInput
        # batches per optimizer step (gradient accumulation): calls and epochs hold whole steps
        self.batches_per_step = engine_for(model).batches_per_step(model.optimizer)
        self.fused = FusedSteps(train, setup.steps_per_execution * self.batches_per_step)
        self.reset = OptimizerReset(model.optimizer, model.trainable_variables)
        # in a strategy's scope (the search makes trials there) Keras's evaluate runs the
        # replicas; a graph of test_step would not
        self.evaluator = Evaluator(eval_sets, in_graph=engine_for(model).tensorflow_graphs
                                   and not tf.distribute.has_strategy())
        self.rewind_dir = setup.run_dir.rewind_dir(trial)
        self.in_progress = setup.run_dir.in_progress(trial)
        if not rewind_point_dir(self.rewind_dir, 0).exists():
            save_rewind_point(model, self.rewind_dir, 0)
        self.theta0 = load_rewind_point(self.rewind_dir, 0, model)  # as on disk, verified
        self._rewind_point = None

    def rewind_point(self) -> RewindPoint:
        """Where rounds start under a rewinding policy (θ0, or the weights after k steps),
        and what criteria compare the trained weights with (θ0 under the others)."""
        step = self.setup.settings.policy.rewind_step
        if not step:
            return self.theta0
        if self._rewind_point is None:
            self._rewind_point = load_rewind_point(self.rewind_dir, step, self.model)
        return self._rewind_point

    def resume_state(self, done: int):
        """The ticket's masks and starting weights for round ``done``."""
        if done == 0:
            return self.model.masks, self.theta0
        previous = self.setup.run_dir.round(self.trial, done - 1)
        masks = Masks.load(previous / "next_masks.npz")
        if self.setup.settings.policy.rewinds_weights:
            return masks, self.rewind_point()
        return masks, RewindPoint.load(previous / "ticket" / "weights", self.model)

    def round(self, round_index: int, masks: Masks, start: RewindPoint, stage: Path):
        """Train the ticket and the controls of one round into ``stage``; return the
        trainings, the ticket's trained weights and the next round's masks (or None)."""
        setup = self.setup
        schedule, policy = setup.schedule, setup.settings.policy
        self._keep_backups_of(round_index)
        capture = None
        if round_index == 0 and policy.rewind_step:
            capture = (policy.rewind_step, lambda model: save_rewind_point(
                model, self.rewind_dir, policy.rewind_step))
        trainings = [self.train("ticket", round_index, masks, start, capture)]
        (stage / "ticket").mkdir()
        masks.save(stage / "ticket" / "masks.npz")
        trained = RewindPoint.capture(self.model, setup.plan.ends[round_index])
        trained.save(stage / "ticket" / "weights")
        next_masks = None
        if round_index < schedule.rounds:
            next_masks = trained_masks(self.model, schedule, setup.settings, round_index + 1,
                                       initial=self.rewind_point(),
                                       label=f"trial {self.trial}, ")
            next_masks.save(stage / "next_masks.npz")
        for name in setup.options.controls if round_index > 0 else ():
            control, seed = CONTROLS[name], setup.round_seed(self.trial, round_index, name)
            control_masks = control.masks(masks, seed)
            trainings.append(self.train(name, round_index, control_masks,
                                        control.start(self, seed)))
            (stage / name).mkdir()
            control_masks.save(stage / name / "masks.npz")
        write_json(stage / "metrics.json", {
            "records": [t.record.to_dict() for t in trainings],
            "curves": {t.record.variant: t.curve for t in trainings}})
        return trainings, trained, next_masks

    def _keep_backups_of(self, round_index: int) -> None:
        """Remove the epoch backups of other rounds (committed ones); backups of the layout
        before one folder per training (``in_progress/epoch_NNNN``) move to theirs."""
        for path in sorted(self.in_progress.glob("epoch_*")):
            state = path / "state.json"  # missing where that layout's removal was killed
            saved = read_json(state) if state.exists() else {}
            if saved.get("round") == round_index:
                folder = self._backup_folder(round_index, saved["variant"])
                folder.mkdir(parents=True, exist_ok=True)
                path.rename(folder / path.name)
            else:
                remove(path)
        for folder in self.in_progress.glob("round_*"):
            if not folder.name.startswith(f"round_{round_index:02d}_"):
                remove(folder)

    def _backup_folder(self, round_index: int, variant: str) -> Path:
        return self.in_progress / f"round_{round_index:02d}_{variant}"

    def train(self, variant, round_index, masks, start, capture=None) -> Training:
        """One full training from ``start`` under ``masks``: what it reached (restored,
        without training again, when it finished before the run was interrupted)."""
        setup, model = self.setup, self.model
        seed = setup.round_seed(self.trial, round_index, variant)
        engine_for(model).set_random_seed(seed)  # shuffling and dropout: resumable, bit for bit
        start_round(model, masks, start)
        steps = setup.steps(variant, round_index)
        self.reset.reset(step=steps.start)
        every, per_step = setup.steps_per_execution, self.batches_per_step
        # epochs are whole calls, so calls restart in step; about one pass over the data
        passes = (self.train_data.batches_per_epoch() or 0) // per_step or len(steps)
        per_epoch = every * max(1, min(len(steps), passes) // every)
        curve = setup.summaries.curve(self.trial, variant, round_index) \
            if setup.summaries else None
        listeners = [lambda state: curve.evaluation(state.curve[-1])] if curve else []
        if setup.progress:
            setup.progress.training(self.trial, round_index, variant, masks.fraction_kept(),
                                    len(steps))
            listeners.append(setup.progress.evaluated)
        tracker = RoundTracker(setup, self.evaluator, steps, capture, listeners, per_step)
        backup = EpochBackup(self._backup_folder(round_index, variant),
                             {"round": round_index, "variant": variant, "seed": seed},
                             tracker, self.reset.variables)
        first_epoch = backup.restore(model, masks)
        start_step = tracker.state.step
        finished = start_step >= len(steps) or tracker.state.diverged_at is not None
        if first_epoch and setup.progress:
            setup.progress.line(f"trial {self.trial}, round {round_index} ({variant}): "
                                + ("finished before the interruption, restored" if finished
                                   else f"resuming at epoch {first_epoch}, iteration "
                                        f"{steps.start + start_step}"))
        if not finished:
            skip = first_epoch * per_epoch * per_step  # the batches resumed epochs took
            fit = dict(steps_per_epoch=per_epoch * per_step,
                       epochs=math.ceil(len(steps) / per_epoch),
                       shuffle=False, initial_epoch=first_epoch,
                       callbacks=[tracker, backup, *setup.callbacks],
                       verbose=2 if setup.options.verbose >= 2 else 0)  # Keras's lines per epoch
            try:
                self._fit(seed, skip, fit)
            except Exception as error:  # XLA's refusals come as several error types
                if tracker.state.step > start_step or not xla_refused(setup.options.jit_compile,
                                                                      model, error):
                    raise
                without_xla(model, error)
                self._fit(seed, skip, fit)
        start_round(model, masks, None)  # the last update may have touched pruned weights
        state = tracker.state
        if setup.progress:
            setup.progress.finished(state, state.step - start_step)
        if curve:
            if state.best is not None:
                curve.early_stop(setup.options.monitor, state.best)
            curve.close()
        finite = all(np.all(np.isfinite(v.numpy())) for v in model.trainable_variables)
        if state.diverged_at is not None or not finite:
            where = f"the loss by iteration {state.diverged_at}" if state.diverged_at \
                else "the weights at the end of the round"
            raise DivergedError(
                f"trial {self.trial}, round {round_index} ({variant}): training diverged "
                f"(non-finite {where}). Rounds before {round_index} are committed in "
                f"{setup.run_dir.path}; lower the learning rate and run again.")
        best, last = state.best, state.last
        kept = masks.kept()
        record = RoundRecord(
            trial=self.trial, round=round_index, variant=variant,
            weights_remaining=masks.fraction_kept(),
            layer_weights_remaining={k: kept[k] / masks[k].size for k in masks},
            early_stop_iteration=best["iteration"], val_loss=best["val_loss"],
            val_accuracy=best.get("val_accuracy"), test_accuracy=best.get("test_accuracy"),
            final_test_accuracy=last.get("test_accuracy"),
            wall_time=state.seconds, monitor=setup.options.monitor,
            val_metrics=_of_set(best, "val"), test_metrics=_of_set(best, "test"),
            final_test_metrics=_of_set(last, "test"))
        return Training(record, masks, model.masked_weights(), state.curve)

    def _fit(self, seed: int, skip: int, fit: dict) -> None:
        """``model.fit`` on the training batches from batch ``skip`` on: in fused calls
        (one XLA program per call) where they apply, else through Keras's own loop."""
        if not self.fused.applies(self.model):
            self.model.fit(self.train_data.batches(seed, skip), **fit)
            return
        with self.fused.installed(self.model):
            self.model.fit(self.train_data.index_chunks(seed, self.fused.steps, skip), **fit)


def _of_set(metrics: dict, name: str) -> dict:
    """``{"loss": ..., "mae": ...}`` of one set out of ``{"val_loss": ..., "test_mae": ...}``."""
    prefix = f"{name}_"
    return {key[len(prefix):]: value for key, value in metrics.items()
            if key.startswith(prefix)}


def compile_model(model, **settings) -> None:
    """Compile a trial's LotteryModel, remembering the settings (to recompile without XLA).

    On the JAX backend every step is compiled whatever ``jit_compile`` says."""
    if engine_for(model).always_compiled:
        settings["jit_compile"] = True
    model.compile(**settings)
    model.compile_settings = settings


def xla_refused(jit_compile, model, error) -> bool:
    """Whether ``error`` is XLA refusing to compile ``model`` under ``jit_compile="auto"``
    (for example collectives of a distribution strategy on CPUs)."""
    return (jit_compile == "auto" and bool(model.compile_settings.get("jit_compile"))
            and "xla" in str(error).lower())


def without_xla(model, error) -> None:
    """Recompile ``model`` without XLA (the same optimizer and its state), and say so."""
    print(f"XLA cannot compile {model.name!r} ({reason(error, 160)}); going on without XLA "
          "(jit_compile=False turns it off from the start)", flush=True)
    compile_model(model, **dict(model.compile_settings, jit_compile=False))
