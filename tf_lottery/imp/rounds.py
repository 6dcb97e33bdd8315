"""A round boundary of IMP as two steps, shared by LotteryModel.fit and LotteryTicketSearch.

``trained_masks`` chooses the next round's masks from the trained weights;
``start_round`` puts masks into the model and sets the weights the round starts from (a
rewind point, or the trained weights themselves), pruned weights exactly 0. Both work on
any engine's prepared model.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from tf_lottery.core.masks import Masks, masked, next_masks
from tf_lottery.core.settings import ImpSettings
from tf_lottery.engines import engine_for
from tf_lottery.foundations.errors import DivergedError
from tf_lottery.imp.rewind import RewindPoint


def trained_masks(model, schedule, settings: ImpSettings, next_round: int,
                  initial: Optional[RewindPoint] = None, label: str = "") -> Masks:
    """The masks of ``next_round`` for a prepared ``model`` at the end of its round: see
    :func:`chosen_masks`."""
    return chosen_masks(model.masked_weights(), model.masks, schedule, settings, next_round,
                        initial, label, channels=model.channel_plan)


def chosen_masks(weights: dict, masks: Masks, schedule, settings: ImpSettings,
                 next_round: int, initial: Optional[RewindPoint] = None,
                 label: str = "", channels=None) -> Masks:
    """The masks of ``next_round``, chosen among the survivors of ``masks`` by the trained
    ``weights`` (path -> masked values) and, for criteria that use them, the weights at the
    rewind point ``initial``; in whole channels of ``channels`` (a ChannelPlan) under
    ``granularity="channel"``.

    Raises DivergedError, changing nothing, if a surviving weight is not finite.
    """
    broken = [path for path, value in weights.items() if not np.all(np.isfinite(value))]
    if broken:
        raise DivergedError(
            f"{label}round {next_round - 1} ended with non-finite weights in "
            f"{', '.join(broken)} (the loss diverged); the masks were left as they were. "
            "Lower the learning rate or clip gradients, then train again.")
    sparsity = {path: schedule.path_sparsity(path, next_round) for path in masks}
    return next_masks(weights, masks, sparsity, criterion=settings.criterion,
                      seed=settings.seed + next_round, refill=settings.refill,
                      initial=None if initial is None else initial.values,
                      **settings.structure(channels))


def start_round(model, masks: Masks, start_from: Optional[RewindPoint]) -> None:
    """Set the model's masks, and its weights to ``start_from`` (None: the current ones),
    every pruned weight exactly 0."""
    pruned = engine_for(model).pruned_weights(model)
    for path, p in pruned.items():
        p.mask.assign(masks[path].astype(p.mask.numpy().dtype))
    if start_from is not None:
        start_from.restore(model, masks)
    else:
        for path, p in pruned.items():
            p.weight.assign(masked(p.weight.numpy(), masks[path]))
