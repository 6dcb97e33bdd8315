"""The rounds of an IMP run, shared by LotteryModel.fit and LotteryTicketSearch.

:class:`RoundPlan` says where each round begins and ends in optimizer steps. A round
boundary is two steps: ``trained_masks`` chooses the next round's masks from the trained
weights; ``start_round`` puts masks into the model and sets the weights the round starts
from (a rewind point, or the trained weights themselves), pruned weights exactly 0. Both
work on any engine's prepared model through ``model.engine``.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Optional

import numpy as np

from tf_lottery.errors import DivergedError
from tf_lottery.masks import Masks, next_masks
from tf_lottery.rewind import RewindPoint, masked
from tf_lottery.rewind_policy import RewindPolicy
from tf_lottery.settings import ImpSettings


class RoundPlan:
    """Where each round of an IMP run ends, counted in the run's optimizer steps
    (``LotteryModel.imp_step``), and which steps of the optimizer's own counter (the
    learning-rate schedule's) each round trains: the rewind policy's.

    Example::

        plan = RoundPlan(RewindingSchedule(rounds=2, steps_per_round=100), policy_for(30))
        plan.steps(1)        # range(30, 100): late rewinding trains steps 30-99 again
        plan.ends            # (100, 170, 240)
        plan.round_at(150)   # 1
    """

    def __init__(self, schedule, policy: RewindPolicy):
        self.schedule, self.policy = schedule, policy
        self.ends = tuple(itertools.accumulate(
            len(self.steps(r)) for r in range(schedule.rounds + 1)))

    def steps(self, round_index: int) -> range:
        """The optimizer steps round ``round_index`` trains (see :mod:`rewind_policy`)."""
        return self.policy.steps(round_index, self.schedule.steps_per_round)

    @property
    def total_steps(self) -> int:
        """Optimizer steps to train every round, the final (sparsest) one included."""
        return self.ends[-1]

    def round_at(self, step: int) -> int:
        """The round that trains after ``step`` steps of the run (the last never ends)."""
        return min(bisect.bisect_right(self.ends, step), self.schedule.rounds)


def current_masks(model) -> Masks:
    """The masks ``model`` (a prepared LotteryModel) holds now, by weight path."""
    return Masks({path: pruned.mask.numpy() != 0
                  for path, pruned in model.engine.pruned_weights(model).items()})


def masked_weights(model, masks: Masks) -> dict:
    """Path -> current value of every masked weight, pruned entries exactly 0."""
    return {path: masked(p.weight.numpy(), masks[path])
            for path, p in model.engine.pruned_weights(model).items()}


def trained_masks(model, schedule, settings: ImpSettings, next_round: int,
                  initial: Optional[RewindPoint] = None, label: str = "") -> Masks:
    """The masks of ``next_round``, chosen among the survivors by the trained weights and,
    for criteria that use them, the weights at the rewind point ``initial``.

    Raises DivergedError, changing nothing, if a surviving weight is not finite.
    """
    masks = current_masks(model)
    weights = masked_weights(model, masks)
    broken = [path for path, value in weights.items() if not np.all(np.isfinite(value))]
    if broken:
        raise DivergedError(
            f"{label}round {next_round - 1} ended with non-finite weights in "
            f"{', '.join(broken)} (the loss diverged); the masks were left as they were. "
            "Lower the learning rate or clip gradients, then train again.")
    sparsity = {path: schedule.path_sparsity(path, next_round) for path in masks}
    return next_masks(weights, masks, sparsity, criterion=settings.criterion,
                      scope=settings.scope, block_size=settings.block_size,
                      seed=settings.seed + next_round,
                      initial=None if initial is None else initial.values)


def start_round(model, masks: Masks, start_from: Optional[RewindPoint]) -> None:
    """Set the model's masks, and its weights to ``start_from`` (None: the current ones),
    every pruned weight exactly 0."""
    pruned = model.engine.pruned_weights(model)
    for path, p in pruned.items():
        p.mask.assign(masks[path].astype(p.mask.numpy().dtype))
    if start_from is not None:
        start_from.restore(model, masks)
    else:
        for path, p in pruned.items():
            p.weight.assign(masked(p.weight.numpy(), masks[path]))
