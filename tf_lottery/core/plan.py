"""RoundPlan: where each round of an IMP run begins and ends, from the schedule and the
rewind policy.

Example::

    plan = RoundPlan(RewindingSchedule(rounds=2, steps_per_round=100), policy_for(30))
    plan.steps(1)        # range(30, 100): late rewinding trains steps 30-99 again
    plan.ends            # (100, 170, 240)
    plan.round_at(150)   # 1
"""

from __future__ import annotations

import bisect
import itertools

from tf_lottery.core.rewind_policy import RewindPolicy


class RoundPlan:
    """Where each round of an IMP run ends, counted in the run's optimizer steps
    (``LotteryModel.imp_step``), and which steps of the optimizer's own counter (the
    learning-rate schedule's) each round trains: the rewind policy's."""

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


def epoch_length(steps: int, steps_per_epoch: int) -> int:
    """The longest epoch, of at most ``steps_per_epoch`` steps, of which ``steps`` are a
    whole number (1 at worst)."""
    return max(n for n in range(1, min(steps, steps_per_epoch) + 1) if steps % n == 0)
