"""The controls' masks, and the pruning-at-initialization scores against NumPy references on a
2-layer MLP, through either engine's gradients."""

import numpy as np
import pytest

import tf_lottery as tfl
from tf_lottery.core import pai
from tf_lottery.core.controls import CONTROLS, DEFAULT_CONTROLS
from tf_lottery.core.masks import keep_highest, random_pruning
from tf_lottery.imp.rewind import RewindPoint
from tf_lottery.search.inputs import TrainingInput
from tf_lottery.search.scoring import Scoring
from tf_lottery.search.settings import SearchSettings

from helpers import KERASES

PATHS = ["hidden/kernel", "output/kernel"]
SPARSITY = {"hidden/kernel": 0.5, "output/kernel": 0.2}


def _mlp(keras, seed=0):
    """Dense(5, relu) -> Dense(3) on 6 features, every weight (biases too) drawn non-zero."""
    model = keras.Sequential([keras.Input((6,)),
                              keras.layers.Dense(5, activation="relu", name="hidden"),
                              keras.layers.Dense(3, name="output")])
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([rng.normal(0, 0.7, w.shape).astype("float32")
                           for w in layer.get_weights()])
    return model


class _Trial:
    """A trial as the controls see it: θ0 of a plain model, its engine's gradients on the
    first batches of the data (the search's Scoring), the ImpSettings (weight tickets: no
    channel groups)."""

    channels = None

    def __init__(self, model, scope="layer", block_size=1):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(40, 6)).astype("float32")
        y = rng.integers(0, 3, 40)
        self.model = model
        self.settings = tfl.ImpSettings(scope=scope, block_size=block_size)
        self.scoring = Scoring(TrainingInput((x, y), batch_size=20),
                               {"class_name": "SparseCategoricalCrossentropy",
                                "config": {"from_logits": True}}, seed=0, batches=3)

    def rewind_point(self):
        return RewindPoint.capture(self.model, step=0)

    def loss_gradients(self, values, paths, temperature=1.0, vector=None):
        return self.scoring.loss_gradients(self.model, values, paths, temperature, vector)

    def flow_gradients(self, values, paths):
        return self.scoring.flow_gradients(self.model, values, paths)


# --- NumPy references ---------------------------------------------------------------------

def _kernels_gradient(theta, kernels, batches, temperature=1.0):
    """∂L/∂(W1, W2) of the relu MLP, L = Σ_batches mean cross-entropy(logits / T), float64."""
    w1, w2 = kernels
    b1, b2 = (np.float64(theta[p]) for p in ("hidden/bias", "output/bias"))
    g1, g2 = np.zeros_like(w1), np.zeros_like(w2)
    for x, y in batches:
        x = np.float64(x)
        z = x @ w1 + b1
        h = np.maximum(z, 0)
        logits = (h @ w2 + b2) / temperature
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        d_logits = p / len(y) / temperature
        g2 += h.T @ d_logits
        g1 += x.T @ ((d_logits @ w2.T) * (z > 0))
    return g1, g2


def _reference(theta, batches, temperature=1.0):
    kernels = [np.float64(theta[p]) for p in PATHS]
    return kernels, _kernels_gradient(theta, kernels, batches, temperature)


def _hessian_vector(theta, batches, vector, temperature, eps=1e-5):
    """H·vector by central differences of the float64 gradient."""
    kernels = [np.float64(theta[p]) for p in PATHS]
    plus = _kernels_gradient(theta, [k + eps * v for k, v in zip(kernels, vector)], batches,
                             temperature)
    minus = _kernels_gradient(theta, [k - eps * v for k, v in zip(kernels, vector)], batches,
                              temperature)
    return [(a - b) / (2 * eps) for a, b in zip(plus, minus)]


# --- scores -----------------------------------------------------------------------------

