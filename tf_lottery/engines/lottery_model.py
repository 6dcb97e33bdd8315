"""LotteryModel: the engine-neutral part of every prepared model.

Each engine subclasses it with its Keras's Model (``Keras3LotteryModel``,
``TfKerasLotteryModel``); its masks and step count come from the engine. The rounds are
run by a :class:`RoundDriver` that the IMP layer attaches (``tf_lottery.imp``'s round
controller): the model hands it its ``fit``, ``train_on_batch`` and custom loops, and
knows nothing more of rounds. That keeps this layer below the IMP procedures.
"""

from __future__ import annotations

import abc
import math
from pathlib import Path

from tf_lottery.core.channels import ChannelPlan
from tf_lottery.core.masks import Masks, masked
from tf_lottery.core.plan import epoch_length
from tf_lottery.engines.callbacks import Callback
from tf_lottery.engines.registry import keras_family
from tf_lottery.foundations.checks import whole_number
from tf_lottery.foundations.errors import SettingError, SettingTypeError


class RoundDriver(abc.ABC):
    """What runs a LotteryModel's rounds (``tf_lottery.imp.controller.RoundController``).

    ``schedule``, ``settings``, ``checkpoint_dir``, ``history`` (the finished rounds) and
    ``plan`` (where the rounds end) describe the run.
    """

    schedule = settings = checkpoint_dir = plan = None
    history: list = []

    @abc.abstractmethod
    def fit_callbacks(self, model, callbacks: list, batches_per_epoch) -> list:
        """The callbacks a ``fit`` of ``model`` adds to ``callbacks`` to run the rounds
        (``batches_per_epoch``: None when it cannot be known before the fit)."""

    @abc.abstractmethod
    def after_batch(self, model, logs) -> None:
        """``model`` took a step outside ``fit`` (``train_on_batch``): end a round there."""

    @abc.abstractmethod
    def custom_training(self, model, optimizer):
        """A context for a training loop of the user's own (see ``custom_training``)."""

    @abc.abstractmethod
    def get_config(self) -> dict:
        """What a saved model needs to rebuild the driver (:attr:`LotteryModel.restore`)."""


