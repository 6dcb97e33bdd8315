"""What the pruning-at-initialization controls score with in a search's driver: a trial's
model, through its engine, on a few training batches and the search's loss.

The scores themselves are :mod:`tf_lottery.core.pai`'s; a trial
(:class:`~tf_lottery.search.graph.TrialRounds`) offers them this scorer's gradients of its
own model. The batches are the first :data:`SCORE_BATCHES` of the training data in the
order seeded by the search's seed, taken once: every trial and round, a resumed run and
a run on Ray score on the same examples.

Example::

    scoring = Scoring(train, loss="sparse_categorical_crossentropy", seed=0)
    scoring.loss_gradients(model, theta0, ["dense/kernel"])   # {"dense/kernel": array}
"""

from __future__ import annotations

import tensorflow as tf

from tf_lottery.engines import engine_for

SCORE_BATCHES = 4  # a few batches: 240 examples at the paper's batch size (SNIP: 100, GraSP: 250)


class Scoring:
    """Gradients of a model at given weights on the first batches of ``train`` (a
    TrainingInput) under ``loss`` (a Keras identifier)."""

    def __init__(self, train, loss, seed: int, batches: int = SCORE_BATCHES):
        self.train, self.loss, self.seed, self.count = train, loss, seed, batches
        self._batches = None

    def batches(self) -> list:
        """The scoring batches as ``(x, y)`` arrays (taken on first use)."""
        if self._batches is None:
            # their order depends on TensorFlow's global seed too, which the last training in
            # this process set (none on Ray): set it, as a training does before its batches
            tf.random.set_seed(self.seed)
            self._batches = list(self.train.batches(self.seed).take(self.count)
                                 .as_numpy_iterator())
        return self._batches

    def loss_gradients(self, model, values: dict, paths: list, temperature: float = 1.0,
                       vector=None) -> dict:
        return engine_for(model).loss_gradients(model, values, paths, self.batches(),
                                                self.loss, temperature, vector)

    def flow_gradients(self, model, values: dict, paths: list) -> dict:
        return engine_for(model).output_gradients(model, values, paths)
