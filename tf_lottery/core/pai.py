"""Pruning at initialization: SNIP, GraSP, SynFlow and magnitude scores of θ0, and their masks.

Each score rates every prunable weight of the starting weights θ0 (or the rewind point under
late rewinding) without training; the weights scoring highest survive, chosen by
:func:`tf_lottery.core.masks.keep_highest` (per layer or globally, in blocks). Gradients come
from a *scorer*, which the search gives (its model's engine, a few training batches, its
loss): the functions here only combine NumPy arrays.

A scorer offers:

- ``loss_gradients(values, paths, temperature=1.0, vector=None)``: path -> ∂L/∂w for the
  weights at ``paths``, the model's weights set to ``values`` (path -> array, every weight),
  L the loss of the outputs divided by ``temperature`` on the scoring batches; with
  ``vector`` (path -> array), the Hessian-vector product H·vector instead;
- ``flow_gradients(values, paths)``: path -> ∂R/∂w, R the sum of the model's outputs on one
  all-ones input, in inference mode.

Example::

    scores = snip_scores(scorer, theta0, ["hidden/kernel", "output/kernel"])
    masks = keep_highest(scores, Masks.full(shapes), {"hidden/kernel": 0.8, ...})
"""

from __future__ import annotations

import numpy as np

from tf_lottery.core.masks import Masks, keep_highest, masked

GRASP_TEMPERATURE = 200.0  # GraSP divides the logits by T (alecwangcq/GraSP, T=200)
SYNFLOW_ITERATIONS = 20   # SynFlow's paper prunes in 100; 20 keeps a control cheap


def magnitude_scores(theta0: dict, paths) -> dict:
    """|θ0|: the largest starting weights survive."""
    return {path: np.abs(np.asarray(theta0[path], dtype=np.float64)) for path in paths}


def snip_scores(scorer, theta0: dict, paths) -> dict:
    """SNIP (Lee et al. 2019): |g ⊙ θ0|, g = ∂L/∂w at θ0 on the scoring batches."""
    gradients = scorer.loss_gradients(theta0, list(paths))
    return {path: np.abs(_f64(gradients[path]) * _f64(theta0[path])) for path in paths}


def grasp_scores(scorer, theta0: dict, paths,
                 temperature: float = GRASP_TEMPERATURE) -> dict:
    """GraSP (Wang et al. 2020) negated: θ0 ⊙ (H g), g and H the gradient and Hessian of the
    loss of the logits / ``temperature``. GraSP prunes the highest −θ0 ⊙ (H g), i.e. keeps
    the highest of these scores (the weights whose removal reduces the gradient flow least).
    """
    paths = list(paths)
    gradients = scorer.loss_gradients(theta0, paths, temperature=temperature)
    product = scorer.loss_gradients(theta0, paths, temperature=temperature,
                                    vector=gradients)
    return {path: _f64(theta0[path]) * _f64(product[path]) for path in paths}


def synflow_scores(scorer, theta0: dict, masks) -> dict:
    """SynFlow (Tanaka et al. 2020): |θ ⊙ ∂R/∂θ|, R = 1ᵀ(∏|W|)1: the network with every
    weight (biases and normalization statistics too) replaced by its magnitude, pruned
    weights 0, on an all-ones input. Pruned weights score 0."""
    values = {path: masked(np.abs(np.asarray(value)), masks.get(path))
              for path, value in theta0.items()}
    gradients = scorer.flow_gradients(values, list(masks))
    return {path: np.abs(_f64(gradients[path]) * _f64(values[path])) for path in masks}


def synflow_masks(scorer, theta0: dict, full: Masks, sparsity: dict, *,
                  iterations: int = SYNFLOW_ITERATIONS, **structure) -> Masks:
    """SynFlow's iterative pruning: ``iterations`` rounds of scoring with the masks so far
    applied, the kept fraction falling exponentially to ``1 - sparsity`` (the paper's
    schedule, ganguli-lab/Synaptic-Flow ``prune_loop``); ``structure``: keep_highest's
    ``scope``, ``block_size``, ``channels``."""
    masks = full
    for step in range(1, iterations + 1):
        scores = synflow_scores(scorer, theta0, masks)
        partial = {path: 1.0 - (1.0 - sparsity[path]) ** (step / iterations)
                   for path in masks}
        masks = keep_highest(scores, masks, partial, **structure)
    return masks


def _f64(array) -> np.ndarray:
    return np.asarray(array, dtype=np.float64)
