"""One training of a search, wherever it runs: in the search's own process or in a worker.

A :class:`TrainingSpec` says everything a training needs besides its trial's model: its
masks, the weights it starts from, its seed and optimizer steps. :func:`train` runs it in
a :class:`TrainingContext` (one trial's prepared model and what trains it) and returns an
:class:`Outcome`: the record, the curve, the trained weights. The search's driver makes
the specs and commits the outcomes (:mod:`tf_lottery.search.graph`); the executors
(:mod:`tf_lottery.search.executors`) run them.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from tf_lottery.core.early_bird import EarlyBird
from tf_lottery.core.masks import Masks
from tf_lottery.engines import engine_for
from tf_lottery.engines.fused import FusedSteps
from tf_lottery.foundations.errors import DivergedError, SettingError, reason
from tf_lottery.imp.rewind import OptimizerReset, RewindPoint
from tf_lottery.imp.rounds import start_round
from tf_lottery.runs.results import VARIANTS, RoundRecord
from tf_lottery.search.backup import EpochBackup
from tf_lottery.search.evaluation import Evaluator, RoundTracker


class TrainingSpec(NamedTuple):
    """One training: which one, under which masks, from which weights, for which steps."""

    trial: int
    round: int
    variant: str
    seed: int                       # shuffling, dropout
    steps: range                    # the optimizer steps it trains
    masks: Masks
    start: RewindPoint              # the weights it starts from (pruned ones set to 0)
    capture: Optional[int] = None   # a step whose weights it captures (late rewinding)
    early_bird: Optional[EarlyBird] = None  # when a ticket may end early (early_bird)

    @property
    def key(self) -> tuple:
        """(trial, round, variant): the order a search in one process trains them in."""
        return self.trial, self.round, VARIANTS.index(self.variant)

    def describe(self) -> str:
        return f"trial {self.trial}, round {self.round} ({self.variant})"


class Outcome(NamedTuple):
    """What a training reached."""

    spec: TrainingSpec
    record: RoundRecord
    curve: list                     # every evaluation: iteration, train loss, val_*, test_*
    best: dict                      # the evaluation of the early stop
    weights: dict                   # path -> trained value of every masked weight
    trained: Optional[dict]         # path -> every weight at the end (the ticket's), else None
    captured: Optional[RewindPoint]  # the weights of the capture step, if it has one


class TrainingContext:
    """One trial's prepared model (compiled) and what trains it in one process: a fresh
    optimizer's state, the evaluator, the training data, the epoch backups' folder (or none)
    and the progress bars (or none).

    ``backups``: the RunDirectory whose ``in_progress`` folders hold the epoch backups, or
    None (a worker that cannot see the run directory: a training restarts from its start).
    """

    def __init__(self, model, train, eval_sets: dict, options, steps_per_execution: int,
                 callbacks=(), backups=None, progress=None, rewind_points=None):
        self.model, self.train_data, self.options = model, train, options
        self.callbacks, self.backups, self.progress = tuple(callbacks), backups, progress
        self.rewind_points = rewind_points  # RewindPoints to write a capture into, or None
        self.steps_per_execution = steps_per_execution
        engine = engine_for(model)
        # batches per optimizer step (gradient accumulation): calls and epochs hold whole steps
        self.batches_per_step = engine.batches_per_step(model.optimizer)
        self.fused = FusedSteps(train, steps_per_execution * self.batches_per_step)
        self.reset = OptimizerReset(model.optimizer, model.trainable_variables)
        # in a strategy's scope (the search makes models there) Keras's evaluate runs the
        # replicas; a graph of test_step would not
        self.evaluator = Evaluator(eval_sets, in_graph=engine.tensorflow_graphs
                                   and not tf.distribute.has_strategy())


def train(context: TrainingContext, spec: TrainingSpec) -> Outcome:
    """Run ``spec`` to its last step and return what it reached (restored, without
    training again, where its epoch backup says it finished before an interruption)."""
    tracker, backup, captured = _begin(context, spec)
    first_epoch = backup.restore(context.model, spec.masks) if backup else 0
    start_step = tracker.state.step
    finished = start_step >= len(spec.steps) or tracker.state.diverged_at is not None \
        or tracker.state.mask_drawn_at is not None
    if first_epoch and context.progress:
        context.progress.line(f"{spec.describe()}: " + (
            "finished before the interruption, restored" if finished else
            f"resuming at epoch {first_epoch}, iteration {spec.steps.start + start_step}"))
    if not finished:
        _fit_from(context, spec, tracker, backup, first_epoch)
    model = context.model
    start_round(model, spec.masks, None)  # the last update may have touched pruned weights
    if context.progress:
        context.progress.finished(tracker.state, tracker.state.step - start_step)
    _refuse_divergence(model, spec, tracker.state)
    trained = RewindPoint.capture(model, spec.steps.stop).values \
        if spec.variant == "ticket" else None
    return Outcome(spec, _record(spec, tracker.state, context.options.monitor),
                   tracker.state.curve, tracker.state.best, model.masked_weights(), trained,
                   captured[0] if captured else None)


def _begin(context: TrainingContext, spec: TrainingSpec):
    """Seed the training, set its masks, weights and optimizer, and make what watches it:
    the tracker (evaluations, early stop, the capture), the epoch backup, progress."""
    model = context.model
    engine_for(model).set_random_seed(spec.seed)  # shuffling and dropout: bit for bit
    start_round(model, spec.masks, spec.start)
    context.reset.reset(step=spec.steps.start)
    captured = []
    capture = None
    if spec.capture is not None:
        def keep(model):
            point = RewindPoint.capture(model, spec.capture)
            if context.rewind_points is not None:  # on disk at once, as a resume needs it
                context.rewind_points.keep(point)
            captured.append(point)
        capture = (spec.capture, keep)
    listeners = []
    if context.progress:
        context.progress.training(spec.trial, spec.round, spec.variant,
                                  spec.masks.fraction_kept(), len(spec.steps))
        listeners.append(context.progress.evaluated)
    tracker = RoundTracker(context.options, context.evaluator, spec.steps, capture, listeners,
                           context.batches_per_step, spec.early_bird, spec.masks)
    backup = None
    if context.backups is not None:
        backup = EpochBackup(
            context.backups.training_backups(spec.trial, spec.round, spec.variant),
            {"round": spec.round, "variant": spec.variant, "seed": spec.seed}, tracker,
            context.reset.variables)
    return tracker, backup, captured


def _fit_from(context: TrainingContext, spec: TrainingSpec, tracker, backup,
              first_epoch: int) -> None:
    """Train from epoch ``first_epoch`` to the training's last step; where XLA refuses the
    model before the first step, again without it."""
    per_step, every = context.batches_per_step, context.steps_per_execution
    # epochs are whole calls, so calls restart in step; about one pass over the data
    passes = (context.train_data.batches_per_epoch() or 0) // per_step or len(spec.steps)
    per_epoch = every * max(1, min(len(spec.steps), passes) // every)
    skip = first_epoch * per_epoch * per_step  # the batches the resumed epochs took
    watchers = [tracker, backup] if backup else [tracker]
    fit = dict(steps_per_epoch=per_epoch * per_step,
               epochs=math.ceil(len(spec.steps) / per_epoch),
               shuffle=False, initial_epoch=first_epoch,
               callbacks=[*watchers, *context.callbacks],
               verbose=2 if context.options.verbose >= 2 else 0)  # Keras's lines per epoch
    start_step = tracker.state.step
    try:
        _fit(context, spec.seed, skip, fit)
    except Exception as error:  # XLA's refusals come as several error types
        if tracker.state.step > start_step or not xla_refused(
                context.options.jit_compile, context.model, error):
            raise
        without_xla(context.model, error)
        _fit(context, spec.seed, skip, fit)


def _fit(context: TrainingContext, seed: int, skip: int, fit: dict) -> None:
    """``model.fit`` on the training batches from batch ``skip`` on: in fused calls (one XLA
    program per call) where they apply, else through Keras's own loop."""
    model, data, fused = context.model, context.train_data, context.fused
    if not fused.applies(model):
        model.fit(data.batches(seed, skip), **fit)
        return
    with fused.installed(model):
        model.fit(data.index_chunks(seed, fused.steps, skip), **fit)


