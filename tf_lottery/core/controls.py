"""Controls: the trainings that tell a winning ticket from any sparse network of its size.

Each round after the first, a search trains every control it is given beside the ticket. A
control is one class in :data:`CONTROLS`: how its masks come from the ticket's masks (and,
for pruning at initialization, from the trial's starting weights and gradients), and which
weights it starts from. A new control is one class added to the table; a search trains
:data:`DEFAULT_CONTROLS` (the paper's two) unless told otherwise.

Example::

    CONTROLS["random_pruning"].masks(ticket_masks, seed=7, trial=trial)  # random, same sparsity
    list(CONTROLS)   # ['random_reinit', 'random_pruning', 'snip', 'grasp', 'synflow',
                     #  'magnitude_init']
"""

from __future__ import annotations

import numpy as np

from tf_lottery.core import pai
from tf_lottery.core.masks import Masks, keep_highest, random_pruning


class Control:
    """One control: ``masks(ticket_masks, seed, trial)`` and ``start(trial, seed)``.

    ``trial`` offers ``rewind_point()`` (where the ticket's rounds start: θ0, or the
    weights of iteration k under late rewinding), ``fresh_draw(seed)`` (every initializer
    drawn again), ``settings`` (the ImpSettings: ``scope``, ``block_size``,
    ``granularity``), ``channels`` (the model's ChannelPlan, or None) and, for the
    controls that need gradients (``needs_gradients``), the scorer methods of
    :mod:`tf_lottery.core.pai`. A control trains the same optimizer steps as the ticket.
    """

    name = ""
    label = ""  # how plots and tables name it
    needs_gradients = False  # whether its masks take gradients of the model

    def masks(self, ticket_masks: Masks, seed: int, trial) -> Masks:
        raise NotImplementedError

    def start(self, trial, seed: int):
        raise NotImplementedError


class RandomReinit(Control):
    """The ticket's masks, a fresh random initialisation (Frankle & Carbin, section 2)."""

    name, label = "random_reinit", "random reinit"

    def masks(self, ticket_masks, seed, trial):
        return ticket_masks

    def start(self, trial, seed):
        return trial.fresh_draw(seed)


class RandomPruning(Control):
    """Random masks of the ticket's per-layer sparsity, rewound where the ticket is (θ0, or
    iteration k under late rewinding, as open_lth's random pruning)."""

    name, label = "random_pruning", "random pruning"

    def masks(self, ticket_masks, seed, trial):
        structure = trial.settings.structure(trial.channels)
        return random_pruning(_full(ticket_masks), ticket_masks.sparsity(), seed=seed,
                              scope="layer", channels=structure["channels"])

    def start(self, trial, seed):
        return trial.rewind_point()


class PruningAtInit(Control):
    """θ0 pruned in one shot by a score (:mod:`tf_lottery.core.pai`) to the ticket's
    sparsity: per layer as the ticket's masks (``scope="layer"``), or as many weights in all
    chosen over every layer (``scope="global"``); in blocks under ``block_size``, whole
    channels under ``granularity="channel"``. It trains
    from where the ticket does (θ0, or the rewind point, scored there: Frankle et al. 2021
    prune "early in training" so too)."""

    def masks(self, ticket_masks, seed, trial):
        theta0 = trial.rewind_point().values
        return keep_highest(self.scores(trial, theta0, list(ticket_masks)), _full(ticket_masks),
                            ticket_masks.sparsity(), **trial.settings.structure(trial.channels))

    def scores(self, trial, theta0: dict, paths: list) -> dict:
        raise NotImplementedError

    def start(self, trial, seed):
        return trial.rewind_point()


class Snip(PruningAtInit):
    """SNIP (Lee et al. 2019): keep the highest |g ⊙ θ0| on a few training batches."""

    name, label, needs_gradients = "snip", "SNIP", True

    def scores(self, trial, theta0, paths):
        return pai.snip_scores(trial, theta0, paths)


class Grasp(PruningAtInit):
    """GraSP (Wang et al. 2020): prune the highest −θ0 ⊙ Hg on a few training batches."""

    name, label, needs_gradients = "grasp", "GraSP", True

    def scores(self, trial, theta0, paths):
        return pai.grasp_scores(trial, theta0, paths)


class SynFlow(PruningAtInit):
    """SynFlow (Tanaka et al. 2020): data-free, iterative pruning by synaptic flow."""

    name, label, needs_gradients = "synflow", "SynFlow", True

    def masks(self, ticket_masks, seed, trial):
        return pai.synflow_masks(trial, trial.rewind_point().values, _full(ticket_masks),
                                 ticket_masks.sparsity(),
                                 **trial.settings.structure(trial.channels))


class MagnitudeInit(PruningAtInit):
    """Magnitude at initialization: keep the largest |θ0|."""

    name, label = "magnitude_init", "magnitude at init"

    def scores(self, trial, theta0, paths):
        return pai.magnitude_scores(theta0, paths)


def _full(masks: Masks) -> Masks:
    """Every weight of ``masks``' tensors kept."""
    return Masks({key: np.ones_like(mask) for key, mask in masks.items()})


CONTROLS = {control.name: control for control in (
    RandomReinit(), RandomPruning(), Snip(), Grasp(), SynFlow(), MagnitudeInit())}
DEFAULT_CONTROLS = ("random_reinit", "random_pruning")  # the paper's; config.json records them
