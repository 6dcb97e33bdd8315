"""Controls: the trainings that tell a winning ticket from any sparse network of its size.

Each round after the first, a search trains every control beside the ticket. A control is
one class in :data:`CONTROLS`: how its masks come from the ticket's masks, and which
weights it starts from. A new control is one class added to the table.

Example::

    CONTROLS["random_pruning"].masks(ticket_masks, seed=7)   # random masks, same sparsity
    list(CONTROLS)                                            # ['random_reinit', 'random_pruning']
"""

from __future__ import annotations

import numpy as np

from tf_lottery.core.masks import Masks, random_pruning


class Control:
    """One control: ``masks(ticket_masks, seed)`` and ``start(trial, seed)``.

    ``trial`` offers ``rewind_point()`` (where the ticket's rounds start: θ0, or the
    weights of iteration k under late rewinding) and ``fresh_draw(seed)`` (every
    initializer drawn again). A control trains the same optimizer steps as the ticket.
    """

    name = ""
    label = ""  # how plots and tables name it

    def masks(self, ticket_masks: Masks, seed: int) -> Masks:
        raise NotImplementedError

    def start(self, trial, seed: int):
        raise NotImplementedError


class RandomReinit(Control):
    """The ticket's masks, a fresh random initialisation (Frankle & Carbin, section 2)."""

    name, label = "random_reinit", "random reinit"

    def masks(self, ticket_masks, seed):
        return ticket_masks

    def start(self, trial, seed):
        return trial.fresh_draw(seed)


class RandomPruning(Control):
    """Random masks of the ticket's per-layer sparsity, rewound where the ticket is (θ0, or
    iteration k under late rewinding, as open_lth's random pruning)."""

    name, label = "random_pruning", "random pruning"

    def masks(self, ticket_masks, seed):
        full = Masks({key: np.ones_like(mask) for key, mask in ticket_masks.items()})
        return random_pruning(full, ticket_masks.sparsity(), seed=seed)

    def start(self, trial, seed):
        return trial.rewind_point()


CONTROLS = {control.name: control for control in (RandomReinit(), RandomPruning())}
