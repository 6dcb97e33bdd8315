"""prune_with_rewinding: one call turns a Keras model into an IMP run that ``fit`` drives.

The returned :class:`LotteryModel` trains the given model's own layers and weights under
masks (TF-MOT wrappers for tf_keras models, mask constraints for Keras 3 models: see
:mod:`tf_lottery.engines`). Its ``fit`` adds the round controller
(:mod:`tf_lottery.imp.controller`), which at every round end of the
:class:`~tf_lottery.RewindingSchedule` computes the next masks from the trained weights,
rewinds the surviving weights and resets the optimizer.
"""

from __future__ import annotations

import tempfile
from fnmatch import fnmatch
from pathlib import Path
from typing import Optional

from tf_lottery.core.channels import ChannelPlan
from tf_lottery.core.schedule import RewindingSchedule, check_schedule, from_tfmot
from tf_lottery.core.settings import ImpSettings
from tf_lottery.engines import LotteryModel, engine_for
from tf_lottery.engines.channel_graph import channel_plan
from tf_lottery.foundations.checks import did_you_mean
from tf_lottery.foundations.declared import keyword_signature, split_options
from tf_lottery.foundations.errors import SettingError, SettingTypeError
from tf_lottery.imp.controller import RoundController
from tf_lottery.imp.rewind import save_rewind_point


def prune_with_rewinding(model, schedule: Optional[RewindingSchedule] = None, *,
                         checkpoint_dir: Optional[str] = None, **settings) -> LotteryModel:
    """Wrap ``model`` for iterative magnitude pruning with rewinding; fit it to run the rounds.

    The model's current weights are θ0: they are written to ``checkpoint_dir`` (a new
    temporary directory if not given) as a TF checkpoint before this returns. The returned
    model shares its layers, and so its weights, with ``model``.

    Args:
      model: a built Keras 3 model (Sequential, functional or subclassed), or a built
        Sequential or functional tf_keras model.
      schedule: the rounds, their length in steps and the prune rates (a TF-MOT
        ``pruning_schedule`` is refused with the RewindingSchedule it maps to).
      checkpoint_dir: where the rewind checkpoints go; must not hold one already.
      **settings: the :class:`~tf_lottery.ImpSettings`: ``rewind_to`` (0 / "init", an
        iteration k, "lr", None), ``scope`` ("layer", "global"), ``criterion``
        ("magnitude", "magnitude_increase", "random"), ``block_size``, ``granularity``
        ("weight", "channel"), ``refill``, ``exclude``, ``prunable``, ``seed``.

    Example::

        schedule = tfl.RewindingSchedule(rounds=3, steps_per_round=1000, prune_rate=0.2)
        pruned = tfl.prune_with_rewinding(model, schedule, rewind_to="lr")
        pruned.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        pruned.fit(train, epochs=pruned.epochs(steps_per_epoch))
        ticket = tfl.strip_pruning(pruned)
    """
    if "pruning_schedule" in settings:  # TF-MOT's `prune_low_magnitude(**pruning_params)`
        raise SettingTypeError("prune_with_rewinding takes schedule=, not TF-MOT's "
                               f"pruning_schedule=. {from_tfmot(settings['pruning_schedule'])}")
    (settings,) = split_options(settings, ImpSettings, what="IMP setting")
    lottery = prepare(model, schedule, settings)
    checkpoint_dir = Path(checkpoint_dir or tempfile.mkdtemp(prefix="tf_lottery_"))
    save_rewind_point(lottery, checkpoint_dir, 0)
    lottery.attach(RoundController(schedule, settings, checkpoint_dir))
    return lottery


prune_with_rewinding.__signature__ = keyword_signature(prune_with_rewinding, ImpSettings)


def prepare(model, schedule: RewindingSchedule, settings: ImpSettings) -> LotteryModel:
    """Check ``model`` and the settings, and return the LotteryModel that trains its
    weights under masks (all ones) without a round controller: the search drives rounds
    itself. Nothing is written."""
    engine = engine_for(model)
    engine.check_model(model)
    check_schedule(schedule)
    if settings.policy.rewinds_weights and settings.rewind_to >= schedule.steps_per_round:
        raise SettingError(
            f"rewind_to={settings.rewind_to} lies beyond the first round "
            f"({schedule.steps_per_round} steps); the rewind point is captured in round 0")
    channels = channel_groups(model, settings)
    pruned = pruned_paths(engine, model, schedule, settings, channels)
    lottery = engine.prepare(model, schedule, settings, pruned)
    lottery.channel_plan = channels
    return lottery


def channel_groups(model, settings: ImpSettings) -> Optional[ChannelPlan]:
    """The channel groups a channel ticket prunes (None unless ``granularity="channel"``):
    the model graph's (:func:`tf_lottery.engines.channel_graph.channel_plan`), where a
    group with a weight of a layer ``exclude`` names is left dense."""
    if settings.granularity != "channel":
        return None
    plan = channel_plan(model, groups=settings.channel_groups or None)
    groups, left_dense = [], dict(plan.left_dense)
    for group in plan.groups:
        excluded = [name for path in group.paths() for name in path.split("/")[:-1]
                    if name in settings.exclude]
        if excluded:
            left_dense.update(dict.fromkeys(group.scored, f"exclude names {excluded[0]!r}"))
        else:
            groups.append(group)
    if not groups:
        reasons = "; ".join(f"{path}: {why}" for path, why in left_dense.items())
        raise SettingError(f"granularity=\"channel\" finds no channel to prune in this model "
                           f"({reasons or 'it has no Conv, Dense or SeparableConv layer'}); "
                           "prune single weights (granularity=\"weight\") instead")
    return ChannelPlan(groups, left_dense)


def pruned_paths(engine, model, schedule: RewindingSchedule, settings: ImpSettings,
                 channels: Optional[ChannelPlan] = None) -> list:
    """The paths of the weights IMP prunes: each layer's default prunable weights and the
    ``prunable`` patterns, outside ``exclude`` (or every weight of the ``channels``
    groups). Refuses names the model does not have."""
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
    if channels is not None:
        return channels.paths()
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
