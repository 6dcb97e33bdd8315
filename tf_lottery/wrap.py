"""prune_with_rewinding: one call turns a Keras model into an IMP run that ``fit`` drives.

The returned :class:`LotteryModel` trains the given model's own layers and weights under
masks (TF-MOT wrappers for tf_keras models, mask constraints for Keras 3 models: see
:mod:`tf_lottery.engines`). Its ``fit`` adds the round controller
(:mod:`tf_lottery.controller`), which at every round end of the
:class:`~tf_lottery.RewindingSchedule` computes the next masks from the trained weights,
rewinds the surviving weights and resets the optimizer.
"""

from __future__ import annotations

import tempfile
from fnmatch import fnmatch
from pathlib import Path
from typing import Optional

from tf_lottery.callbacks import Callback, RoundCallback
from tf_lottery.checks import did_you_mean
from tf_lottery.controller import (
    CustomTraining,
    RoundController,
    counted_steps,
    steps_per_epoch,
)
from tf_lottery.engines import engine_for, keras_family
from tf_lottery.errors import SettingError, SettingTypeError
from tf_lottery.masks import Masks
from tf_lottery.rewind import save_rewind_point
from tf_lottery.rounds import current_masks, masked_weights
from tf_lottery.schedule import RewindingSchedule
from tf_lottery.settings import ImpSettings


def prune_with_rewinding(model, schedule: RewindingSchedule, *,
                         checkpoint_dir: Optional[str] = None, **settings) -> LotteryModel:
    """Wrap ``model`` for iterative magnitude pruning with rewinding; fit it to run the rounds.

    The model's current weights are θ0: they are written to ``checkpoint_dir`` (a new
    temporary directory if not given) as a TF checkpoint before this returns. The returned
    model shares its layers, and so its weights, with ``model``.

    Args:
      model: a built Keras 3 model (Sequential, functional or subclassed), or a built
        Sequential or functional tf_keras model.
      schedule: the rounds, their length in steps and the prune rates.
      checkpoint_dir: where the rewind checkpoints go; must not hold one already.
      **settings: the :class:`~tf_lottery.ImpSettings`: ``rewind_to`` (0 / "init", an
        iteration k, "lr", None), ``scope`` ("layer", "global"), ``criterion``
        ("magnitude", "magnitude_increase", "random"), ``block_size``, ``exclude``,
        ``prunable``, ``seed``.

    Example::

        schedule = tfl.RewindingSchedule(rounds=3, steps_per_round=1000, prune_rate=0.2)
        pruned = tfl.prune_with_rewinding(model, schedule, rewind_to="lr")
        pruned.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        pruned.fit(train, epochs=pruned.total_steps // steps_per_epoch)
        ticket = tfl.strip_pruning(pruned)
    """
    settings = ImpSettings.build(**settings)
    lottery = prepare(model, schedule, settings)
    checkpoint_dir = Path(checkpoint_dir or tempfile.mkdtemp(prefix="tf_lottery_"))
    save_rewind_point(lottery, checkpoint_dir, 0)
    lottery.attach(RoundController(schedule, settings, checkpoint_dir))
    return lottery


def prepare(model, schedule: RewindingSchedule, settings: ImpSettings) -> LotteryModel:
    """Check ``model`` and the settings, and return the LotteryModel that trains its
    weights under masks (all ones) without a round controller: the search drives rounds
    itself. Nothing is written."""
    engine = engine_for(model)
    engine.check_model(model)
    if not isinstance(schedule, RewindingSchedule):
        raise SettingTypeError(f"schedule must be a tf_lottery.RewindingSchedule, got "
                               f"{type(schedule).__name__}")
    if settings.policy.rewinds_weights and settings.rewind_to >= schedule.steps_per_round:
        raise SettingError(
            f"rewind_to={settings.rewind_to} lies beyond the first round "
            f"({schedule.steps_per_round} steps); the rewind point is captured in round 0")
    pruned = pruned_paths(engine, model, schedule, settings)
    return engine.prepare(model, schedule, settings, pruned)


