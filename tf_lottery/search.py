"""LotteryTicketSearch: IMP round by round, with controls, early-stop metrics, resumable.

Each round trains the ticket from its rewind point under its masks, measuring validation
loss every ``eval_every`` iterations; the early-stop iteration is the one of minimum
validation loss and the reported test accuracy is the one there (the paper's protocol).
The controls of each round train the same way: random reinitialisation (the ticket's
masks, a fresh draw of every initializer) and random pruning (random masks of the ticket's
per-layer sparsity, rewound to θ0). Every round is committed to the run directory as a
whole; running again resumes after the last committed round.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence, Union

import numpy as np
import tensorflow as tf

from tf_lottery._compat import keras
from tf_lottery.masks import Masks, random_pruning
from tf_lottery.results import VARIANTS, RoundRecord, SearchResult
from tf_lottery.rewind import (
    OptimizerReset,
    RewindPoint,
    load_rewind_point,
    rewind_point_dir,
    save_rewind_point,
)
from tf_lottery.rounds import ImpSettings, current_masks, start_round, trained_masks
from tf_lottery.atomic import replacing
from tf_lottery.integrity import verify, write_manifest
from tf_lottery.rundir import RunDirectory, read_json, write_atomic, write_json
from tf_lottery.schedule import RewindingSchedule
from tf_lottery.tensorboard import SearchSummaries, surviving_weights
from tf_lottery.wrap import wrap_for_pruning

CONTROLS = VARIANTS[1:]


def _fingerprint(arrays) -> dict:
    x, y = arrays
    digest = hashlib.sha256()
    for array in (x, y):
        digest.update(np.ascontiguousarray(array).data)  # hashed in place, not copied
    return {"examples": int(len(x)), "shape": list(np.shape(x)[1:]), "sha256": digest.hexdigest()}


class _Evaluator:
    """Loss and accuracy of a classifier (integer labels, logits out) on fixed data sets."""

    def __init__(self, model, sets: dict, batch_size: int = 1000):
        self._sets = {name: tf.data.Dataset.from_tensor_slices(data).batch(batch_size).cache()
                      for name, data in sets.items()}
        self._sizes = {name: len(data[1]) for name, data in sets.items()}
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=keras.losses.Reduction.SUM)

        @tf.function
        def totals(x, y):
            logits = model(x, training=False)
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), y), tf.float32))
            return loss(y, logits), correct
        self._totals = totals

    def __call__(self) -> dict:
        out = {}
        for name, dataset in self._sets.items():
            loss_sum, correct = 0.0, 0.0
            for x, y in dataset:
                batch_loss, batch_correct = self._totals(x, y)
                loss_sum += float(batch_loss)
                correct += float(batch_correct)
            out[f"{name}_loss"] = loss_sum / self._sizes[name]
            out[f"{name}_accuracy"] = correct / self._sizes[name]
        return out


class _RoundTracker(keras.callbacks.Callback):
    """Evaluates every ``eval_every`` steps, remembers the minimum validation loss, stops the
    fit after ``steps`` steps or at a non-finite loss; captures a rewind point if asked."""

    def __init__(self, evaluator, eval_every: int, steps: int, capture=None):
        super().__init__()
        self._supports_tf_logs = True
        self.evaluator, self.eval_every, self.steps = evaluator, eval_every, steps
        self.capture = capture  # (step, callback(model)) or None
        self.step = 0
        self.best = None
        self.last = None
        self.diverged_at = None

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.capture and self.step == self.capture[0]:
            self.capture[1](self.model)
        if self.step % self.eval_every == 0 or self.step == self.steps:
            metrics = self.evaluator()
            train_loss = float(logs["loss"]) if logs and "loss" in logs else 0.0
            if not (math.isfinite(metrics["val_loss"]) and math.isfinite(train_loss)):
                self.diverged_at = self.step
                self.model.stop_training = True
                return
            self.last = dict(metrics, iteration=self.step)
            if self.best is None or metrics["val_loss"] < self.best["val_loss"]:
                self.best = self.last
        if self.step >= self.steps:
            self.model.stop_training = True


class _EpochBackup(keras.callbacks.Callback):
    """The training in progress, saved at every epoch end into ``folder/epoch_NNNN`` (weights,
    optimizer state, evaluation history), so a killed run resumes from its last epoch."""

    def __init__(self, folder, identity: dict, tracker: _RoundTracker, optimizer_variables):
        super().__init__()
        self.folder, self.identity, self.tracker = Path(folder), identity, tracker
        self.optimizer_variables = optimizer_variables

    def on_epoch_end(self, epoch, logs=None):
        previous = sorted(self.folder.glob("epoch_*"))
        with replacing(self.folder / f"epoch_{epoch + 1:04d}", keep_existing=True) as stage:
            stage.mkdir()
            RewindPoint.capture(self.model, self.tracker.step).save(stage / "weights")
            np.savez(stage / "optimizer.npz", *[v.numpy() for v in self.optimizer_variables])
            write_json(stage / "state.json", dict(
                self.identity, epoch=epoch + 1, step=self.tracker.step,
                best=self.tracker.best, last=self.tracker.last))
            write_manifest(stage)
        for old in previous:
            shutil.rmtree(old, ignore_errors=True)

    def restore(self, model, masks) -> int:
        """Load the last backup of this very training, if any: the epoch to start at."""
        backups = sorted(self.folder.glob("epoch_*"))
        if not backups:
            return 0
        state = read_json(backups[-1] / "state.json")
        if any(state[key] != value for key, value in self.identity.items()):
            self.discard()  # a backup of another training: that one was committed or redone
            return 0
        verify(backups[-1])
        RewindPoint.load(backups[-1] / "weights", model).restore(model, masks)
        with np.load(backups[-1] / "optimizer.npz") as saved:
            for index, variable in enumerate(self.optimizer_variables):
                variable.assign(saved[f"arr_{index}"])
        self.tracker.step, self.tracker.best, self.tracker.last = \
            state["step"], state["best"], state["last"]
        return state["epoch"]

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class LotteryTicketSearch:
    """Find winning tickets by IMP, with controls, several trials and a run directory.

    Args:
      model: a function ``build(seed) -> model`` (each trial builds its own), or a built
        tf_keras model (trial 0 starts from its weights, later trials from fresh draws).
      schedule: the RewindingSchedule: rounds, iterations per round, prune rates.
      run_dir: where config, θ0, per-round masks, weights and metrics go; resumable.
      rewind_to, scope, criterion, block_size, exclude: as in ``prune_with_rewinding``.
      controls: any of "random_reinit", "random_pruning" (trained in rounds >= 1).
      trials: independent repetitions, seeds ``seed``, ``seed + 1``, ...
      optimizer: a tf_keras optimizer to copy for every trial (default Adam 1.2e-3).
      batch_size, eval_every: the paper uses 60 and 100.
      verbose: Keras progress bars (1), one line per epoch (2) or none (0).
      strategy: a ``tf.distribute.Strategy`` to build and train every model under (e.g.
        ``tf.distribute.MirroredStrategy()`` for the GPUs of one machine); None: the default.

    Example::

        search = tfl.LotteryTicketSearch(lambda seed: lenet_300_100(seed=seed), schedule,
                                         run_dir="runs/lenet", trials=3)
        result = search.run(train=(x, y), validation=(xv, yv), test=(xt, yt))
        print(result.table())
    """

    def __init__(self, model: Union[Callable[[int], object], object],
                 schedule: RewindingSchedule, run_dir: str | os.PathLike, *, rewind_to=0,
                 scope="layer", criterion="magnitude", block_size=1, exclude=(),
                 controls: Sequence[str] = CONTROLS, trials: int = 1, seed: int = 0,
                 optimizer=None, batch_size: int = 60, eval_every: int = 100,
                 verbose: int = 1, strategy=None):
        self.settings = ImpSettings(rewind_to=rewind_to, scope=scope, criterion=criterion,
                                    block_size=block_size, exclude=exclude, seed=seed)
        unknown = [c for c in controls if c not in CONTROLS]
        if unknown:
            raise ValueError(f"unknown control {unknown[0]!r}; controls are {CONTROLS}")
        for name, value in (("trials", trials), ("batch_size", batch_size),
                            ("eval_every", eval_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if not isinstance(schedule, RewindingSchedule):
            raise TypeError(f"schedule must be a tf_lottery.RewindingSchedule, got "
                            f"{type(schedule).__name__}")
        self.schedule = schedule
        self.run_dir = RunDirectory(run_dir)
        self.controls = tuple(c for c in CONTROLS if c in controls)
        self.trials, self.seed = trials, seed
        self.optimizer = optimizer or keras.optimizers.Adam(1.2e-3)
        self.batch_size, self.eval_every, self.verbose = batch_size, eval_every, verbose
        self.strategy = strategy or tf.distribute.get_strategy()
        self._build = model if callable(model) and not isinstance(model, keras.Model) else None
        self._model = None if self._build else model

    # --- public ----------------------------------------------------------------------

    def run(self, train, validation, test, callbacks=(), keep=None) -> SearchResult:
        """Run (or resume) every trial and round; write and return the results.

        ``train``, ``validation`` and ``test`` are ``(images, integer labels)`` pairs;
        ``callbacks`` are Keras callbacks added to every training's ``fit``; ``keep`` maps
        file names to texts to keep in the run directory (written once, never replaced).
        """
        self._callbacks = list(callbacks)
        if len(train[0]) < self.batch_size:
            raise ValueError(f"{len(train[0])} training examples are fewer than one batch "
                             f"of {self.batch_size}")
        with self.strategy.scope():
            template = self._model_for_trial(0)
        config = self._config(template, train, validation, test)
        with self.run_dir.locked():
            self.run_dir.adopt_config(config, template.to_json())
            for name, text in (keep or {}).items():
                if not (self.run_dir.path / name).exists():
                    write_atomic(self.run_dir.path / name, text)
            self.run_dir.remove_staging_leftovers()
            self.run_dir.verify()
            self._started, self._trained = time.perf_counter(), 0
            self._summaries = SearchSummaries(self.run_dir.path / "logs", config,
                                              {**config["schedule"], **config["settings"]})
            try:
                for trial in range(self.trials):
                    self._run_trial(trial, train, validation, test,
                                    template if trial == 0 else None)
            finally:
                self._summaries.close()
            result = SearchResult.load(self.run_dir.path, verify=False)
            paths = result.save(self.run_dir.path)
        if self.verbose:
            print(result.table())
            print(f"results: {paths['csv']}, {paths['json']}, {paths['plot']}", flush=True)
        return result

    # --- one trial -------------------------------------------------------------------

    def _model_for_trial(self, trial):
        if self._build:
            return self._build(self.seed + trial)
        if trial == 0:
            return self._model
        clone = keras.models.clone_model(self._model)
        RewindPoint.fresh_draw(self._model, self.seed + trial).restore(clone, Masks({}))
        return clone

    def _config(self, template, train, validation, test) -> dict:
        return {
            "model": json.loads(template.to_json()),
            "schedule": self.schedule.get_config()["config"],
            "settings": self.settings.to_config(),
            "controls": list(self.controls), "trials": self.trials, "seed": self.seed,
            "optimizer": {"class_name": type(self.optimizer).__name__,
                          "config": keras.optimizers.serialize(self.optimizer)["config"]},
            "batch_size": self.batch_size, "eval_every": self.eval_every,
            "replicas": self.strategy.num_replicas_in_sync,
            "data": {"train": _fingerprint(train), "validation": _fingerprint(validation),
                     "test": _fingerprint(test)},
        }

    def _run_trial(self, trial, train, validation, test, template):
        done = self.run_dir.completed_rounds(trial)
        if done > self.schedule.rounds:
            return
        with self.strategy.scope():
            run = _Trial(self, trial, template or self._model_for_trial(trial), train,
                         {"val": validation, "test": test})
        masks, start = run.resume_state(done)
        for round_index in range(done, self.schedule.rounds + 1):
            with self.run_dir.staging(trial, round_index) as stage:
                trainings, trained, next_masks = run.round(round_index, masks, start, stage)
            self._summarize(trial, round_index, trainings)
            self._report_progress(trial, round_index, [t.record for t in trainings])
            if next_masks is not None:
                masks = next_masks
                start = run.rewind_point() if self.settings.rewinds_weights else trained
        self._summaries.trial_finished(trial, [
            Masks.load(self.run_dir.round(trial, r) / "ticket" / "masks.npz")
            for r in range(self.schedule.rounds + 1)])

    def _summarize(self, trial, round_index, trainings):
        for training in trainings:
            previous = self.run_dir.round(trial, round_index - 1) / training.record.variant / \
                "masks.npz"
            self._summaries.round_committed(
                training.record, training.masks,
                Masks.load(previous) if previous.is_file() else None, training.weights)
        self._summaries.plot(trial, round_index, SearchResult.load(self.run_dir.path, verify=False).plot_png())

    def _round_seed(self, trial, round_index, variant) -> int:
        return (self.seed + trial) * 1_000_003 + round_index * 10 + VARIANTS.index(variant)

    def _report_progress(self, trial, round_index, records):
        self._trained += len(records)
        if not self.verbose:
            return
        ticket = records[0]
        controls = "".join(f", {r.variant} {r.test_accuracy:.4f}" for r in records[1:])
        per_training = (time.perf_counter() - self._started) / self._trained
        left = sum(1 + (len(self.controls) if r > 0 else 0)
                   for t in range(trial, self.trials)
                   for r in range(round_index + 1 if t == trial else 0, self.schedule.rounds + 1))
        print(f"trial {trial + 1}/{self.trials}, round {round_index}/{self.schedule.rounds}: "
              f"{ticket.weights_remaining:.2%} of weights, test accuracy at early stop "
              f"{ticket.test_accuracy:.4f} (iteration {ticket.early_stop_iteration}){controls}"
              f"; about {_duration(left * per_training)} left", flush=True)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class _Trial:
    """One trial's model, optimizer reset, evaluator and rewind checkpoints."""

    def __init__(self, search: LotteryTicketSearch, trial: int, original, train, eval_sets):
        self.search, self.trial, self.original = search, trial, original
        # one tensor copy of the training set per trial, not one per training
        self.train_data = tuple(tf.convert_to_tensor(array) for array in train)
        self.model = wrap_for_pruning(original, search.schedule, search.settings)
        optimizer = search.optimizer
        self.model.compile(optimizer=type(optimizer).from_config(optimizer.get_config()),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           metrics=["accuracy"])
        self.reset = OptimizerReset(self.model.optimizer, self.model.trainable_variables)
        self.evaluator = _Evaluator(self.model, eval_sets)
        self.rewind_dir = search.run_dir.rewind_dir(trial)
        if not rewind_point_dir(self.rewind_dir, 0).exists():
            save_rewind_point(self.model, self.rewind_dir, 0)
        self.theta0 = load_rewind_point(self.rewind_dir, 0, self.model)  # as on disk, verified
        self._rewind_point = None

    def rewind_point(self) -> RewindPoint:
        """θ0, or for late rewinding the weights after ``rewind_to`` steps of round 0."""
        if self._rewind_point is None:
            step = self.search.settings.rewind_to
            self._rewind_point = self.theta0 if step == 0 else \
                load_rewind_point(self.rewind_dir, step, self.model)
        return self._rewind_point

    def resume_state(self, done: int):
        """The ticket's masks and starting weights for round ``done``."""
        if done == 0:
            return current_masks(self.model), self.theta0
        previous = self.search.run_dir.round(self.trial, done - 1)
        masks = Masks.load(previous / "next_masks.npz")
        if self.search.settings.rewinds_weights:
            return masks, self.rewind_point()
        return masks, RewindPoint.load(previous / "ticket" / "weights", self.model)

    def round(self, round_index, masks, start, stage):
        """Train the ticket and the controls of one round into ``stage``."""
        search = self.search
        settings, schedule = search.settings, search.schedule
        capture = None
        if round_index == 0 and settings.rewinds_weights and settings.rewind_to > 0:
            capture = (settings.rewind_to, lambda model: save_rewind_point(
                model, self.rewind_dir, settings.rewind_to))
        trainings = [self.train("ticket", round_index, masks, start, capture)]
        (stage / "ticket").mkdir()
        masks.save(stage / "ticket" / "masks.npz")
        trained = RewindPoint.capture(self.model, (round_index + 1) * schedule.steps_per_round)
        trained.save(stage / "ticket" / "weights")
        next_masks = None
        if round_index < schedule.rounds:
            next_masks = trained_masks(self.model, schedule, settings, round_index + 1,
                                       label=f"trial {self.trial}, ")
            next_masks.save(stage / "next_masks.npz")
        for variant in search.controls if round_index > 0 else ():
            seed = search._round_seed(self.trial, round_index, variant)
            if variant == "random_reinit":
                control_masks, control_start = masks, RewindPoint.fresh_draw(self.original, seed)
            else:
                full = Masks({key: np.ones_like(mask) for key, mask in masks.items()})
                control_masks = random_pruning(full, masks.sparsity(), seed=seed)
                control_start = self.theta0
            trainings.append(self.train(variant, round_index, control_masks, control_start))
            (stage / variant).mkdir()
            control_masks.save(stage / variant / "masks.npz")
        write_json(stage / "metrics.json", {"records": [t.record.to_dict() for t in trainings]})
        return trainings, trained, next_masks

    def train(self, variant, round_index, masks, start, capture=None) -> "_Training":
        """One full training from ``start`` under ``masks``: what it reached."""
        search = self.search
        seed = search._round_seed(self.trial, round_index, variant)
        keras.utils.set_random_seed(seed)  # shuffling and dropout: resumable, bit for bit
        start_round(self.model, masks, start)
        restart = variant != "ticket" or search.settings.restarts_schedule
        steps = search.schedule.steps_per_round
        self.reset.reset(step=0 if restart else round_index * steps)
        x, y = self.train_data
        per_epoch = min(steps, len(x) // search.batch_size)
        tracker = _RoundTracker(self.evaluator, search.eval_every, steps, capture)
        backup = _EpochBackup(self.rewind_dir.parent / "in_progress",
                              {"round": round_index, "variant": variant, "seed": seed},
                              tracker, self.reset.variables)
        first_epoch = backup.restore(self.model, masks)
        if first_epoch and search.verbose:
            print(f"trial {self.trial}, round {round_index} ({variant}): resuming at epoch "
                  f"{first_epoch}, iteration {tracker.step}", flush=True)
        dataset = tf.data.Dataset.from_tensor_slices((x, y)) \
            .shuffle(len(x), seed=seed, reshuffle_each_iteration=True) \
            .batch(search.batch_size, drop_remainder=True).repeat() \
            .skip(first_epoch * per_epoch).prefetch(tf.data.AUTOTUNE)
        began = time.perf_counter()
        self.model.fit(dataset, steps_per_epoch=per_epoch, epochs=math.ceil(steps / per_epoch),
                       initial_epoch=first_epoch,
                       callbacks=[tracker, backup, *search._callbacks,
                                  search._summaries.keras_callback(self.trial, variant,
                                                                   round_index)],
                       verbose=search.verbose)
        backup.discard()
        start_round(self.model, masks, None)  # the last update touched pruned weights
        finite = all(np.all(np.isfinite(v.numpy())) for v in self.model.trainable_variables)
        if tracker.diverged_at is not None or not finite:
            where = f"the loss by iteration {tracker.diverged_at}" if tracker.diverged_at \
                else "the weights at the end of the round"
            raise FloatingPointError(
                f"trial {self.trial}, round {round_index} ({variant}): training diverged "
                f"(non-finite {where}). Rounds before {round_index} are committed in "
                f"{search.run_dir.path}; lower the learning rate and run again.")
        best, last = tracker.best, tracker.last
        kept = masks.kept()
        record = RoundRecord(
            trial=self.trial, round=round_index, variant=variant,
            weights_remaining=masks.fraction_kept(),
            layer_weights_remaining={k: kept[k] / masks[k].size for k in masks},
            early_stop_iteration=best["iteration"], val_loss=best["val_loss"],
            val_accuracy=best["val_accuracy"], test_accuracy=best["test_accuracy"],
            final_test_accuracy=last["test_accuracy"],
            wall_time=time.perf_counter() - began)
        return _Training(record, masks, surviving_weights(self.model))


class _Training(NamedTuple):
    """One training's record, masks and trained values of the masked weights."""

    record: RoundRecord
    masks: Masks
    weights: dict
