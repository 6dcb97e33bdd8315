"""Masks and the criteria that choose them: small pure functions over NumPy arrays.

A mask set maps a prunable weight's path (``"dense/kernel"``) to a boolean array of the
weight's shape: True keeps the weight, False prunes it. Every round only ever removes
weights: it chooses the survivors of the next round among the survivors of this one, so
masks are nested from round to round.

A *criterion* is one registered function that scores the weights of one tensor, given its
trained values, its values at the rewind point and a random generator; the highest scores
survive. Selection (per layer or one threshold over all) and structure (blocks of ``block_size``
weights, or whole channels: a :class:`~tf_lottery.core.channels.ChannelPlan`) apply to any
criterion. A new criterion is one function::

    @criterion("magnitude_increase")
    def magnitude_increase(trained, initial, rng):
        return np.abs(trained) - np.abs(initial)     # Zhou et al. 2019

Example::

    from tf_lottery.core import masks
    current = masks.Masks.full({"dense/kernel": (784, 300)})
    nxt = masks.magnitude({"dense/kernel": w}, current, {"dense/kernel": 0.2})
    nxt.fraction_kept()          # 0.8
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Optional

import numpy as np

from tf_lottery.core.channels import ChannelPlan
from tf_lottery.foundations.atomic import replacing
from tf_lottery.foundations.checks import one_of, whole_number
from tf_lottery.foundations.errors import SettingError

SCOPES = ("layer", "global")
CRITERIA: dict[str, Callable] = {}


def criterion(name: str):
    """Register ``score(trained, initial, rng) -> scores`` as the criterion ``name``.

    ``trained`` and ``initial`` are float64 arrays of one weight tensor (``initial``: its
    values at the rewind point), ``rng`` a ``numpy.random.Generator`` seeded per round.
    The returned array has the weight's shape; higher scores survive.
    """
    def register(score: Callable) -> Callable:
        CRITERIA[name] = score
        return score
    return register


@criterion("magnitude")
def magnitude_scores(trained, initial, rng):
    """Frankle & Carbin 2019: keep the largest trained weights."""
    return np.abs(trained)


@criterion("magnitude_increase")
def magnitude_increase_scores(trained, initial, rng):
    """Zhou et al. 2019: keep the weights whose magnitude grew most in training."""
    return np.abs(trained) - np.abs(initial)


@criterion("random")
def random_scores(trained, initial, rng):
    """Random survivors at the same sparsity: the random-pruning control."""
    return rng.random(np.shape(trained))


class Masks(Mapping):
    """An immutable mapping from weight path to boolean keep-mask, with a sparsity report."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self._arrays = {key: np.array(value, dtype=bool) for key, value in arrays.items()}
        for array in self._arrays.values():
            array.setflags(write=False)

    @classmethod
    def full(cls, shapes: Mapping[str, tuple]) -> Masks:
        """All-True masks: every weight kept."""
        return cls({key: np.ones(shape, dtype=bool) for key, shape in shapes.items()})

    def __getitem__(self, key):
        return self._arrays[key]

    def __iter__(self):
        return iter(self._arrays)

    def __len__(self):
        return len(self._arrays)

    def __repr__(self):
        return f"Masks({self.fraction_kept():.2%} kept over {len(self)} weight tensors)"

    def kept(self) -> dict[str, int]:
        return {key: int(mask.sum()) for key, mask in self._arrays.items()}

    def sparsity(self) -> dict[str, float]:
        """Per weight path, the fraction of weights pruned."""
        return {key: 1.0 - int(mask.sum()) / mask.size for key, mask in self._arrays.items()}

    def fraction_kept(self) -> float:
        """The fraction of all masked weights that are kept."""
        total = sum(mask.size for mask in self._arrays.values())
        return sum(self.kept().values()) / total if total else 1.0

    def is_nested_in(self, other: Masks) -> bool:
        """True if every weight kept here is kept in ``other`` too."""
        return set(self) == set(other) and all(
            not np.any(self[key] & ~other[key]) for key in self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the masks as a compressed .npz, atomically (a crash leaves the old file)."""
        with replacing(path) as staged, open(staged, "wb") as handle:
            np.savez_compressed(handle, **self._arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Masks:
        with np.load(Path(path)) as data:
            return cls({key: data[key] for key in data.files})


def masked(value: np.ndarray, mask) -> np.ndarray:
    """``value`` with the entries ``mask`` prunes set to exactly +0 (no mask: unchanged)."""
    if mask is None:
        return value
    return np.where(mask, value, np.zeros((), dtype=value.dtype))


def kept_count(size: int, kept_fraction: float) -> int:
    """How many of ``size`` weights (or blocks) survive at ``kept_fraction``; at least one."""
    return max(1, min(size, math.floor(size * kept_fraction + 0.5)))


def _keep_top(scores: np.ndarray, alive: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the ``count`` highest scores among ``alive`` entries (ties: lower index)."""
    flat = np.where(alive.ravel(), scores.ravel(), -np.inf)
    order = np.argsort(-flat, kind="stable")
    keep = np.zeros(flat.size, dtype=bool)
    keep[order[:min(count, int(alive.sum()))]] = True
    return keep.reshape(scores.shape)


def _select(scores: Mapping[str, np.ndarray], alive: Mapping[str, np.ndarray],
            kept_fractions: Mapping[str, float], scope: str) -> dict[str, np.ndarray]:
    """Keep the highest-scoring alive entries: per key, or with one threshold over all keys."""
    if scope == "layer":
        return {key: _keep_top(scores[key], alive[key],
                               kept_count(scores[key].size, kept_fractions[key]))
                for key in scores}
    keys = list(scores)
    total = sum(kept_count(scores[key].size, kept_fractions[key]) for key in keys)
    joint = _keep_top(np.concatenate([scores[k].ravel() for k in keys]),
                      np.concatenate([alive[k].ravel() for k in keys]), total)
    bounds = np.cumsum([0] + [scores[k].size for k in keys])
    return {key: joint[bounds[i]:bounds[i + 1]].reshape(scores[key].shape)
            for i, key in enumerate(keys)}


def _kept_fractions(masks: Mapping[str, np.ndarray], sparsity: Mapping[str, float]):
    missing = set(masks) - set(sparsity)
    if missing:
        raise KeyError(f"no target sparsity for {sorted(missing)}")
    return {key: 1.0 - sparsity[key] for key in masks}


def _blocks(array: np.ndarray, block_size: int) -> np.ndarray:
    """View ``array`` as (..., n_blocks, block_size, out) along axis -2, zero-padded."""
    if array.ndim < 2:
        raise ValueError(
            f"block pruning needs weights of rank >= 2 (a kernel), got shape {array.shape}")
    pad = -array.shape[-2] % block_size
    widths = [(0, 0)] * array.ndim
    widths[-2] = (0, pad)
    padded = np.pad(array, widths)
    shape = padded.shape[:-2] + (padded.shape[-2] // block_size, block_size, padded.shape[-1])
    return padded.reshape(shape)


def _unblock(block_mask: np.ndarray, block_size: int, shape: tuple) -> np.ndarray:
    expanded = np.repeat(block_mask, block_size, axis=-2)
    return expanded[..., :shape[-2], :]


def next_masks(weights, masks, sparsity, *, criterion: str = "magnitude", scope: str = "layer",
               block_size: int = 1, seed: int = 0, initial=None,
               channels: Optional[ChannelPlan] = None, refill: bool = False) -> Masks:
    """The masks of the next round: the survivors of ``masks`` that ``criterion`` scores
    highest, down to the target ``sparsity`` per path.

    ``weights`` are the trained values and ``initial`` the rewind point's (path -> array;
    needed by criteria that compare the two). Selection (``scope``, ``block_size``,
    ``channels``) as in :func:`keep_highest`. ``refill`` (with ``channels``; Chen et al.
    2022, "Coarsening the Granularity"): prune single weights first, then keep whole the
    channels with the most surviving weights, as many channels as the round keeps weights.
    """
    score = CRITERIA[one_of(criterion, "criterion", CRITERIA)]
    rng = np.random.default_rng(seed)
    scores = {}
    for key in masks:
        trained = np.asarray(weights[key], dtype=np.float64)
        start = None if initial is None else np.asarray(initial[key], dtype=np.float64)
        scores[key] = score(trained, start, rng)
    if refill:
        if channels is None:
            raise SettingError("refill chooses whole channels: it needs granularity=\"channel\"")
        scores = refill_scores(scores, keep_highest(scores, masks, sparsity, scope=scope))
    return keep_highest(scores, masks, sparsity, scope=scope, block_size=block_size,
                        channels=channels)


def refill_scores(scores: Mapping[str, np.ndarray], survivors: Masks) -> dict:
    """Scores under which a channel's total is the count of its ``survivors`` (the weights
    unstructured pruning keeps), ties broken by the channel's ``scores``: each weight
    scores 1 if it survives, plus its |score| scaled so that a whole tensor adds less
    than 1."""
    refilled = {}
    for key, survived in survivors.items():
        magnitude = np.abs(np.asarray(scores[key], dtype=np.float64))
        refilled[key] = survived + magnitude / (magnitude.sum() + 1.0)
    return refilled


def keep_highest(scores, masks, sparsity, *, scope: str = "layer", block_size: int = 1,
                 channels: Optional[ChannelPlan] = None) -> Masks:
    """The survivors of ``masks`` with the highest ``scores`` (path -> array of the
    weight's shape), down to the target ``sparsity`` per path.

    ``scope="layer"`` meets each path's target on its own; ``scope="global"`` keeps the
    highest scores over all paths, as many weights in total as the per-path targets add up
    to. ``block_size > 1`` prunes whole blocks of ``block_size`` weights along a kernel's
    input axis (axis -2: the rows of a Dense kernel, the input channels of a convolution)
    for one output unit, the layout TFLite's sparse kernels accelerate (1x4 float, 1x16
    int8); a block scores the sum of its surviving weights' scores and targets are met in
    blocks. ``channels`` prunes whole channels instead (:func:`keep_channels`).

    Example::

        keep_highest({"k": np.array([[3.0, -1.0], [0.5, 2.0]])},
                     Masks.full({"k": (2, 2)}), {"k": 0.5})["k"]   # [[True, False], [False, True]]
    """
    one_of(scope, "scope", SCOPES)
    block_size = whole_number(block_size, "block_size")
    fractions = _kept_fractions(masks, sparsity)
    if channels is not None:
        if block_size > 1:
            raise SettingError("block_size and granularity=\"channel\" are two structures; "
                               "choose one (whole channels leave no blocks to prune)")
        return keep_channels(scores, masks, fractions, channels, scope)
    chosen_scores, alive = {}, {}
    for key in masks:
        chosen_scores[key] = np.asarray(scores[key], dtype=np.float64)
        alive[key] = np.asarray(masks[key])
        if block_size > 1:
            chosen_scores[key] = _blocks(chosen_scores[key] * alive[key],
                                         block_size).sum(axis=-2)
            alive[key] = _blocks(alive[key], block_size).any(axis=-2)
    chosen = _select(chosen_scores, alive, fractions, scope)
    if block_size > 1:
        chosen = {key: _unblock(chosen[key], block_size, masks[key].shape) & masks[key]
                  for key in masks}
    return Masks(chosen)


def keep_channels(scores, masks, kept_fractions, channels: ChannelPlan,
                  scope: str = "layer") -> Masks:
    """The survivors of ``masks`` in whole channels: each group of ``channels`` keeps its
    channels with the highest total score of their surviving entries in the group's scored
    kernels (magnitude: the L1 norm of the trained filter), as many as the kept fraction of
    its first scored kernel; ``scope="global"`` compares channels of every group by their
    mean score per entry, keeping as many in total. Every member weight of a pruned channel
    is pruned (a Conv kernel's filter, its bias, the BatchNormalization gamma and beta
    after it), so the channel outputs exact zeros. Paths in no group keep their masks.

    Example::

        group = ChannelGroup(2, ("conv/kernel",), (("conv/kernel", -1), ("conv/bias", -1)))
        keep_channels({"conv/kernel": k, "conv/bias": b}, masks, {"conv/kernel": 0.5, ...},
                      ChannelPlan((group,)))      # the filter of larger L1 norm survives
    """
    one_of(scope, "scope", SCOPES)
    totals, alive, fractions = {}, {}, {}
    for index, group in enumerate(channels.groups):
        total = np.zeros(group.size)
        alive[index] = np.zeros(group.size, dtype=bool)
        entries = 0
        for path in group.scored:
            kept = np.asarray(masks[path], dtype=bool)
            total += _per_channel(np.asarray(scores[path], dtype=np.float64) * kept)
            alive[index] |= _per_channel(kept) > 0
            entries += kept.size // group.size
        totals[index] = total / entries if scope == "global" else total
        fractions[index] = kept_fractions[group.scored[0]]
    chosen = _select(totals, alive, fractions, scope)
    result = {key: np.asarray(mask, dtype=bool) for key, mask in masks.items()}
    for index, group in enumerate(channels.groups):
        for path, axis in group.members:
            result[path] = result[path] & _along(chosen[index], axis, result[path].shape)
    return Masks(result)


def _per_channel(array: np.ndarray) -> np.ndarray:
    """The sum over every axis but the last (a kernel's output channels)."""
    return array.reshape(-1, array.shape[-1]).sum(axis=0)


def _along(keep: np.ndarray, axis: int, shape: tuple) -> np.ndarray:
    """``keep`` (one entry per channel) broadcast over ``shape``, channels on ``axis``."""
    view = [1] * len(shape)
    view[axis] = keep.size
    return np.broadcast_to(keep.reshape(view), shape)


def magnitude(weights, masks, sparsity, scope: str = "layer") -> Masks:
    """Keep the largest-magnitude surviving weights, down to the target ``sparsity`` per path."""
    return next_masks(weights, masks, sparsity, criterion="magnitude", scope=scope)


def random_pruning(masks, sparsity, seed: int, scope: str = "layer",
                   channels: Optional[ChannelPlan] = None) -> Masks:
    """Random survivors at the target ``sparsity`` (the random-pruning control); random
    whole channels under ``channels``."""
    shapes = {key: np.zeros(np.shape(mask)) for key, mask in masks.items()}
    return next_masks(shapes, masks, sparsity, criterion="random", scope=scope, seed=seed,
                      channels=channels)


def block_magnitude(weights, masks, sparsity, block_size: int, scope: str = "layer") -> Masks:
    """Magnitude pruning of whole blocks of ``block_size`` weights along the input dimension."""
    return next_masks(weights, masks, sparsity, criterion="magnitude", scope=scope,
                      block_size=block_size)
