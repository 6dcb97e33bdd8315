"""One trial of a search: its model, its rounds and their trainings.

A :class:`Trial` trains the ticket and the controls of each round from their starting
weights under their masks, evaluated every ``eval_every`` iterations
(:mod:`tf_lottery.search.evaluation`) and saved at every epoch end
(:mod:`tf_lottery.search.backup`), so a killed run resumes from its last epoch, bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tf_lottery.core.controls import CONTROLS
from tf_lottery.core.masks import Masks
from tf_lottery.core.plan import RoundPlan
from tf_lottery.engines import engine_for
from tf_lottery.engines.fused import FusedSteps
from tf_lottery.foundations.atomic import write_json
from tf_lottery.foundations.errors import DivergedError, reason
from tf_lottery.imp.rewind import OptimizerReset, RewindPoint, RewindPoints
from tf_lottery.imp.rounds import start_round, trained_masks
from tf_lottery.runs.results import VARIANTS, RoundRecord
from tf_lottery.runs.rundir import RoundFiles
from tf_lottery.search.backup import EpochBackup
from tf_lottery.search.evaluation import Evaluator, RoundTracker


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


class Training(NamedTuple):
    """One training's record, masks, trained values of the masked weights, and its
    evaluations (the curve: iteration, train loss, validation and test metrics)."""

    record: RoundRecord
    masks: Masks
    weights: dict
    curve: list


class _Run(NamedTuple):
    """One training under way: who it is, what it trains, and what watches it."""

    variant: str
    round_index: int
    masks: Masks
    seed: int
    steps: range                    # the optimizer steps it trains
    tracker: RoundTracker
    backup: EpochBackup
    curve: object                   # its TensorBoard curve, or None


class Trial:
    """One trial: its prepared model, optimizer reset, evaluator and rewind points.

    ``model`` is the LotteryModel of the trial (compiled), ``fresh_draw(seed)`` gives its
    model's weights drawn again (a RewindPoint: the random-reinit control's start).
    """

    def __init__(self, setup: TrialSetup, trial: int, model, fresh_draw, train, eval_sets):
        self.setup, self.trial, self.model = setup, trial, model
        self.fresh_draw = fresh_draw
        self.train_data = train  # a TrainingInput
        engine = engine_for(model)
        # batches per optimizer step (gradient accumulation): calls and epochs hold whole steps
        self.batches_per_step = engine.batches_per_step(model.optimizer)
        self.fused = FusedSteps(train, setup.steps_per_execution * self.batches_per_step)
        self.reset = OptimizerReset(model.optimizer, model.trainable_variables)
        # in a strategy's scope (the search makes trials there) Keras's evaluate runs the
        # replicas; a graph of test_step would not
        self.evaluator = Evaluator(eval_sets, in_graph=engine.tensorflow_graphs
                                   and not tf.distribute.has_strategy())
        self.points = RewindPoints(setup.run_dir.rewind_dir(trial), setup.settings.policy)
        self.points.save_theta0(model)
        self.theta0 = self.points.theta0(model)  # as on disk, verified

    def rewind_point(self) -> RewindPoint:
        """Where rounds start under a rewinding policy (θ0, or the weights after k steps),
        and what criteria compare the trained weights with (θ0 under the others)."""
        return self.points.reference(self.model)

    def resume_state(self, done: int):
        """The ticket's masks and starting weights for round ``done``."""
        if done == 0:
            return self.model.masks, self.theta0
        previous = self.setup.run_dir.round_files(self.trial, done - 1)
        masks = Masks.load(previous.next_masks())
        return masks, self.points.start(self.model) or \
            RewindPoint.load(previous.ticket_weights(), self.model)

    def round(self, round_index: int, masks: Masks, start: RewindPoint, stage: RoundFiles):
        """Train the ticket and the controls of one round into ``stage``; return the
        trainings, the ticket's trained weights and the next round's masks (or None)."""
        setup = self.setup
        setup.run_dir.keep_backups_of(self.trial, round_index)
        capture = None
        if round_index == 0 and self.points.capture_step is not None:
            capture = (self.points.capture_step, self.points.capture)
        trainings = [self.train("ticket", round_index, masks, start, capture)]
        trained = RewindPoint.capture(self.model, setup.plan.ends[round_index])
        next_masks = None
        if round_index < setup.schedule.rounds:
            next_masks = trained_masks(self.model, setup.schedule, setup.settings,
                                       round_index + 1, initial=self.rewind_point(),
                                       label=f"trial {self.trial}, ")
        for name in setup.options.controls if round_index > 0 else ():
            control, seed = CONTROLS[name], setup.round_seed(self.trial, round_index, name)
            trainings.append(self.train(name, round_index, control.masks(masks, seed),
                                        control.start(self, seed)))
        self._write_round(stage, trainings, trained, next_masks)
        return trainings, trained, next_masks

    @staticmethod
    def _write_round(stage: RoundFiles, trainings: list, trained: RewindPoint,
                     next_masks) -> None:
        """A round's files: every training's masks, the ticket's trained weights, the next
        round's masks, and the records and curves."""
        for training in trainings:
            path = stage.masks(training.record.variant)
            path.parent.mkdir()
            training.masks.save(path)
        trained.save(stage.ticket_weights())
        if next_masks is not None:
            next_masks.save(stage.next_masks())
        write_json(stage.metrics(), {
            "records": [t.record.to_dict() for t in trainings],
            "curves": {t.record.variant: t.curve for t in trainings}})

    # --- one training ------------------------------------------------------------------

    def train(self, variant, round_index, masks, start, capture=None) -> Training:
        """One full training from ``start`` under ``masks``: what it reached (restored,
        without training again, when it finished before the run was interrupted)."""
        run = self._begin(variant, round_index, masks, start, capture)
        first_epoch = run.backup.restore(self.model, masks)
        start_step = run.tracker.state.step
        finished = start_step >= len(run.steps) or run.tracker.state.diverged_at is not None
        if first_epoch:
            self._say(run, "finished before the interruption, restored" if finished else
                      f"resuming at epoch {first_epoch}, iteration "
                      f"{run.steps.start + start_step}")
        if not finished:
            self._fit_from(run, first_epoch)
        start_round(self.model, masks, None)  # the last update may have touched pruned weights
        self._end(run, start_step)
        self._refuse_divergence(run)
        return Training(self._record(run), masks, self.model.masked_weights(),
                        run.tracker.state.curve)

    def _begin(self, variant, round_index, masks, start, capture) -> _Run:
        """Seed the training, set its masks, weights and optimizer, and make what watches
        it: the tracker (evaluations, early stop), the epoch backup, TensorBoard, progress."""
        setup, model = self.setup, self.model
        seed = setup.round_seed(self.trial, round_index, variant)
        engine_for(model).set_random_seed(seed)  # shuffling and dropout: resumable, bit for bit
        start_round(model, masks, start)
        steps = setup.steps(variant, round_index)
        self.reset.reset(step=steps.start)
        curve = setup.summaries.curve(self.trial, variant, round_index) \
            if setup.summaries else None
        listeners = [lambda state: curve.evaluation(state.curve[-1])] if curve else []
        if setup.progress:
            setup.progress.training(self.trial, round_index, variant, masks.fraction_kept(),
                                    len(steps))
            listeners.append(setup.progress.evaluated)
        tracker = RoundTracker(setup.options, self.evaluator, steps, capture, listeners,
                               self.batches_per_step)
        backup = EpochBackup(setup.run_dir.training_backups(self.trial, round_index, variant),
                             {"round": round_index, "variant": variant, "seed": seed},
                             tracker, self.reset.variables)
        return _Run(variant, round_index, masks, seed, steps, tracker, backup, curve)

    def _fit_from(self, run: _Run, first_epoch: int) -> None:
        """Train from epoch ``first_epoch`` to the training's last step; where XLA refuses
        the model before the first step, again without it."""
        setup, per_step = self.setup, self.batches_per_step
        # epochs are whole calls, so calls restart in step; about one pass over the data
        every = setup.steps_per_execution
        passes = (self.train_data.batches_per_epoch() or 0) // per_step or len(run.steps)
        per_epoch = every * max(1, min(len(run.steps), passes) // every)
        skip = first_epoch * per_epoch * per_step  # the batches the resumed epochs took
        fit = dict(steps_per_epoch=per_epoch * per_step,
                   epochs=math.ceil(len(run.steps) / per_epoch),
                   shuffle=False, initial_epoch=first_epoch,
                   callbacks=[run.tracker, run.backup, *setup.callbacks],
                   verbose=2 if setup.options.verbose >= 2 else 0)  # Keras's lines per epoch
        start_step = run.tracker.state.step
        try:
            self._fit(run.seed, skip, fit)
        except Exception as error:  # XLA's refusals come as several error types
            if run.tracker.state.step > start_step or not xla_refused(
                    setup.options.jit_compile, self.model, error):
                raise
            without_xla(self.model, error)
            self._fit(run.seed, skip, fit)

    def _fit(self, seed: int, skip: int, fit: dict) -> None:
        """``model.fit`` on the training batches from batch ``skip`` on: in fused calls
        (one XLA program per call) where they apply, else through Keras's own loop."""
        if not self.fused.applies(self.model):
            self.model.fit(self.train_data.batches(seed, skip), **fit)
            return
        with self.fused.installed(self.model):
            self.model.fit(self.train_data.index_chunks(seed, self.fused.steps, skip), **fit)

    def _end(self, run: _Run, start_step: int) -> None:
        """Close the training's progress bar and TensorBoard curve."""
        state, setup = run.tracker.state, self.setup
        if setup.progress:
            setup.progress.finished(state, state.step - start_step)
        if run.curve:
            if state.best is not None:
                run.curve.early_stop(setup.options.monitor, state.best)
            run.curve.close()

    def _refuse_divergence(self, run: _Run) -> None:
        state = run.tracker.state
        finite = all(np.all(np.isfinite(v.numpy())) for v in self.model.trainable_variables)
        if state.diverged_at is not None or not finite:
            where = f"the loss by iteration {state.diverged_at}" if state.diverged_at \
                else "the weights at the end of the round"
            raise DivergedError(
                f"trial {self.trial}, round {run.round_index} ({run.variant}): training "
                f"diverged (non-finite {where}). Rounds before {run.round_index} are "
                f"committed in {self.setup.run_dir.path}; lower the learning rate and run "
                "again.")

    def _record(self, run: _Run) -> RoundRecord:
        """What the training reached: the metrics at the early stop and at the end."""
        state, masks = run.tracker.state, run.masks
        best, last, kept = state.best, state.last, masks.kept()
        return RoundRecord(
            trial=self.trial, round=run.round_index, variant=run.variant,
            weights_remaining=masks.fraction_kept(),
            layer_weights_remaining={k: kept[k] / masks[k].size for k in masks},
            early_stop_iteration=best["iteration"], val_loss=best["val_loss"],
            val_accuracy=best.get("val_accuracy"), test_accuracy=best.get("test_accuracy"),
            final_test_accuracy=last.get("test_accuracy"),
            wall_time=state.seconds, monitor=self.setup.options.monitor,
            val_metrics=_of_set(best, "val"), test_metrics=_of_set(best, "test"),
            final_test_metrics=_of_set(last, "test"))

    def _say(self, run: _Run, what: str) -> None:
        if self.setup.progress:
            self.setup.progress.line(f"trial {self.trial}, round {run.round_index} "
                                     f"({run.variant}): {what}")


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