def _refuse_divergence(model, spec: TrainingSpec, state) -> None:
    finite = all(np.all(np.isfinite(v.numpy())) for v in model.trainable_variables)
    if state.diverged_at is not None or not finite:
        where = f"the loss by iteration {state.diverged_at}" if state.diverged_at \
            else "the weights at the end of the round"
        raise DivergedError(
            f"{spec.describe()}: training diverged (non-finite {where}). Rounds before "
            f"{spec.round} are committed in the run directory; lower the learning rate and "
            "run again.")


def _record(spec: TrainingSpec, state, monitor: str) -> RoundRecord:
    """What the training reached: the metrics at the early stop and at the end."""
    best, last, masks = state.best, state.last, spec.masks
    kept = masks.kept()
    return RoundRecord(
        trial=spec.trial, round=spec.round, variant=spec.variant,
        weights_remaining=masks.fraction_kept(),
        layer_weights_remaining={k: kept[k] / masks[k].size for k in masks},
        early_stop_iteration=best["iteration"], val_loss=best["val_loss"],
        val_accuracy=best.get("val_accuracy"), test_accuracy=best.get("test_accuracy"),
        final_test_accuracy=last.get("test_accuracy"),
        wall_time=state.seconds, monitor=monitor,
        val_metrics=_of_set(best, "val"), test_metrics=_of_set(best, "test"),
        final_test_metrics=_of_set(last, "test"), mask_drawn_at=state.mask_drawn_at,
        iterations_saved=None if state.mask_drawn_at is None else
        spec.steps.stop - state.mask_drawn_at)


def _of_set(metrics: dict, name: str) -> dict:
    """``{"loss": ..., "mae": ...}`` of one set out of ``{"val_loss": ..., "test_mae": ...}``."""
    prefix = f"{name}_"
    return {key[len(prefix):]: value for key, value in metrics.items()
            if key.startswith(prefix)}


DEFAULT_LOSS = {"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": True}}


def compiled(lottery, options, steps_per_execution: int, jit_compile):
    """``lottery`` (a LotteryModel) compiled as the search's ``options`` say: the optimizer
    (the paper's Adam by default), loss and metrics made by its engine, the steps per call
    (in batches: a step is several under gradient accumulation)."""
    engine = engine_for(lottery)
    identifier, settings = options.optimizer_identifier()
    optimizer = engine.optimizer(identifier, **settings)
    loss, metrics = options.loss or DEFAULT_LOSS, options.metrics
    batches_per_step = engine.batches_per_step(optimizer)  # gradient accumulation
    try:
        compile_model(lottery, optimizer=optimizer, loss=engine.loss(loss),
                      metrics=[engine.metric(metric) for metric in metrics],
                      steps_per_execution=steps_per_execution * batches_per_step,
                      jit_compile=jit_compile)
    except (ValueError, TypeError) as error:
        raise SettingError(f"the model cannot be compiled with loss={loss!r}, "
                           f"metrics={list(metrics)!r}: {error}") from error
    return lottery


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