def pruned_paths(engine, model, schedule: RewindingSchedule, settings: ImpSettings) -> list:
    """The paths of the weights IMP prunes: each layer's default prunable weights and the
    ``prunable`` patterns, outside ``exclude``. Refuses names the model does not have."""
    layers = engine.layers(model)
    names = sorted({part for prefix, layer in layers
                    for part in f"{prefix}{engine.layer_name(layer)}".split("/")})
    for what, asked in (("exclude", settings.exclude),
                        ("RewindingSchedule.layer_rates", schedule.layer_rates)):
        for name in asked:
            if name not in names:
                raise SettingError(f"{what} names layer {name!r}, which the model does not "
                                   f"have.{did_you_mean(name, names)} Its layers: "
                                   f"{', '.join(names)}")
    paths, unsupported = [], []
    for prefix, layer in layers:
        owners = f"{prefix}{engine.layer_name(layer)}".split("/")
        if any(owner in settings.exclude for owner in owners):
            continue
        if not engine.is_supported(layer):
            unsupported.append(layer)
        defaults = {id(variable) for variable in engine.default_prunable(layer)}
        paths += [path for path, variable in engine.weight_paths(layer, prefix).items()
                  if id(variable) in defaults
                  or any(fnmatch(path, pattern) for pattern in settings.prunable)]
    if unsupported:
        raise SettingError(engine.unsupported_message(unsupported[0]))
    unmatched = [p for p in settings.prunable if not any(fnmatch(path, p) for path in paths)]
    if unmatched:
        every = sorted(engine.model_weights(model))
        raise SettingError(f"prunable pattern {unmatched[0]!r} matches no weight outside "
                           f"exclude. The weights: {', '.join(every)}")
    if not paths:
        raise SettingError(
            "the model has no prunable layer (no kernel of Dense, Conv1D/2D/3D, Embedding, "
            "..., and no weight a `prunable` pattern names) outside exclude; there is nothing "
            "for IMP to prune")
    return paths


def strip_pruning(model):
    """A plain Keras model with the masks applied and tf_lottery's masking removed.

    The result has its own copy of the weights: training ``model`` further leaves it alone.
    A model without masks (already plain) is copied as it is.

    Example::

        ticket = tfl.strip_pruning(pruned)
        ticket.save("ticket.keras")
    """
    engine = engine_for(model)
    return engine.strip(model)