class LotteryModel:
    """A Keras model whose training runs IMP rounds: made by ``prune_with_rewinding``.

    Compile and fit it as any model of its Keras (tf_keras or Keras 3); ``train_on_batch``
    and a loop of your own (:meth:`custom_training`) run rounds too. ``rounds`` lists a
    :class:`~tf_lottery.RoundSummary` per finished round, ``masks`` the masks in force,
    ``imp_step`` the optimizer steps taken and ``total_steps`` those of all rounds,
    ``checkpoint_dir`` where θ0 lives. Saved models load back, schedule, masks, round
    history and position included, with :func:`tf_lottery.load_model`.
    """

    engine = None        # the Engine of the concrete class
    stripped = False     # strip_pruning detached the weights: no more training
    channel_plan = None  # the ChannelPlan of a channel ticket (granularity="channel")
    LOTTERY_KEYS = ("lottery", "channel_plan")  # what lottery_config adds to a Keras config
    _driver = None       # the RoundDriver, once attached
    # rebuilds a saved driver from its config: set by the IMP layer (tf_lottery.imp)
    driver_from_config = None

    def attach(self, driver: RoundDriver) -> None:
        self._driver = driver

    @property
    def driver(self) -> RoundDriver:
        if self._driver is None:
            raise SettingError("this model was prepared for a search, not by "
                               "prune_with_rewinding: it has no rounds of its own")
        return self._driver

    @property
    def schedule(self):
        return self.driver.schedule

    @property
    def settings(self):
        return self.driver.settings

    @property
    def rounds(self) -> list:
        return list(self.driver.history)

    @property
    def checkpoint_dir(self) -> Path:
        """The directory holding the rewind checkpoints (θ0 as ``step_0``)."""
        return self.driver.checkpoint_dir

    @property
    def total_steps(self) -> int:
        """Optimizer steps of all rounds: ``schedule.total_steps``, less under late
        rewinding, whose rounds after the first train from step k to ``steps_per_round``."""
        return self.driver.plan.total_steps

    def epochs(self, steps_per_epoch: int) -> int:
        """The epochs of ``steps_per_epoch`` optimizer steps (batches, or batches per
        ``gradient_accumulation_steps``) that train the steps left, every round the final
        one included, exactly. When no whole number of them does, refused with the fit that
        does (on a repeated dataset).

        Example::

            pruned.fit(train, epochs=pruned.epochs(len(train)))
        """
        steps_per_epoch = whole_number(steps_per_epoch, "steps_per_epoch")
        left = max(0, self.total_steps - self.imp_step)
        if left % steps_per_epoch == 0:
            return left // steps_per_epoch
        fewer, length = left // steps_per_epoch, epoch_length(left, steps_per_epoch)
        optimizer = getattr(self, "optimizer", None)
        batches = length * (self.engine.batches_per_step(optimizer) if optimizer else 1)
        raise SettingError(
            f"the rounds have {left} steps left, not a whole number of epochs of "
            f"{steps_per_epoch} steps: {fewer} epochs would stop "
            f"{left - fewer * steps_per_epoch} steps before the final round ends (it would be "
            "missing from pruned.rounds), "
            f"{fewer + 1} would train it {(fewer + 1) * steps_per_epoch - left} steps longer "
            f"than the others. Fit epochs of {length} steps on a repeated dataset: "
            f"pruned.fit(train.repeat(), epochs={left // length}, steps_per_epoch={batches}), "
            "or choose a steps_per_round whose rounds fill whole epochs.")

    @property
    def masks(self) -> Masks:
        """The masks in force, by weight path."""
        return Masks({path: pruned.mask.numpy() != 0
                      for path, pruned in self.engine.pruned_weights(self).items()})

    @property
    def imp_step(self) -> int:
        """Optimizer steps taken so far in the IMP run."""
        return max(0, int(self.engine.step_counter(self).numpy()))

    def masked_weights(self) -> dict:
        """Path -> value of every masked weight (pruned entries exactly 0)."""
        return {path: masked(p.weight.numpy(), p.mask.numpy() != 0)
                for path, p in self.engine.pruned_weights(self).items()}

    def check_optimizer(self, optimizer) -> None:
        """Refuse an optimizer of the other Keras, with the fix."""
        if keras_family(optimizer) not in (None, self.engine.name):
            raise SettingTypeError(
                f"the optimizer {type(optimizer).__name__} belongs to another Keras than this "
                f"{self.engine.name} model; use an optimizer of {self.engine.package}"
                ".optimizers")

    def compile(self, optimizer="rmsprop", *args, **kwargs):
        """Keras's ``compile``; an optimizer of the other Keras is refused with the fix."""
        self.check_optimizer(optimizer)
        super().compile(optimizer, *args, **kwargs)

    def compile_from_config(self, config):
        """Keras's own, which skips models whose ``compile`` is overridden (as above)."""
        self.compile(**self.engine.deserialize(config))
        if self.built:
            self.engine.optimizer_variables(self.optimizer, self.trainable_variables)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            **kwargs):
        """Keras's ``fit``, with the rounds' callbacks added when the model has rounds."""
        callbacks = list(callbacks or [])
        foreign = [cb for cb in callbacks
                   if keras_family(cb) not in (None, self.engine.name)
                   and not isinstance(cb, Callback)]
        if foreign:
            raise SettingTypeError(
                f"callback {type(foreign[0]).__name__} belongs to another Keras than this "
                f"{self.engine.name} model; use the callbacks of the model's own Keras "
                f"({self.engine.package}.callbacks)")
        if self._driver is not None and self.optimizer is not None:
            callbacks = self._driver.fit_callbacks(self, callbacks,
                                                   batches_per_epoch(x, batch_size, kwargs))
        with self.counting():
            return super().fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                               callbacks=self.engine.fit_callbacks(callbacks), **kwargs)

    def train_on_batch(self, *args, **kwargs):
        """Keras's ``train_on_batch``: one step, and the round end if it falls there."""
        with self.counting():
            logs = super().train_on_batch(*args, **kwargs)
        if self._driver is not None:
            self._driver.after_batch(self, logs if isinstance(logs, dict) else None)
        return logs

    def custom_training(self, optimizer=None):
        """IMP rounds for a training loop of your own: a context in which ``optimizer``
        (default: the compiled one) may train this model, whose ``step()`` the loop calls
        after every update (see :class:`~tf_lottery.imp.controller.CustomTraining`).

        Example::

            with pruned.custom_training(optimizer) as rounds:
                for x, y in dataset.repeat():
                    with tf.GradientTape() as tape:
                        loss = loss_fn(y, pruned(x, training=True))
                    optimizer.apply(tape.gradient(loss, pruned.trainable_variables),
                                    pruned.trainable_variables)
                    if rounds.step():   # the last round's last step
                        break
        """
        optimizer = optimizer or getattr(self, "optimizer", None)
        if optimizer is None:
            raise SettingError("custom_training needs the optimizer your loop updates the "
                               "model with: custom_training(optimizer)")
        self.check_optimizer(optimizer)
        self.check_trainable()
        return self.driver.custom_training(self, optimizer)

    def counting(self):
        """The context in which this model's training is counted (refused once stripped)."""
        self.check_trainable()
        return self.engine.training_guard(self).counting()

    def check_trainable(self) -> None:
        if self.stripped:
            raise SettingError(
                f"{self.name!r} was stripped (tfl.strip_pruning gave you its network, which "
                "could not be copied) and trains no more under IMP; train the stripped "
                "model itself, or wrap it again with prune_with_rewinding")

    def lottery_config(self) -> dict:
        """What a saved LotteryModel needs besides its layers: its driver's config, if any,
        and its channel groups."""
        config = {} if self._driver is None else {"lottery": self._driver.get_config()}
        if self.channel_plan is not None:
            config["channel_plan"] = self.channel_plan.to_config()
        return config

    def restore_lottery(self, config: dict) -> None:
        if "lottery" in config:
            self.attach(type(self).driver_from_config(config["lottery"]))
        if "channel_plan" in config:
            self.channel_plan = ChannelPlan.from_config(config["channel_plan"])


def batches_per_epoch(x, batch_size, fit_kwargs: dict):
    """How many batches an epoch of ``fit(x, batch_size=..., **fit_kwargs)`` takes, or None
    when that cannot be known before Keras runs it."""
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
