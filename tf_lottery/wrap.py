"""prune_with_rewinding: one call turns a tf_keras model into an IMP run that ``fit`` drives.

The returned :class:`LotteryModel` is an ordinary functional tf_keras model whose prunable
layers carry TF-MOT ``PruneLowMagnitude`` wrappers. Its ``fit`` adds two callbacks: TF-MOT's
``UpdatePruningStep`` and a round controller that, at every round end of the
:class:`~tf_lottery.RewindingSchedule`, computes the next masks from the trained weights,
rewinds the surviving weights and resets the optimizer.
"""

from __future__ import annotations

import dataclasses
import difflib
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from tf_lottery import _compat
from tf_lottery._compat import keras
from tf_lottery.masks import Masks
from tf_lottery.rewind import (
    OptimizerReset,
    load_rewind_point,
    masked,
    save_rewind_point,
)
from tf_lottery.rounds import ImpSettings, current_masks, start_round, trained_masks
from tf_lottery.schedule import RewindingSchedule


def prune_with_rewinding(model, schedule: RewindingSchedule, *, rewind_to=0, scope="layer",
                         criterion="magnitude", block_size=1, exclude=(), seed=0,
                         checkpoint_dir: Optional[str] = None) -> "LotteryModel":
    """Wrap ``model`` for iterative magnitude pruning with rewinding; fit it to run the rounds.

    The model's current weights are θ0: they are written to ``checkpoint_dir`` (a new
    temporary directory if not given) as a TF checkpoint before this returns. The returned
    model shares its layers, and so its weights, with ``model``.

    Args:
      model: a built Sequential or functional tf_keras model.
      schedule: the rounds, their length in steps and the prune rates.
      rewind_to: 0 or "init" (θ0), an iteration k < steps_per_round (late rewinding),
        "lr" (learning-rate rewinding) or None (fine-tuning, no rewind).
      scope: "layer" (each layer meets its own rate) or "global" (one magnitude threshold).
      criterion: how survivors are chosen: "magnitude", or "random" (random pruning,
        a control).
      block_size: prune blocks of this many weights along a kernel's input dimension
        (4 for float TFLite, 16 for int8) instead of single weights.
      exclude: names of layers to leave dense.
      seed: seeds the random criterion.
      checkpoint_dir: where the rewind checkpoints go; must not hold one already.

    Example::

        schedule = tfl.RewindingSchedule(rounds=3, steps_per_round=1000, prune_rate=0.2)
        pruned = tfl.prune_with_rewinding(model, schedule)
        pruned.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        pruned.fit(train, epochs=schedule.total_steps // steps_per_epoch)
        ticket = tfl.strip_pruning(pruned)
    """
    settings = ImpSettings(rewind_to=rewind_to, scope=scope, criterion=criterion,
                           block_size=block_size, exclude=exclude, seed=seed)
    wrapped = wrap_for_pruning(model, schedule, settings)
    lottery = LotteryModel(inputs=wrapped.inputs, outputs=wrapped.outputs, name=model.name)
    checkpoint_dir = Path(checkpoint_dir or tempfile.mkdtemp(prefix="tf_lottery_"))
    save_rewind_point(lottery, checkpoint_dir, 0)
    lottery._attach(_RoundController(schedule, settings, checkpoint_dir))
    return lottery


def wrap_for_pruning(model, schedule: RewindingSchedule, settings: ImpSettings):
    """Check ``model`` and the settings, and clone it with TF-MOT wrappers on every
    prunable layer not excluded; the clone shares the original layers and weights."""
    _compat.check_model(model)
    if not isinstance(schedule, RewindingSchedule):
        raise TypeError(f"schedule must be a tf_lottery.RewindingSchedule, got "
                        f"{type(schedule).__name__}")
    if settings.rewinds_weights and settings.rewind_to >= schedule.steps_per_round:
        raise ValueError(
            f"rewind_to={settings.rewind_to} lies beyond the first round "
            f"({schedule.steps_per_round} steps); the rewind point is captured in round 0")
    _check_layers(model, schedule, settings)

    def clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        if _compat.has_prunable_weights(layer) and layer.name not in settings.exclude:
            return _compat.wrap_layer(layer, schedule)
        return layer
    return keras.models.clone_model(model, clone_function=clone)


