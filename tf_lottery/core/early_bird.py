"""Early-bird tickets (You et al. 2020, "Drawing Early-Bird Tickets"): the masks a round's
training would end with stop changing long before it ends.

At every evaluation of a ticket's training the masks of the next round are drawn from the
weights as they are (by magnitude, at the next round's sparsity); once the normalized
Hamming distance between successive draws (the fraction of mask entries that differ) has
stayed below ``epsilon`` for ``window`` evaluations in a row, the draw is taken and the
training ends there, saving the rest of the round.

Example::

    bird = EarlyBird(epsilon=0.1, window=5, sparsity={"dense/kernel": 0.36})
    draw = bird.draw(weights, masks)           # the masks the weights would give now
    mask_distance(previous_draw, draw)         # 0.03: 3% of the entries differ
    settled([0.3, 0.05, 0.04], epsilon=0.1, window=2)   # True
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tf_lottery.core.masks import Masks, next_masks


@dataclasses.dataclass(frozen=True)
class EarlyBird:
    """When one ticket training may stop: ``epsilon`` and ``window`` (the search's
    ``early_bird`` setting), and how its draws are made (the next round's ``sparsity`` per
    weight path, and the search's structure: ``keep_highest``'s ``scope``, ``block_size``
    and ``channels``, with ``refill``)."""

    epsilon: float
    window: int
    sparsity: dict
    structure: dict = dataclasses.field(default_factory=dict)
    refill: bool = False

    def draw(self, weights: dict, masks: Masks) -> Masks:
        """The next round's masks by the magnitude of ``weights`` (the survivors of
        ``masks``)."""
        return next_masks(weights, masks, self.sparsity, criterion="magnitude",
                          refill=self.refill, **self.structure)


def mask_distance(a: Masks, b: Masks) -> float:
    """The normalized Hamming distance of two masks of the same weights: the fraction of
    all their entries that differ."""
    differing = sum(int(np.count_nonzero(a[path] != b[path])) for path in a)
    total = sum(a[path].size for path in a)
    return differing / total if total else 0.0


def settled(distances: list, epsilon: float, window: int) -> bool:
    """Whether the last ``window`` distances are all below ``epsilon``."""
    return len(distances) >= window and all(d < epsilon for d in distances[-window:])
