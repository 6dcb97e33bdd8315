"""ImpSettings: how each round end chooses masks and where the next round starts.

Declared once: ``prune_with_rewinding(model, schedule, **settings)``,
``LotteryTicketSearch(build, schedule, run_dir, **options)`` and the YAML config's keys of
the same names all build an ``ImpSettings`` (:mod:`tf_lottery.foundations.declared`), and
every value is checked here.

Example::

    settings = ImpSettings(rewind_to="lr", scope="global", criterion="magnitude_increase")
    settings.policy                 # LearningRateRewind('lr')
    ImpSettings(**settings.to_config()) == settings   # True
"""

from __future__ import annotations

import dataclasses
from typing import Union

from tf_lottery.core.masks import CRITERIA, SCOPES
from tf_lottery.core.rewind_policy import RewindPolicy, policy_for
from tf_lottery.foundations.checks import names, one_of, whole_number


@dataclasses.dataclass(frozen=True)
class ImpSettings:
    """The choices of an IMP run besides its schedule.

    Args:
      rewind_to: 0 or "init" (θ0), an iteration k (late rewinding), "lr" (learning-rate
        rewinding) or None (fine-tuning): see :mod:`tf_lottery.core.rewind_policy`.
      scope: "layer" (each layer meets its own rate) or "global" (one threshold).
      criterion: a registered criterion (:data:`tf_lottery.core.masks.CRITERIA`): "magnitude",
        "magnitude_increase", or "random" (random pruning, a control).
      block_size: prune blocks of this many weights along a kernel's input dimension
        (4 for float TFLite, 16 for int8) instead of single weights.
      exclude: names of layers to leave dense (their weights are still rewound).
      prunable: weight paths (``fnmatch`` patterns such as ``"block/*"``) to prune besides
        the default kernels; Keras 3 models only.
      seed: seeds the random criterion.
    """

    rewind_to: Union[int, str, None] = 0
    scope: str = "layer"
    criterion: str = "magnitude"
    block_size: int = 1
    exclude: tuple = ()
    prunable: tuple = ()
    seed: int = 0

    def __post_init__(self):
        policy = policy_for(self.rewind_to)
        object.__setattr__(self, "rewind_to", policy.value)
        one_of(self.scope, "scope", SCOPES)
        one_of(self.criterion, "criterion", CRITERIA)
        object.__setattr__(self, "block_size", whole_number(self.block_size, "block_size"))
        object.__setattr__(self, "exclude", names(self.exclude, "exclude"))
        object.__setattr__(self, "prunable", names(self.prunable, "prunable"))
        object.__setattr__(self, "seed", whole_number(self.seed, "seed", minimum=0))

    @property
    def policy(self) -> RewindPolicy:
        """The rewind policy ``rewind_to`` names."""
        return policy_for(self.rewind_to)

    def to_config(self) -> dict:
        return dataclasses.asdict(self) | {"exclude": list(self.exclude),
                                           "prunable": list(self.prunable)}