def _check_layers(model, schedule: RewindingSchedule, settings: ImpSettings) -> None:
    layers = [layer for _, layer in _compat.walk_layers(model)]
    names = [layer.name for layer in layers]
    for what, asked in (("exclude", settings.exclude),
                        ("RewindingSchedule.layer_rates", schedule.layer_rates)):
        for name in asked:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"{what} names layer {name!r}, which the model does not "
                                 f"have.{hint} Its layers: {', '.join(names)}")
    unsupported = [layer for layer in layers if layer.weights
                   and not _compat.is_supported(layer) and layer.name not in settings.exclude]
    if unsupported:
        layer = unsupported[0]
        raise ValueError(
            f"layer {layer.name!r} ({type(layer).__name__}) has weights but TF-MOT does not "
            f"know how to prune it. Leave it dense with exclude=[{layer.name!r}], or make it "
            "a tfmot.sparsity.keras.PrunableLayer (define get_prunable_weights).")
    if not any(_compat.has_prunable_weights(layer) and layer.name not in settings.exclude
               for layer in layers):
        raise ValueError(
            "the model has no prunable layer (Dense, Conv1D/2D/3D, ... with a kernel) outside "
            "exclude; there is nothing for IMP to prune")


def strip_pruning(model):
    """A plain tf_keras model with the masks applied and the wrappers removed.

    The result has its own copy of the weights: training ``model`` further leaves it alone.

    Example::

        ticket = tfl.strip_pruning(pruned)
        ticket.save("ticket.keras")
    """
    masks = current_masks(model)
    for path, pruned in _compat.pruned_weights(model).items():
        pruned.weight.assign(masked(pruned.weight.numpy(), masks[path]))
    plain = keras.Model(model.inputs, model.outputs, name=model.name)  # not a LotteryModel
    stripped = _compat.strip_pruning_wrappers(plain)
    ticket = keras.models.clone_model(stripped)
    ticket.set_weights(stripped.get_weights())
    return ticket


def counted_steps(model) -> int:
    """Training steps ``model`` has taken, as its TF-MOT wrappers count them in-graph."""
    return max(0, int(_compat.step_counter(model).numpy()))


class RoundCallback(keras.callbacks.Callback):
    """A Keras callback that also hears about IMP round ends on a LotteryModel's ``fit``.

    ``on_round_end(round_index, logs)`` runs after round ``round_index`` finished training
    and before its weights are pruned and rewound. ``logs`` holds the Keras metrics of the
    round's last step (or epoch, when the round ends with an epoch) and
    ``weights_remaining``, the fraction of prunable weights the round trained with.
    """

    def on_round_end(self, round_index: int, logs: dict) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class RoundSummary:
    """What one finished round trained with and reached."""

    round: int
    step: int
    weights_remaining: float
    layer_sparsity: dict
    metrics: dict


