"""The round controller: ends IMP rounds inside a LotteryModel's training.

At every round end of the :class:`~tf_lottery.core.plan.RoundPlan` it takes the trained
weights (the optimizer's moving averages under ``use_ema``, as a ``fit`` ending there would
leave them), tells the :class:`~tf_lottery.RoundCallback` s, computes the next masks, starts
the next round where the rewind policy says (θ0, iteration k, or the trained weights) and
gives the optimizer a fresh state at the step the round starts from.

Three drivers share it: ``fit`` (it is a Keras callback), ``train_on_batch`` and
:class:`CustomTraining` (a training loop of the user's own). The step count is the model's
own optimizer-step counter, read at epoch ends; per-batch Python runs only when a round end
or the late-rewinding capture falls inside an epoch (:meth:`RoundController.batch_hooks`).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from tf_lottery.core.plan import RoundPlan
from tf_lottery.core.schedule import RewindingSchedule
from tf_lottery.core.settings import ImpSettings
from tf_lottery.engines import Callback, LotteryModel, RoundCallback, RoundDriver, engine_for
from tf_lottery.foundations.errors import SettingError
from tf_lottery.imp.rewind import OptimizerReset, RewindPoints
from tf_lottery.imp.rounds import start_round, trained_masks


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


class RoundController(Callback, RoundDriver):
    """Ends rounds at the plan's boundaries: record, new masks, rewind, optimizer reset.

    The :class:`~tf_lottery.engines.RoundDriver` of a LotteryModel made by
    ``prune_with_rewinding``: a callback of its ``fit``, and what ``train_on_batch`` and
    :class:`CustomTraining` hand their steps to."""

    def __init__(self, schedule: RewindingSchedule, settings: ImpSettings, checkpoint_dir,
                 history=()):
        super().__init__()
        self.schedule, self.settings = schedule, settings
        self.plan = RoundPlan(schedule, settings.policy)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.history: list[RoundSummary] = [
            h if isinstance(h, RoundSummary) else RoundSummary(**h) for h in history]
        self.round_callbacks = []
        self.step = 0  # the step the rounds have been brought up to
        self._anchor = (0, 0, -1)  # (step, batches pending, batch index) at the last sync
        self._epoch_start = 0
        self.optimizer = self.engine = None  # what trains the model (set by begin)
        self._optimizer_reset = None
        self._warned = set()  # the uneven fit ends warned of: overran or not
        self.points = RewindPoints(self.checkpoint_dir, settings.policy)

    @property
    def round(self) -> int:
        return self.plan.round_at(self.step)

    @property
    def finished(self) -> bool:
        """Whether every round has trained all its steps."""
        return self.step >= self.plan.total_steps

    def _pending_steps(self, step: int) -> list[int]:
        """The steps after ``step`` at which the controller must act: round ends and the
        rewind capture."""
        capture = self.points.capture_step
        return [end for end in self.plan.ends[:-1] if end > step] + \
            ([capture] if capture is not None and step < capture else [])

    # --- what every driver calls ------------------------------------------------------

    def begin(self, model, optimizer) -> None:
        """Get ready to drive ``model`` trained by ``optimizer``: read the step, the rewind
        points (checked now, not after a round of training) and the optimizer's state."""
        self.set_model(model)
        self.optimizer, self.engine = optimizer, engine_for(model)
        self.step = model.imp_step
        self._anchor = (self.step, self.engine.pending_batches(optimizer), -1)
        if self._optimizer_reset is None or self._optimizer_reset.optimizer is not optimizer:
            self._optimizer_reset = OptimizerReset(optimizer, model.trainable_variables)
        self.points = RewindPoints(self.checkpoint_dir, self.settings.policy)  # read afresh
        self.points.check(model, self.step)

    def advance(self, step: int, logs=None) -> None:
        """The model has taken ``step`` steps: capture the rewind point and end the rounds
        it has passed."""
        previous, self.step = self.step, step
        if self.points.captures(previous, step):
            self.points.capture(self.model)
        for finished in range(self.plan.round_at(previous), self.plan.round_at(step)):
            self._optimizer_reset.finalize()
            self._record(finished, logs)
            self._end_round(finished + 1)

    def end(self, logs=None) -> None:
        """Training stopped: record the final round if it is done; pruned weights exactly 0
        (a ``fit`` may have set them to the optimizer's moving averages)."""
        if self.finished and all(r.round != self.schedule.rounds for r in self.history):
            self._record(self.schedule.rounds, logs)
        start_round(self.model, self.model.masks, None)

    # --- the RoundDriver of a LotteryModel ---------------------------------------------

    def fit_callbacks(self, model, callbacks: list, batches_per_epoch) -> list:
        """``callbacks`` and this controller (and its batch hooks where a round end or the
        rewind capture can fall inside an epoch); the RoundCallbacks among them hear of
        round ends."""
        self.round_callbacks = [cb for cb in callbacks if isinstance(cb, RoundCallback)]
        hooks = [_BatchEnds(self)] if self._needs_batch_hooks(model, batches_per_epoch) else []
        return [*callbacks, self, *hooks]

    def after_batch(self, model, logs) -> None:
        if self.model is not model or self.optimizer is not model.optimizer:
            self.begin(model, model.optimizer)
        self.advance(model.imp_step, logs)

    def custom_training(self, model, optimizer) -> CustomTraining:
        return CustomTraining(model, optimizer, self)

    # --- fit ----------------------------------------------------------------------------

    def _needs_batch_hooks(self, model, batches_per_epoch) -> bool:
        """Whether a round end or the rewind capture can fall inside an epoch of a fit of
        ``model`` with ``batches_per_epoch`` batches per epoch (None: unknown)."""
        engine = engine_for(model)
        per_step = engine.batches_per_step(model.optimizer)
        pending = engine.pending_batches(model.optimizer)
        if not batches_per_epoch or pending or batches_per_epoch % per_step:
            return True
        start = model.imp_step
        return any((s - start) % (batches_per_epoch // per_step)
                   for s in self._pending_steps(start))

    def on_train_begin(self, logs=None):
        model = self.model
        self.begin(model, model.optimizer)
        self._check_execution_boundaries(self.engine.steps_per_execution(model))

    def _check_execution_boundaries(self, every: int) -> None:
        """Refuse a steps_per_execution under which a round end (or the rewind capture)
        would fall inside an execution: Keras runs ``every`` batches per call and restarts
        its executions at every epoch start, so those are the only places to act."""
        if every == 1:
            return
        per_epoch = (self.params or {}).get("steps")
        per_step = self.engine.batches_per_step(self.optimizer)
        pending = self.engine.pending_batches(self.optimizer)
        for target in self._pending_steps(self.step):
            offset = (target - self.step) * per_step - pending  # in batches
            if (offset % per_epoch if per_epoch else offset) % every:
                raise SettingError(
                    f"steps_per_execution={every} puts the round end (or rewind point) at step "
                    f"{target} inside an execution (this fit starts at step {self.step}"
                    f"{f', {per_epoch} batches per epoch' if per_epoch else ''}). Compile with "
                    "a steps_per_execution that divides the round lengths, the rewind step, "
                    "the batches per epoch and the step the model is at.")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.step
        self._anchor = (self.step, self._anchor[1], -1)

    def batch_end(self, batch, logs=None):
        """After the batch (or execution) ending at index ``batch`` of this epoch: the step
        follows from the batches since the last sync (read from the counter only where the
        controller acts: reading it every batch would cost a sync on JAX)."""
        step, pending, at = self._anchor
        per_step = self.engine.batches_per_step(self.optimizer)
        step += (pending + batch - at) // per_step
        if not any(self.step < s <= step for s in self._pending_steps(self.step)):
            self.step = step
            return
        ends_epoch = batch + 1 == self.params.get("steps")
        if ends_epoch and self.plan.round_at(step) > self.round:
            return  # let the epoch finish (validation included), then end the round
        counted = self.model.imp_step
        if counted != step:
            self._refuse_uncounted(f"{batch - at} batches from step {self.step}", counted, step)
        before = self.round
        self.advance(step, logs)
        if self.round != before:  # a round started afresh: no batch pending
            self._anchor = (self.step, 0, batch)

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        counted = model.imp_step
        batches = (self.params or {}).get("steps") or 0
        if counted == self._epoch_start and not model.stop_training and \
                batches >= self.engine.batches_per_step(self.optimizer):
            self._refuse_uncounted(f"an epoch of {batches} batches", counted,
                                   f"beyond {counted}")
        self.advance(counted, logs)
        self._anchor = (self.step, self.engine.pending_batches(self.optimizer), -1)

    @staticmethod
    def _refuse_uncounted(what: str, counted: int, expected) -> None:
        """A train_step of the user's own that does not update the optimizer IMP counts."""
        raise SettingError(
            f"{what} took the model to optimizer step {counted}, not {expected}: IMP counts "
            "its rounds in the updates of the optimizer given to compile. A train_step of "
            "your own must update self.optimizer (apply or apply_gradients) once per batch "
            "(once per gradient_accumulation_steps batches).")

    def on_train_end(self, logs=None):
        self.end(logs)
        self._warn_uneven_fit()

    def _warn_uneven_fit(self) -> None:
        """Warn (once for a round cut short, once for an overrun) when the fit ended inside
        a round or trained the final round longer than the others: name the exact epochs."""
        step, ends = self.step, self.plan.ends
        overran = step > ends[-1]
        if step == 0 or step in ends or overran in self._warned:
            return
        self._warned.add(overran)
        batches = (self.params or {}).get("steps")
        per_epoch = batches // self.engine.batches_per_step(self.optimizer) if batches else 0
        if overran:
            what = (f"the fit trained the final round {step - ends[-1]} steps longer than the "
                    f"others: it ended at step {step}, the rounds at step {ends[-1]}")
        else:
            start = ends[self.round - 1] if self.round else 0
            what = (f"the fit ended at step {step}, inside round {self.round}, which trained "
                    f"{step - start} of its {ends[self.round] - start} steps (it is missing "
                    "from pruned.rounds until a fit completes it)")
        per_epoch = per_epoch or "steps_per_epoch"
        warnings.warn(f"{what}. Asked before a fit, pruned.epochs({per_epoch}) gives the epochs "
                      f"of {per_epoch} steps that train every round in full (where none do, "
                      "the fit that does).", stacklevel=2)

    # --- a round boundary ---------------------------------------------------------------

    def _record(self, finished_round, logs):
        masks = self.model.masks
        metrics = {key: float(np.asarray(value)) for key, value in (logs or {}).items()
                   if np.size(value) == 1}
        summary = RoundSummary(round=finished_round, step=self.step,
                               weights_remaining=masks.fraction_kept(),
                               layer_sparsity=masks.sparsity(), metrics=metrics)
        self.history.append(summary)
        for callback in self.round_callbacks:
            callback.on_round_end(finished_round,
                                  dict(metrics, weights_remaining=summary.weights_remaining))

    def _end_round(self, next_round):
        masks = trained_masks(self.model, self.schedule, self.settings, next_round,
                              initial=self.points.reference(self.model))
        start_round(self.model, masks, self.points.start(self.model))
        self._optimizer_reset.reset(step=self.plan.steps(next_round).start)

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


class CustomTraining:
    """IMP rounds for a training loop of your own (``tf.GradientTape``, JAX's stateless
    calls): call :meth:`step` after every optimizer update. Made by
    :meth:`tf_lottery.LotteryModel.custom_training`; training the model outside its
    ``with`` block (or outside ``fit``) is refused.

    Example::

        with pruned.custom_training(optimizer) as rounds:
            while not rounds.finished:
                for x, y in dataset:
                    with tf.GradientTape() as tape:
                        loss = loss_fn(y, pruned(x, training=True))
                    grads = tape.gradient(loss, pruned.trainable_variables)
                    optimizer.apply(grads, pruned.trainable_variables)
                    if rounds.step({"loss": loss}):   # True after the last round's last step
                        break
    """

    def __init__(self, model, optimizer, controller: RoundController):
        self.model, self.optimizer, self.controller = model, optimizer, controller
        self._counting = None
        self._logs: Optional[dict] = None

    def __enter__(self) -> CustomTraining:
        self.controller.begin(self.model, self.optimizer)
        self._counting = self.model.counting()
        self._counting.__enter__()
        return self

    def __exit__(self, *exc_info):
        self._counting.__exit__(*exc_info)
        if exc_info[0] is None:
            self.controller.end(self._logs)

    @property
    def finished(self) -> bool:
        """Whether every round has trained all its steps."""
        return self.controller.finished

    def step(self, logs: Optional[dict] = None) -> bool:
        """Count one optimizer update (``logs``: metrics to record with a round that ends
        here); at a round end, prune, rewind and reset the optimizer. Returns
        :attr:`finished`."""
        if self._counting is None:
            raise SettingError("call step() inside `with pruned.custom_training(optimizer) as "
                               "rounds:`")
        engine_for(self.model).count_step(self.model)
        self._logs = logs
        self.controller.advance(self.model.imp_step, logs)
        return self.finished


# a saved LotteryModel gets its rounds back through this (the engines layer cannot import it)
LotteryModel.driver_from_config = RoundController.from_config
