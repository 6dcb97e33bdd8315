"""Rewind policies: where each round after the first starts, and which optimizer steps it
trains (the steps of the learning-rate schedule it sees).

One class per mode, shared by ``LotteryModel.fit`` and ``LotteryTicketSearch``. With
``steps_per_round`` T, round r >= 1:

============================  =====================================  =====================
``rewind_to``                 the round starts from                  optimizer steps
============================  =====================================  =====================
``0`` / ``"init"``            θ0, the weights at wrap time (paper)   0 to T
``k`` (``0 < k``)             the weights after k steps of round 0   k to T (T - k steps)
``"lr"``                      the trained weights                    0 to T (the LR restarts)
``None``                      the trained weights                    rT to (r+1)T (continues)
============================  =====================================  =====================

Late rewinding trains each later round from step k to step T, its learning-rate schedule
and step counter at k, as Frankle et al. 2020 and open_lth do; round 0 trains 0 to T.

A new mode is a subclass of :class:`RewindPolicy` and an entry in :func:`policy_for`.

Example::

    policy = policy_for("lr")
    policy.rewind_step            # None: it keeps the trained weights
    policy.steps(round_index=3, steps_per_round=1000)   # range(0, 1000)
"""

from __future__ import annotations

import numbers
from typing import Optional

from tf_lottery.foundations.errors import SettingError

_REWIND_MODES = ("init", "an iteration k >= 0", "lr", None)


class RewindPolicy:
    """Where a round starts. ``rewind_step`` is the iteration whose weights every round
    starts from (a rewind point), or None to start from the weights the last round reached."""

    rewind_step: Optional[int] = None
    value: object = None  # the ``rewind_to`` value this policy stands for

    def steps(self, round_index: int, steps_per_round: int) -> range:
        """The optimizer steps round ``round_index`` trains: its step counter (and so the
        learning-rate schedule) starts at the first and the round ends before the stop."""
        return range(0, steps_per_round)

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

    def steps(self, round_index: int, steps_per_round: int) -> range:
        """Round 0 trains from step 0; later rounds from the rewind step, as open_lth does."""
        return range(self.rewind_step if round_index > 0 else 0, steps_per_round)


class LearningRateRewind(RewindPolicy):
    """Keep the trained weights, restart the learning-rate schedule (Renda et al. 2020)."""

    value = "lr"


class FineTune(RewindPolicy):
    """Keep the trained weights and the schedule's position: plain iterative pruning."""

    value = None

    def steps(self, round_index: int, steps_per_round: int) -> range:
        return range(round_index * steps_per_round, (round_index + 1) * steps_per_round)


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
    raise SettingError(f"rewind_to must be one of {_REWIND_MODES}, got {rewind_to!r}")