class _RoundController(keras.callbacks.Callback):
    """Ends IMP rounds at the schedule's boundaries: new masks, rewind, optimizer reset.

    The step count is TF-MOT's own: every wrapper's ``pruning_step`` counts the training
    steps in-graph and is saved with the model. The controller reads it at epoch ends and
    runs per-step Python only when a round end or the late-rewinding capture falls inside
    an epoch.
    """

    def __init__(self, schedule, settings, checkpoint_dir):
        super().__init__()
        self._supports_tf_logs = True  # never force a device sync on ordinary steps
        self.schedule = schedule
        self.settings = settings
        self.checkpoint_dir = Path(checkpoint_dir)
        self.history: list[RoundSummary] = []
        self.round_callbacks: list[RoundCallback] = []
        self.step = 0  # the step the rounds have been brought up to
        self._epoch_start = 0
        self._optimizer_reset = None
        self._rewind_point = None

    @property
    def round(self) -> int:
        return self.schedule.round_at(self.step)

    def _pending_steps(self) -> list[int]:
        """Future steps at which the controller must act: round ends and the rewind capture."""
        pending = [self.schedule.steps_per_round]
        if self.settings.rewinds_weights and self.step < self.settings.rewind_to:
            pending.append(self.settings.rewind_to)
        return pending

    def _implements_train_batch_hooks(self):
        # Keras asks this once per fit, after set_params: skip per-step calls when every
        # round end (and the rewind capture) coincides with an epoch end.
        steps = (self.params or {}).get("steps")
        if not steps:
            return True
        start = counted_steps(self.model)
        return start % steps != 0 or any(s % steps for s in self._pending_steps())

    def on_train_begin(self, logs=None):
        model = self.model
        self.step = counted_steps(self.model)
        every = int(model._steps_per_execution.numpy())
        for what, steps in (("steps_per_round", self.schedule.steps_per_round),
                            ("rewind_to", self._pending_steps()[-1])):
            if steps % every:
                raise ValueError(
                    f"{what}={steps} is not a multiple of the model's steps_per_execution="
                    f"{every}; round ends and the rewind point must fall between "
                    "executions. Compile with a steps_per_execution that divides both.")
        if self._optimizer_reset is None or self._optimizer_reset.optimizer is not model.optimizer:
            self._optimizer_reset = OptimizerReset(model.optimizer, model.trainable_variables)
        if self.settings.rewinds_weights and self.step >= self.settings.rewind_to:
            self._rewind_point = load_rewind_point(  # fail now, not after a round of training
                self.checkpoint_dir, self.settings.rewind_to, model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.step

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch_start + batch + 1
        ends_epoch = batch + 1 == self.params.get("steps")
        if ends_epoch and self.schedule.round_at(step) > self.round:
            return  # let the epoch finish (validation included), then end the round
        self._advance(step, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._advance(counted_steps(self.model), logs)

    def on_train_end(self, logs=None):
        final = self.schedule.rounds
        if self.step >= self.schedule.total_steps and all(r.round != final for r in self.history):
            self._record(final, logs)

    def _advance(self, step, logs):
        previous, self.step = self.step, step
        if self.settings.rewinds_weights and previous < self.settings.rewind_to <= step:
            self._rewind_point = save_rewind_point(self.model, self.checkpoint_dir,
                                                   self.settings.rewind_to)
        for finished in range(self.schedule.round_at(previous), self.schedule.round_at(step)):
            self._record(finished, logs)
            self._end_round(finished + 1)

    def _record(self, finished_round, logs):
        masks = current_masks(self.model)
        metrics = {key: float(np.asarray(value)) for key, value in (logs or {}).items()}
        summary = RoundSummary(round=finished_round, step=self.step,
                               weights_remaining=masks.fraction_kept(),
                               layer_sparsity=masks.sparsity(), metrics=metrics)
        self.history.append(summary)
        for callback in self.round_callbacks:
            callback.on_round_end(finished_round,
                                  dict(metrics, weights_remaining=summary.weights_remaining))

    def _end_round(self, next_round):
        masks = trained_masks(self.model, self.schedule, self.settings, next_round)
        start_round(self.model, masks,
                    self._rewind_point if self.settings.rewinds_weights else None)
        optimizer = self._optimizer_reset.optimizer
        self._optimizer_reset.reset(
            step=0 if self.settings.restarts_schedule else int(optimizer.iterations.numpy()))

    def get_config(self):
        return {"schedule": self.schedule.get_config(), "settings": self.settings.to_config(),
                "checkpoint_dir": str(self.checkpoint_dir)}

    @classmethod
    def from_config(cls, config):
        return cls(RewindingSchedule.from_config(config["schedule"]),
                   ImpSettings(**config["settings"]), config["checkpoint_dir"])


class LotteryModel(keras.Model):
    """A functional tf_keras model with TF-MOT wrappers whose ``fit`` runs IMP rounds.

    Made by :func:`prune_with_rewinding`; compile and fit it as any Keras model. ``rounds``
    lists a :class:`RoundSummary` per finished round; ``masks`` the masks in force now.
    Saved models load back, schedule and round position included, under
    :func:`tf_lottery.custom_object_scope`.
    """

    def _attach(self, controller: _RoundController) -> None:
        self._lottery = controller

    @property
    def schedule(self) -> RewindingSchedule:
        return self._lottery.schedule

    @property
    def rounds(self) -> list:
        return list(self._lottery.history)

    @property
    def masks(self) -> Masks:
        return current_masks(self)

    @property
    def checkpoint_dir(self) -> Path:
        """The directory holding the rewind checkpoints (θ0 as ``step_0``)."""
        return self._lottery.checkpoint_dir

    @property
    def imp_step(self) -> int:
        """Training steps taken so far in the IMP run."""
        return counted_steps(self)

    def train_step(self, data):
        """Keras' training step, then the step count: once per optimizer step."""
        logs = super().train_step(data)
        _compat.count_step(self)
        return logs

    def fit(self, *args, callbacks=None, **kwargs):
        """``keras.Model.fit`` with TF-MOT's step callback and the round controller added."""
        if len(args) > 7:
            raise TypeError("pass callbacks= to LotteryModel.fit by keyword")
        callbacks = list(callbacks or [])
        if not any(isinstance(cb, _compat.UpdatePruningStep) for cb in callbacks):
            callbacks.insert(0, _compat.UpdatePruningStep())
        self._lottery.round_callbacks = [cb for cb in callbacks if isinstance(cb, RoundCallback)]
        return super().fit(*args, callbacks=callbacks + [self._lottery], **kwargs)

    def get_config(self):
        return dict(super().get_config(), lottery=self._lottery.get_config())

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        controller = _RoundController.from_config(config.pop("lottery"))
        model = super().from_config(config, custom_objects)
        model._attach(controller)
        return model
