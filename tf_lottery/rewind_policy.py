"""Rewind policies: where each round after the first starts, and where its optimizer's step
counter (and so the learning-rate schedule) starts.

One class per mode, shared by ``LotteryModel.fit`` and ``LotteryTicketSearch``:

============================  =====================================  ====================
``rewind_to``                 the round starts from                  optimizer step
============================  =====================================  ====================
``0`` / ``"init"``            θ0, the weights at wrap time (paper)   0
``k`` (``0 < k``)             the weights after k steps of round 0   0
``"lr"``                      the trained weights                    0 (the LR restarts)
``None``                      the trained weights                    continues
============================  =====================================  ====================

A new mode is a subclass of :class:`RewindPolicy` and an entry in :func:`policy_for`.

Example::

    policy = policy_for("lr")
    policy.rewind_step            # None: it keeps the trained weights
    policy.optimizer_step(round_index=3, steps_per_round=1000)   # 0
"""

from __future__ import annotations

import numbers
from typing import Optional

from tf_lottery.errors import SettingError

REWIND_MODES = ("init", "an iteration k >= 0", "lr", None)


class RewindPolicy:
    """Where a round starts. ``rewind_step`` is the iteration whose weights every round
    starts from (a rewind point), or None to start from the weights the last round reached."""

    rewind_step: Optional[int] = None
    value: object = None  # the ``rewind_to`` value this policy stands for

    def optimizer_step(self, round_index: int, steps_per_round: int) -> int:
        """The optimizer's step count when round ``round_index`` starts."""
        return 0

    @property
    def rewinds_weights(self) -> bool:
        return self.rewind_step is not None

    def __eq__(self, other):
        return type(self) is type(other) and self.value == other.value

    def __hash__(self):
        return hash((type(self), self.value))

    def __repr__(self):
        return f"{type(self).__name__}({self.value!r})"


class RewindToIteration(RewindPolicy):
    """Rewind the survivors to the weights of iteration k: θ0 for k = 0 (Frankle & Carbin
    2019), late rewinding for k > 0 (Frankle et al. 2020). A fresh optimizer each round."""

    def __init__(self, step: int):
        self.rewind_step = self.value = step


class LearningRateRewind(RewindPolicy):
    """Keep the trained weights, restart the learning-rate schedule (Renda et al. 2020)."""

    value = "lr"


class FineTune(RewindPolicy):
    """Keep the trained weights and the schedule's position: plain iterative pruning."""

    value = None

    def optimizer_step(self, round_index: int, steps_per_round: int) -> int:
        return round_index * steps_per_round


def policy_for(rewind_to) -> RewindPolicy:
    """The policy a ``rewind_to`` value names (0, "init", k, "lr", None or "none")."""
    if isinstance(rewind_to, RewindPolicy):
        return rewind_to
    if rewind_to in ("init",):
        return RewindToIteration(0)
    if rewind_to == "lr":
        return LearningRateRewind()
    if rewind_to is None or rewind_to == "none":
        return FineTune()
    if isinstance(rewind_to, numbers.Integral) and not isinstance(rewind_to, bool) \
            and rewind_to >= 0:
        return RewindToIteration(int(rewind_to))
    raise SettingError(f"rewind_to must be one of {REWIND_MODES}, got {rewind_to!r}")
