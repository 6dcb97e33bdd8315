"""The IMP settings of a ticket that XNNPACK's sparse inference runs faster, on ARM devices.

XNNPACK runs a convolutional network's 1x1 convolutions with sparse kernels when they are
at least 2/3 zeros and the network meets its other conditions
(:mod:`tf_lottery.engines.sparse_inference`); everything else runs dense, so pruning it
makes the file smaller but no faster. The speed-up is ARM's only: on x86 with AVX, XNNPACK
turns its sparse path off.

Example::

    schedule = tfl.RewindingSchedule(rounds=5, steps_per_round=1000, prune_rate=0.2)
    settings = tfl.xnnpack_sparse_settings(model, schedule)   # {"exclude": [...]}
    pruned = tfl.prune_with_rewinding(model, schedule, **settings)
"""

from __future__ import annotations

import math

from tf_lottery.core.schedule import RewindingSchedule, check_schedule
from tf_lottery.engines.sparse_inference import sparse_inference_layout
from tf_lottery.foundations.errors import SettingError

XNNPACK_MIN_SPARSITY = 2 / 3  # the share of zeros XNNPACK's sparse 1x1 kernels need


def xnnpack_sparse_settings(model, schedule: RewindingSchedule) -> dict:
    """The ImpSettings keywords that prune only what XNNPACK's sparse inference speeds up:
    ``exclude`` names every weighted layer but the 1x1 Conv2D layers after the first
    convolution, which ``schedule`` must leave at least 2/3 zeros.

    Refuses, with the fix, a model XNNPACK cannot run sparse (channels_first, a first layer
    that is not MobileNet's 3x3 stride-2 stem, no GlobalAveragePooling2D(keepdims=True),
    a layer it cannot run in between) and a schedule too short for 2/3 sparsity.

    Example::

        pruned = tfl.prune_with_rewinding(model, schedule,
                                          **tfl.xnnpack_sparse_settings(model, schedule))
    """
    layout = sparse_inference_layout(model)
    check_schedule(schedule)
    short = [name for name in layout.sparse
             if schedule.sparsity(name, schedule.rounds) < XNNPACK_MIN_SPARSITY - 1e-9]
    if short:
        rate = schedule.rate(short[0])
        reached = schedule.sparsity(short[0], schedule.rounds)
        raise SettingError(
            f"the schedule leaves the 1x1 convolution {short[0]!r} {reached:.1%} zeros after "
            f"its {schedule.rounds} rounds; XNNPACK runs it sparse only from "
            f"{XNNPACK_MIN_SPARSITY:.1%} (2/3) on: rounds={rounds_to_sparsity(rate)} at its "
            f"prune rate {rate:g} reaches it")
    return {"exclude": list(layout.dense)}


def rounds_to_sparsity(rate: float, sparsity: float = XNNPACK_MIN_SPARSITY) -> int:
    """The fewest rounds pruning ``rate`` of the survivors each reach ``sparsity``."""
    return math.ceil(math.log(1 - sparsity) / math.log(1 - rate) - 1e-9)
