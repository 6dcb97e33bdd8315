"""A round boundary of IMP as two steps, shared by LotteryModel.fit and LotteryTicketSearch.

``trained_masks`` chooses the next round's masks from the trained weights;
``start_round`` puts masks into the TF-MOT wrappers and sets the weights the round starts
from (a rewind point, or the trained weights themselves), pruned weights exactly 0.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

import numpy as np

from tf_lottery import _compat
from tf_lottery.masks import CRITERIA, SCOPES, Masks, next_masks
from tf_lottery.rewind import RewindPoint, masked

REWIND_MODES = ("init", "an iteration k >= 0", "lr", None)


@dataclasses.dataclass(frozen=True)
class ImpSettings:
    """How each round end chooses masks and what it rewinds to.

    ``rewind_to``: an iteration k (0 is the initialisation θ0; k > 0 is late rewinding, the
    weights after k steps of the first round), ``"lr"`` (learning-rate rewinding: keep the
    trained weights, restart the learning-rate schedule) or ``None`` (fine-tuning: keep the
    trained weights and the schedule's position).
    """

    rewind_to: Union[int, str, None] = 0
    scope: str = "layer"
    criterion: str = "magnitude"
    block_size: int = 1
    exclude: tuple = ()
    seed: int = 0

    def __post_init__(self):
        rewind_to = 0 if self.rewind_to == "init" else self.rewind_to
        if rewind_to == "none":
            rewind_to = None
        valid_int = isinstance(rewind_to, int) and not isinstance(rewind_to, bool) \
            and rewind_to >= 0
        if not (valid_int or rewind_to in ("lr", None)):
            raise ValueError(
                f"rewind_to must be one of {REWIND_MODES}, got {self.rewind_to!r}")
        object.__setattr__(self, "rewind_to", rewind_to)
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) \
                or self.block_size < 1:
            raise ValueError(f"block_size must be a whole number >= 1, got {self.block_size!r}")
        if self.block_size > 1 and self.criterion != "magnitude":
            raise ValueError("block_size > 1 needs criterion='magnitude'")
        if isinstance(self.exclude, str):
            raise TypeError(f"exclude must be a list of layer names, got the string "
                            f"{self.exclude!r}; write exclude=[{self.exclude!r}]")
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @property
    def rewinds_weights(self) -> bool:
        """Whether rounds start from a rewind point (else from the trained weights)."""
        return isinstance(self.rewind_to, int)

    @property
    def restarts_schedule(self) -> bool:
        """Whether the optimizer's step counter (the learning-rate schedule) restarts."""
        return self.rewind_to is not None

    def to_config(self) -> dict:
        return dataclasses.asdict(self) | {"exclude": list(self.exclude)}



def current_masks(model) -> Masks:
    """The masks the TF-MOT wrappers of ``model`` hold now, by weight path."""
    return Masks({path: pruned.mask.numpy() != 0
                  for path, pruned in _compat.pruned_weights(model).items()})


def trained_masks(model, schedule, settings: ImpSettings, next_round: int,
                  label: str = "") -> Masks:
    """The masks of ``next_round``, chosen among the survivors by the trained weights.

    Raises FloatingPointError, changing nothing, if a surviving weight is not finite.
    """
    pruned = _compat.pruned_weights(model)
    masks = current_masks(model)
    weights = {path: masked(p.weight.numpy(), masks[path]) for path, p in pruned.items()}
    broken = [path for path, value in weights.items() if not np.all(np.isfinite(value))]
    if broken:
        raise FloatingPointError(
            f"{label}round {next_round - 1} ended with non-finite weights in "
            f"{', '.join(broken)} (the loss diverged); the masks were left as they were. "
            "Lower the learning rate or clip gradients, then train again.")
    sparsity = {path: schedule.sparsity(p.layer_name, next_round) for path, p in pruned.items()}
    return next_masks(weights, masks, sparsity, criterion=settings.criterion,
                      scope=settings.scope, block_size=settings.block_size,
                      seed=settings.seed + next_round)


def start_round(model, masks: Masks, start_from: Optional[RewindPoint]) -> None:
    """Set the wrappers' masks, and the weights to ``start_from`` (None: the current ones)
    with every pruned weight exactly 0."""
    for path, p in _compat.pruned_weights(model).items():
        p.mask.assign(masks[path].astype(p.mask.dtype.as_numpy_dtype))
    if start_from is not None:
        start_from.restore(model, masks)
    else:
        for path, p in _compat.pruned_weights(model).items():
            p.weight.assign(masked(p.weight.numpy(), masks[path]))