class LotteryModel:
    """A Keras model whose training runs IMP rounds: made by :func:`prune_with_rewinding`.

    Compile and fit it as any model of its Keras (tf_keras or Keras 3); ``train_on_batch``
    and a loop of your own (:meth:`custom_training`) run rounds too. ``rounds`` lists a
    :class:`~tf_lottery.RoundSummary` per finished round, ``masks`` the masks in force,
    ``imp_step`` the optimizer steps taken and ``total_steps`` those of all rounds,
    ``checkpoint_dir`` where θ0 lives. Saved models load back, schedule, masks, round
    history and position included, with :func:`tf_lottery.load_model`.

    This is the engine-neutral part; each engine subclasses it with its Keras's Model.
    """

    engine = None        # the Engine of the concrete class
    _lottery = None      # the RoundController, once attached
    stripped = False     # strip_pruning detached the weights: no more training

    def attach(self, controller: RoundController) -> None:
        self._lottery = controller

    @property
    def controller(self) -> RoundController:
        if self._lottery is None:
            raise SettingError("this model was prepared for a search, not by "
                               "prune_with_rewinding: it has no rounds of its own")
        return self._lottery

    @property
    def schedule(self) -> RewindingSchedule:
        return self.controller.schedule

    @property
    def settings(self) -> ImpSettings:
        return self.controller.settings

    @property
    def rounds(self) -> list:
        return list(self.controller.history)

    @property
    def masks(self) -> Masks:
        return current_masks(self)

    @property
    def checkpoint_dir(self) -> Path:
        """The directory holding the rewind checkpoints (θ0 as ``step_0``)."""
        return self.controller.checkpoint_dir

    @property
    def imp_step(self) -> int:
        """Optimizer steps taken so far in the IMP run."""
        return counted_steps(self)

    @property
    def total_steps(self) -> int:
        """Optimizer steps of all rounds: ``schedule.total_steps``, less under late
        rewinding, whose rounds after the first train from step k to ``steps_per_round``."""
        return self.controller.plan.total_steps

    def masked_weights(self) -> dict:
        """Path -> value of every masked weight (pruned entries exactly 0)."""
        return masked_weights(self, self.masks)

    def check_optimizer(self, optimizer) -> None:
        """Refuse an optimizer of the other Keras, with the fix."""
        if keras_family(optimizer) not in (None, self.engine.name):
            raise SettingTypeError(
                f"the optimizer {type(optimizer).__name__} belongs to another Keras than this "
                f"{self.engine.name} model; use an optimizer of "
                f"{self.engine.keras.__name__}.optimizers")

    def compile(self, optimizer="rmsprop", *args, **kwargs):
        """Keras's ``compile``; an optimizer of the other Keras is refused with the fix."""
        self.check_optimizer(optimizer)
        super().compile(optimizer, *args, **kwargs)

    def compile_from_config(self, config):
        """Keras's own, which skips models whose ``compile`` is overridden (as above)."""
        self.compile(**self.engine.keras.saving.deserialize_keras_object(config))
        if self.built:
            self.engine.optimizer_variables(self.optimizer, self.trainable_variables)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            **kwargs):
        """Keras's ``fit``, with the round controller added when the model has rounds."""
        callbacks = list(callbacks or [])
        foreign = [cb for cb in callbacks
                   if keras_family(cb) not in (None, self.engine.name)
                   and not isinstance(cb, Callback)]
        if foreign:
            raise SettingTypeError(
                f"callback {type(foreign[0]).__name__} belongs to another Keras than this "
                f"{self.engine.name} model; use the callbacks of the model's own Keras "
                f"({self.engine.keras.__name__}.callbacks)")
        callbacks = [*self.engine.fit_callbacks(), *callbacks]
        if self._lottery is not None:
            controller = self._lottery
            controller.round_callbacks = [cb for cb in callbacks
                                          if isinstance(cb, RoundCallback)]
            callbacks.append(controller)
            if self.optimizer is not None and controller.needs_batch_hooks(
                    self, steps_per_epoch(x, batch_size, kwargs)):
                callbacks.append(controller.batch_hooks())
        with self._counting():
            return super().fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                               callbacks=callbacks, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        """Keras's ``train_on_batch``: one step, and the round end if it falls there."""
        with self._counting():
            logs = super().train_on_batch(*args, **kwargs)
        if self._lottery is not None:
            controller = self._lottery
            if controller.model is not self or controller.optimizer is not self.optimizer:
                controller.begin(self, self.optimizer)
            controller.advance(counted_steps(self), logs if isinstance(logs, dict) else None)
        return logs

    def custom_training(self, optimizer=None) -> CustomTraining:
        """IMP rounds for a training loop of your own: a context in which ``optimizer``
        (default: the compiled one) may train this model, whose ``step()`` the loop calls
        after every update (see :class:`~tf_lottery.controller.CustomTraining`).

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
        self._check_trainable()
        return CustomTraining(self, optimizer, self.controller)

    def _counting(self):
        """The context in which this model's training is counted (refused once stripped)."""
        self._check_trainable()
        return self.engine.training_guard(self).counting()

    def _check_trainable(self) -> None:
        if self.stripped:
            raise SettingError(
                f"{self.name!r} was stripped (tfl.strip_pruning gave you its network, which "
                "could not be copied) and trains no more under IMP; train the stripped "
                "model itself, or wrap it again with prune_with_rewinding")

    def lottery_config(self) -> dict:
        """What a saved LotteryModel needs besides its layers: the controller, if any."""
        return {} if self._lottery is None else {"lottery": self._lottery.get_config()}

    def restore_lottery(self, config: dict) -> None:
        if "lottery" in config:
            self.attach(RoundController.from_config(config["lottery"]))
