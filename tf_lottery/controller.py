"""The round controller: ends IMP rounds inside a LotteryModel's ``fit``.

At every round end of the :class:`~tf_lottery.RewindingSchedule` it tells the
:class:`~tf_lottery.RoundCallback` s, computes the next masks from the trained weights,
starts the next round where the rewind policy says (θ0, iteration k, or the trained
weights) and gives the optimizer a fresh state. The step count is the model's own
optimizer-step counter, read at epoch ends; per-step Python runs only when a round end or
the late-rewinding capture falls inside an epoch (:meth:`RoundController.batch_hooks`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from tf_lottery.callbacks import Callback
from tf_lottery.errors import SettingError
from tf_lottery.rewind import OptimizerReset, load_rewind_point, save_rewind_point
from tf_lottery.rounds import current_masks, start_round, trained_masks
from tf_lottery.schedule import RewindingSchedule
from tf_lottery.settings import ImpSettings


@dataclasses.dataclass(frozen=True)
class RoundSummary:
    """What one finished round trained with and reached."""

    round: int
    step: int
    weights_remaining: float
    layer_sparsity: dict
    metrics: dict

    def to_config(self) -> dict:
        return dataclasses.asdict(self)


def counted_steps(model) -> int:
    """Optimizer steps a prepared model has taken in its IMP run."""
    return max(0, int(model.engine.step_counter(model).numpy()))


class RoundController(Callback):
    """Ends rounds at the schedule's boundaries: record, new masks, rewind, optimizer reset."""

    def __init__(self, schedule: RewindingSchedule, settings: ImpSettings, checkpoint_dir,
                 history=()):
        super().__init__()
        self.schedule, self.settings = schedule, settings
        self.policy = settings.policy
        self.checkpoint_dir = Path(checkpoint_dir)
        self.history: list[RoundSummary] = [
            h if isinstance(h, RoundSummary) else RoundSummary(**h) for h in history]
        self.round_callbacks = []
        self.step = 0  # the step the rounds have been brought up to
        self._epoch_start = 0
        self._optimizer_reset = None
        self._start_point = None    # where rounds start (rewinding policies)
        self._reference = None      # the rewind point criteria compare with (θ0 otherwise)

    @property
    def round(self) -> int:
        return self.schedule.round_at(self.step)

    def _pending_steps(self) -> list[int]:
        """Future steps at which the controller must act: round ends and the rewind capture."""
        pending = [self.schedule.steps_per_round]
        if self.policy.rewinds_weights and self.step < self.policy.rewind_step:
            pending.append(self.policy.rewind_step)
        return pending

    def needs_batch_hooks(self, start_step: int, steps_per_epoch) -> bool:
        """Whether a round end or the rewind capture can fall inside an epoch of a fit that
        starts at ``start_step`` with ``steps_per_epoch`` steps (None: unknown)."""
        if not steps_per_epoch:
            return True
        step = self.step
        self.step = start_step
        try:
            return start_step % steps_per_epoch != 0 or \
                any(s % steps_per_epoch for s in self._pending_steps())
        finally:
            self.step = step

    def batch_hooks(self) -> Callback:
        """A callback that hands the controller every (execution's) batch end."""
        return _BatchEnds(self)

    def on_train_begin(self, logs=None):
        model = self.model
        self.step = counted_steps(model)
        self._check_execution_boundaries(model.engine.steps_per_execution(model))
        if self._optimizer_reset is None or self._optimizer_reset.optimizer is not model.optimizer:
            self._optimizer_reset = OptimizerReset(model.optimizer, model.trainable_variables)
        # fail now, not after a round of training: the rewind points are read and checked
        if self.policy.rewinds_weights and self.step >= self.policy.rewind_step:
            self._start_point = load_rewind_point(self.checkpoint_dir, self.policy.rewind_step,
                                                  model)
        self._reference = self._start_point or load_rewind_point(self.checkpoint_dir, 0, model)

    def _check_execution_boundaries(self, every: int) -> None:
        """Refuse a steps_per_execution under which a round end (or the rewind capture)
        would fall inside an execution: Keras runs ``every`` steps per call and restarts
        its executions at every epoch start, so those are the only places to act."""
        if every == 1:
            return
        per_epoch = (self.params or {}).get("steps")
        spr = self.schedule.steps_per_round
        targets = list(range(self.step + spr - self.step % spr, self.schedule.total_steps, spr))
        if self.policy.rewinds_weights and self.step < self.policy.rewind_step:
            targets.append(self.policy.rewind_step)
        for target in targets:
            offset = target - self.step
            if (offset % per_epoch if per_epoch else offset) % every:
                raise SettingError(
                    f"steps_per_execution={every} puts the round end (or rewind point) at step "
                    f"{target} inside an execution (this fit starts at step {self.step}"
                    f"{f', {per_epoch} steps per epoch' if per_epoch else ''}). Compile with a "
                    f"steps_per_execution that divides steps_per_round={spr}, the rewind "
                    "step, the steps per epoch and the step the model is at.")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.step

    def batch_end(self, batch, logs=None):
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
        if self.policy.rewinds_weights and previous < self.policy.rewind_step <= step:
            self._start_point = self._reference = save_rewind_point(
                self.model, self.checkpoint_dir, self.policy.rewind_step)
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
        masks = trained_masks(self.model, self.schedule, self.settings, next_round,
                              initial=self._reference)
        start_round(self.model, masks, self._start_point)
        self._optimizer_reset.reset(
            step=self.policy.optimizer_step(next_round, self.schedule.steps_per_round))

    def get_config(self):
        return {"schedule": self.schedule.get_config(), "settings": self.settings.to_config(),
                "checkpoint_dir": str(self.checkpoint_dir),
                "history": [summary.to_config() for summary in self.history]}

    @classmethod
    def from_config(cls, config):
        return cls(RewindingSchedule.from_config(config["schedule"]),
                   ImpSettings(**config["settings"]), config["checkpoint_dir"],
                   config.get("history", ()))


class _BatchEnds(Callback):
    def __init__(self, controller: RoundController):
        super().__init__()
        self.controller = controller

    def on_train_batch_end(self, batch, logs=None):
        self.controller.batch_end(batch, logs)


def steps_per_epoch(x, batch_size, fit_kwargs: dict):
    """How many steps an epoch of ``fit(x, batch_size=..., **fit_kwargs)`` takes, or None
    when that cannot be known before Keras runs it (then rounds are checked every step)."""
    if fit_kwargs.get("steps_per_epoch"):
        return int(fit_kwargs["steps_per_epoch"])
    if fit_kwargs.get("validation_split"):
        return None
    cardinality = getattr(x, "cardinality", None)
    if cardinality is not None:  # a tf.data.Dataset: batched by the user
        count = int(cardinality())
        return count if count > 0 else None
    leaves = list(x.values()) if isinstance(x, dict) else \
        list(x) if isinstance(x, (list, tuple)) else [x]
    if leaves and all(hasattr(leaf, "shape") and len(leaf.shape) > 0
                      for leaf in leaves):
        return math.ceil(int(leaves[0].shape[0]) / (batch_size or 32))
    if hasattr(x, "__len__") and hasattr(x, "__getitem__"):  # a keras Sequence / PyDataset
        return len(x)
    return None