@pytest.mark.parametrize("engine", list(KERASES))
def test_snip_is_the_magnitude_of_gradient_times_weight(engine):
    trial = _Trial(_mlp(KERASES[engine]))
    theta = trial.rewind_point().values
    (w1, w2), (g1, g2) = _reference(theta, trial.scoring.batches())
    scores = pai.snip_scores(trial, theta, PATHS)
    np.testing.assert_allclose(scores["hidden/kernel"], np.abs(g1 * w1), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(scores["output/kernel"], np.abs(g2 * w2), rtol=1e-4, atol=1e-7)
    # the model's weights are put back after scoring
    assert all(np.array_equal(v, theta[k]) for k, v in trial.rewind_point().values.items())


@pytest.mark.parametrize("engine", list(KERASES))
def test_grasp_is_weight_times_hessian_gradient_product(engine):
    trial = _Trial(_mlp(KERASES[engine]))
    theta, batches, temperature = trial.rewind_point().values, trial.scoring.batches(), 200.0
    (w1, w2), gradient = _reference(theta, batches, temperature)
    hg = _hessian_vector(theta, batches, gradient, temperature)
    scores = pai.grasp_scores(trial, theta, PATHS)
    for path, w, product in zip(PATHS, (w1, w2), hg):
        expected = w * product  # GraSP's score is its negation: the highest are pruned
        np.testing.assert_allclose(scores[path], expected, rtol=2e-3,
                                   atol=2e-3 * np.abs(expected).max())
    assert np.abs(scores["hidden/kernel"]).max() > 0


@pytest.mark.parametrize("engine", list(KERASES))
def test_synflow_is_the_flow_of_the_absolute_network_on_ones(engine):
    trial = _Trial(_mlp(KERASES[engine]))
    theta = trial.rewind_point().values
    a1, a2 = np.abs(np.float64(theta["hidden/kernel"])), np.abs(np.float64(theta["output/kernel"]))
    b1 = np.abs(np.float64(theta["hidden/bias"]))
    # R = 1ᵀ(|W2|ᵀ(|W1|ᵀ1 + |b1|) + |b2|): every term positive, so the relu is the identity
    full = tfl.Masks.full({p: theta[p].shape for p in PATHS})
    scores = pai.synflow_scores(trial, theta, full)
    np.testing.assert_allclose(scores["hidden/kernel"], a1 * a2.sum(axis=1)[None, :], rtol=1e-5)
    np.testing.assert_allclose(scores["output/kernel"], a2 * (a1.sum(axis=0) + b1)[:, None],
                               rtol=1e-5)
    # with masks applied, pruned weights carry no flow and score 0
    masks = random_pruning(full, SPARSITY, seed=3)
    m1, m2 = a1 * masks["hidden/kernel"], a2 * masks["output/kernel"]
    scores = pai.synflow_scores(trial, theta, masks)
    np.testing.assert_allclose(scores["hidden/kernel"], m1 * m2.sum(axis=1)[None, :], rtol=1e-5)
    np.testing.assert_allclose(scores["output/kernel"], m2 * (m1.sum(axis=0) + b1)[:, None],
                               rtol=1e-5)


def test_magnitude_init_is_the_magnitude_of_theta0():
    theta = {"k": np.array([[0.5, -2.0], [1.0, -0.25]], dtype=np.float32)}
    assert pai.magnitude_scores(theta, ["k"])["k"].tolist() == [[0.5, 2.0], [1.0, 0.25]]
    masks = keep_highest(pai.magnitude_scores(theta, ["k"]), tfl.Masks.full({"k": (2, 2)}),
                         {"k": 0.5})
    assert masks["k"].tolist() == [[False, True], [True, False]]


# --- masks ------------------------------------------------------------------------------

def _ticket(theta):
    return random_pruning(tfl.Masks.full({p: theta[p].shape for p in PATHS}), SPARSITY, seed=9)


@pytest.mark.parametrize("engine", list(KERASES))
def test_controls_prune_theta0_to_the_tickets_per_layer_sparsity(engine):
    trial = _Trial(_mlp(KERASES[engine]))
    theta = trial.rewind_point().values
    ticket = _ticket(theta)
    (w1, w2), (g1, g2) = _reference(theta, trial.scoring.batches())
    made = {name: CONTROLS[name].masks(ticket, 7, trial) for name in CONTROLS
            if name != "random_reinit"}  # its masks are the ticket's
    for name, masks in made.items():
        assert masks.kept() == ticket.kept(), name
    # SNIP keeps each layer's highest |g ⊙ w|; magnitude the largest |θ0|
    for masks, scores in ((made["snip"], {"hidden/kernel": np.abs(g1 * w1),
                                          "output/kernel": np.abs(g2 * w2)}),
                          (made["magnitude_init"], {p: np.abs(theta[p]) for p in PATHS})):
        for path in PATHS:
            assert scores[path][masks[path]].min() >= \
                scores[path][~masks[path]].max() - 1e-6
    # the PaI controls start from θ0 (the rewind point), as random pruning does
    for name in ("snip", "grasp", "synflow", "magnitude_init"):
        start = CONTROLS[name].start(trial, 7)
        assert all(np.array_equal(start.values[k], theta[k]) for k in theta)


@pytest.mark.parametrize("engine", list(KERASES))
def test_grasp_prunes_the_highest_of_its_score(engine):
    trial = _Trial(_mlp(KERASES[engine]))
    theta = trial.rewind_point().values
    masks = CONTROLS["grasp"].masks(_ticket(theta), 7, trial)
    grasp = {p: -s for p, s in pai.grasp_scores(trial, theta, PATHS).items()}  # the paper's
    for path in PATHS:
        assert grasp[path][~masks[path]].min() >= grasp[path][masks[path]].max()


def test_synflow_iterates_to_the_target_through_nested_masks():
    trial = _Trial(_mlp(KERASES["keras3"]))
    theta = trial.rewind_point().values
    full = tfl.Masks.full({p: theta[p].shape for p in PATHS})
    seen = []
    target = {"hidden/kernel": 0.8, "output/kernel": 0.5}
    for iterations in (1, 4):
        masks = pai.synflow_masks(trial, theta, full, target, iterations=iterations)
        assert masks.kept() == {"hidden/kernel": 6, "output/kernel": 8}
        seen.append(masks)
    # one iteration is one-shot SynFlow: the top scores of the full network; four re-score
    one_shot = keep_highest(pai.synflow_scores(trial, theta, full), full, target)
    assert all(np.array_equal(seen[0][p], one_shot[p]) for p in PATHS)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_global_scope_keeps_the_tickets_total(scope):
    trial = _Trial(_mlp(KERASES["keras3"]), scope=scope)
    theta = trial.rewind_point().values
    ticket = _ticket(theta)
    for name in ("snip", "grasp", "synflow", "magnitude_init"):
        masks = CONTROLS[name].masks(ticket, 7, trial)
        assert sum(masks.kept().values()) == sum(ticket.kept().values()), name
        if scope == "layer":
            assert masks.kept() == ticket.kept(), name


def test_the_default_controls_stay_the_papers_two():
    assert DEFAULT_CONTROLS == ("random_reinit", "random_pruning")
    assert list(CONTROLS)[:2] == list(DEFAULT_CONTROLS)  # their seeds (the variant index) too
    assert SearchSettings().controls == DEFAULT_CONTROLS
    assert {c.label for c in CONTROLS.values()} >= {"SNIP", "GraSP", "SynFlow"}


def test_controls_of_a_channel_ticket_prune_whole_units_scored_by_their_sum():
    from tf_lottery.core.channels import ChannelGroup, ChannelPlan

    trial = _Trial(_mlp(KERASES["keras3"]))
    trial.settings = tfl.ImpSettings(granularity="channel")
    trial.channels = ChannelPlan((ChannelGroup(5, ("hidden/kernel",), (
        ("hidden/kernel", -1), ("hidden/bias", -1))),))
    theta = trial.rewind_point().values
    paths = trial.channels.paths()
    ticket = keep_highest({p: np.abs(theta[p]) for p in paths},
                          tfl.Masks.full({p: theta[p].shape for p in paths}),
                          dict.fromkeys(paths, 0.6), channels=trial.channels)
    (w1, _), (g1, _) = _reference(theta, trial.scoring.batches())
    for name in ("random_pruning", "snip", "grasp", "synflow", "magnitude_init"):
        masks = CONTROLS[name].masks(ticket, 7, trial)
        units = masks["hidden/kernel"].any(axis=0)
        assert np.array_equal(masks["hidden/kernel"].all(axis=0), units), name
        assert units.sum() == 2 and np.array_equal(masks["hidden/bias"], units), name
    snip_units = CONTROLS["snip"].masks(ticket, 7, trial)["hidden/kernel"].any(axis=0)
    assert set(np.flatnonzero(snip_units)) == set(np.argsort(-np.abs(g1 * w1).sum(axis=0))[:2])
