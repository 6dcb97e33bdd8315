"""A training's evaluations: the compiled loss and metrics on validation and test data
every ``eval_every`` iterations, and the early stop (the best value of the search's
``monitor``: minimum validation loss by default, as in the paper).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional

import tensorflow as tf

from tf_lottery.core.early_bird import mask_distance, settled
from tf_lottery.engines import Callback
from tf_lottery.foundations.interrupts import raise_if_interrupted


@dataclasses.dataclass
class TrainingState:
    """Where one training is: steps taken, every evaluation so far (the curve), the best and
    the last, the step whose loss was not finite (if any), and the seconds it has trained
    (over every process that ran it); under ``early_bird``, the distances between
    successive mask draws and where the training ended. The epoch backup saves and restores
    it whole."""

    step: int = 0
    best: Optional[dict] = None
    last: Optional[dict] = None
    diverged_at: Optional[int] = None
    curve: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    mask_distances: list = dataclasses.field(default_factory=list)  # early_bird's draws
    mask_drawn_at: Optional[int] = None  # the iteration early_bird ended the training at

    def to_config(self) -> dict:
        return dataclasses.asdict(self)


class Evaluator:
    """The compiled loss and metrics of a model on fixed data sets, through the model's own
    ``test_step``; keys are ``<set>_<metric>`` (``val_loss``, ``test_accuracy``).

    On TensorFlow, without a distribution strategy, one evaluation is one call of a
    TensorFlow graph that runs ``test_step`` over every set's batches, resetting the metrics
    between sets (traced again when the model is compiled again); without XLA, whose CPU
    kernels are slower than TensorFlow's for large evaluation batches. It skips
    ``evaluate``'s per-call machinery (iterator, callbacks, eager metric resets: 20-40 ms
    per MNIST evaluation point, beside 70-80 ms of computation; measured by
    ``benchmarks/evaluation_point.py``). Elsewhere (JAX, strategies) it is Keras's
    ``evaluate`` of each set. Both give what ``evaluate`` gives: the metrics after the set's
    last batch.

        evaluator = Evaluator({"val": EvaluationInput((x_val, y_val), "validation")},
                              in_graph=True)
        evaluator(model)  # {"val_loss": 0.08, "val_accuracy": 0.977}
    """

    def __init__(self, sets: dict, in_graph: bool):
        self._sets = {name: data.batches() for name, data in sets.items()}
        self._in_graph = in_graph
        self._graph, self._traced_for = None, None

    def __call__(self, model) -> dict:
        if self._in_graph:
            return {key: float(value) for key, value in self._graph_of(model)().items()}
        out = {}
        for name, dataset in self._sets.items():
            metrics = model.evaluate(dataset, verbose=0, return_dict=True)
            out.update({f"{name}_{key}": float(value) for key, value in metrics.items()})
        return out

    def _graph_of(self, model):
        """The graph evaluating every set, for the model as it is compiled now."""
        if self._traced_for is not model.compile_settings:
            sets = self._sets

            @tf.function(jit_compile=False)
            def evaluate():
                out = {}
                for name, dataset in sets.items():
                    for metric in model.metrics:
                        metric.reset_state()
                    batches = iter(dataset)
                    logs = model.test_step(next(batches))
                    for batch in batches:
                        logs = model.test_step(batch)
                    out.update({f"{name}_{key}": value for key, value in logs.items()})
                return out
            self._graph, self._traced_for = evaluate, model.compile_settings
        return self._graph


class RoundTracker(Callback):
    """Evaluates every ``eval_every`` iterations, remembers the best ``monitor`` value, stops
    the fit after the training's ``steps`` or at a non-finite loss; captures a rewind point if
    asked; counts the seconds trained. Iterations are the optimizer's: ``steps`` (a range)
    starts where its counter does, and ``batches_per_step`` batches make one step (gradient
    accumulation). With ``early_bird`` (an EarlyBird) it draws the next masks from the
    weights under ``masks`` at every evaluation and stops once the draws have settled."""

    def __init__(self, options, evaluator: Evaluator, steps: range, capture=None,
                 listeners=(), batches_per_step: int = 1, early_bird=None, masks=None):
        super().__init__()
        self.options, self.evaluator, self.steps = options, evaluator, steps
        self.capture = capture  # (iteration, callback(model)) or None
        self.listeners = listeners  # called with the state after every evaluation
        self.batches_per_step = batches_per_step
        self.early_bird, self.masks = early_bird, masks
        self.drawn = None  # early_bird's last draw (the epoch backup keeps it)
        self.state = TrainingState()

    def on_train_begin(self, logs=None):
        self._began, self._before = time.perf_counter(), self.state.seconds

    def on_train_end(self, logs=None):
        self._count_time()

    def _count_time(self):
        """The seconds this training has trained, over every process that ran it."""
        self.state.seconds = self._before + time.perf_counter() - self._began

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.state.step

    def on_epoch_end(self, epoch, logs=None):
        self._count_time()  # before the epoch backup saves the state

    def on_train_batch_end(self, batch, logs=None):
        """Called once per compiled call of ``steps_per_execution`` steps: ``batch`` is the
        index (in the epoch) of the call's last batch."""
        raise_if_interrupted()
        state, options = self.state, self.options
        state.step = self._epoch_start + (batch + 1) // self.batches_per_step
        iteration = self.steps.start + state.step
        if self.capture and iteration == self.capture[0]:
            self.capture[1](self.model)
        if iteration % options.eval_every == 0 or state.step == len(self.steps):
            metrics = self.evaluator(self.model)
            train_loss = float(logs["loss"]) if logs and "loss" in logs else 0.0
            if not (math.isfinite(metrics["val_loss"]) and math.isfinite(train_loss)):
                state.diverged_at = iteration
                self.model.stop_training = True
                return
            state.last = dict(metrics, iteration=iteration)
            state.curve.append(dict(state.last, train_loss=train_loss))
            if state.best is None or options.better(metrics[options.monitor],
                                                    state.best[options.monitor]):
                state.best = state.last
            for listener in self.listeners:
                listener(state)
            if self.early_bird and self._settled(iteration):
                return
        if state.step >= len(self.steps):
            self.model.stop_training = True

    def _settled(self, iteration: int) -> bool:
        """Draw the next masks, and stop the fit if the draws have settled."""
        bird, state = self.early_bird, self.state
        draw = bird.draw(self.model.masked_weights(), self.masks)
        if self.drawn is not None:
            state.mask_distances.append(mask_distance(self.drawn, draw))
        self.drawn = draw
        if settled(state.mask_distances, bird.epsilon, bird.window) and \
                state.step < len(self.steps):
            state.mask_drawn_at = iteration
            self.model.stop_training = True
            return True
        return False
