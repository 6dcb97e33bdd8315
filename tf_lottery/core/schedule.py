"""RewindingSchedule: the round structure of iterative magnitude pruning, as plain data.

Engine-neutral: the tf_keras engine hands TF-MOT's wrappers an adapter of it
(``engines/tfmot.py``: ``RoundsSchedule``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType

from tf_lottery.foundations.checks import fraction, rate_table, whole_number
from tf_lottery.foundations.errors import SettingTypeError


@dataclasses.dataclass(frozen=True, eq=True)
class RewindingSchedule:
    """Round boundaries and per-round sparsity of an IMP run.

    Training runs ``rounds + 1`` rounds of ``steps_per_round`` steps each (under late
    rewinding, later rounds train from step k: see :mod:`tf_lottery.core.plan`): round 0
    trains the dense network, and at the end of rounds 0 .. rounds-1 a layer loses
    ``prune_rate`` of its surviving weights, so after round k it keeps
    ``(1 - prune_rate) ** k`` of them. ``layer_rates`` overrides the rate for layers by name
    (the paper's Lenet prunes its output layer at half the hidden layers' rate).

    Example::

        schedule = RewindingSchedule(rounds=15, steps_per_round=5000, prune_rate=0.2,
                                     layer_rates={"output": 0.1})
        schedule.kept_fraction("dense", round_index=3)   # 0.512
        schedule.total_steps                             # 80000: 16 trainings of 5000 steps
    """

    rounds: int
    steps_per_round: int
    prune_rate: float = 0.2
    layer_rates: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "rounds", whole_number(self.rounds, "rounds"))
        object.__setattr__(self, "steps_per_round",
                           whole_number(self.steps_per_round, "steps_per_round"))
        object.__setattr__(self, "prune_rate", fraction(self.prune_rate, "prune_rate"))
        object.__setattr__(self, "layer_rates",
                           MappingProxyType(rate_table(self.layer_rates, "layer_rates")))

    def __hash__(self):
        return hash((self.rounds, self.steps_per_round, self.prune_rate,
                     tuple(sorted(self.layer_rates.items()))))

    def __reduce__(self):  # copy and pickle through the constructor (a mappingproxy cannot)
        return (type(self), (self.rounds, self.steps_per_round, self.prune_rate,
                             dict(self.layer_rates)))

    @property
    def total_steps(self) -> int:
        """Steps to train every round, the final (sparsest) one included."""
        return (self.rounds + 1) * self.steps_per_round

    def rate(self, layer_name: str) -> float:
        """The fraction of surviving weights ``layer_name`` loses at each round end."""
        return self.layer_rates.get(layer_name, self.prune_rate)

    def path_rate(self, path: str) -> float:
        """The rate of the weight at ``path`` (``"block/dense/kernel"``): that of the
        innermost layer on the path that ``layer_rates`` names, else ``prune_rate``."""
        for name in reversed(path.split("/")[:-1]):
            if name in self.layer_rates:
                return self.layer_rates[name]
        return self.prune_rate

    def path_sparsity(self, path: str, round_index: int) -> float:
        """The target sparsity of the weight at ``path`` while round ``round_index`` trains."""
        return 1.0 - (1.0 - self.path_rate(path)) ** self._clamp(round_index)

    def kept_fraction(self, layer_name: str, round_index: int) -> float:
        """The fraction of ``layer_name``'s weights kept while round ``round_index`` trains."""
        return (1.0 - self.rate(layer_name)) ** self._clamp(round_index)

    def sparsity(self, layer_name: str, round_index: int) -> float:
        """The target sparsity of ``layer_name`` while round ``round_index`` trains."""
        return 1.0 - self.kept_fraction(layer_name, round_index)

    def round_at(self, step: int) -> int:
        """The round that trains after ``step`` optimizer steps (the last round never ends)."""
        return self._clamp(step // self.steps_per_round)

    def _clamp(self, round_index: int) -> int:
        return max(0, min(int(round_index), self.rounds))

    def get_config(self):
        return {
            "class_name": "RewindingSchedule",
            "config": {
                "rounds": self.rounds,
                "steps_per_round": self.steps_per_round,
                "prune_rate": self.prune_rate,
                "layer_rates": dict(self.layer_rates),
            },
        }

    @classmethod
    def from_config(cls, config):
        if "class_name" in config:  # accept the full serialized form get_config returns
            config = config["config"]
        return cls(**config)


def check_schedule(schedule) -> RewindingSchedule:
    """``schedule`` if it is a RewindingSchedule; anything else is refused, a TF-MOT pruning
    schedule with how its terms become a RewindingSchedule's (:func:`from_tfmot`)."""
    if isinstance(schedule, RewindingSchedule):
        return schedule
    raise SettingTypeError(f"schedule must be a tf_lottery.RewindingSchedule, got "
                           f"{type(schedule).__name__}. {from_tfmot(schedule)}")


def from_tfmot(schedule) -> str:
    """How the terms of ``schedule`` (a TF-MOT ``PolynomialDecay`` or ``ConstantSparsity``)
    become ``RewindingSchedule(rounds, steps_per_round, prune_rate)``: IMP reaches a
    sparsity in rounds of whole trainings, not gradually inside one. Anything else gets the
    RewindingSchedule's terms.

    Example::

        from_tfmot(tfmot.sparsity.keras.PolynomialDecay(0.0, 0.9, 0, 1000))
        # "... tfl.RewindingSchedule(rounds=10, steps_per_round=1000, prune_rate=0.206) ..."
    """
    terms = ("Pass schedule=tfl.RewindingSchedule(rounds, steps_per_round, prune_rate): "
             "rounds + 1 trainings of steps_per_round steps each, every one but the last "
             "followed by pruning prune_rate of the surviving weights, so the final sparsity "
             "is 1 - (1 - prune_rate) ** rounds.")
    if not type(schedule).__module__.startswith("tensorflow_model_optimization"):
        return terms
    name, config = type(schedule).__name__, schedule.get_config().get("config", {})
    sparsity = config.get("final_sparsity", config.get("target_sparsity"))
    if not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        return terms
    rounds = max(1, round(math.log(1 - sparsity) / math.log(0.8)))  # near 20% per round
    rate = 1 - (1 - sparsity) ** (1 / rounds)
    end = config.get("end_step", -1)
    steps = end if isinstance(end, int) and end > 0 else "<the steps of one full training>"
    return (f"TF-MOT's {name} reaches sparsity {sparsity} inside one training; IMP reaches "
            f"it in rounds, each a whole training from the rewind point. {terms} "
            f"Sparsity {sparsity} in {rounds} rounds: tfl.RewindingSchedule(rounds={rounds}, "
            f"steps_per_round={steps}, prune_rate={rate:.3f}) (steps_per_round: the steps one "
            "training takes, TF-MOT's end_step; begin_step and frequency have no counterpart).")
