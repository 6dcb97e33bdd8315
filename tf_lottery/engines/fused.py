"""Several training steps in one XLA program: a compiled call of the search without a loop
around it.

Keras runs ``steps_per_execution`` steps as a TensorFlow while loop around the compiled
step: every step takes its batch from the iterator and launches its own XLA program. When a
search trains on arrays under XLA (TensorFlow, no distribution strategy), one call is one
XLA program instead: the iterator gives the call's batches as indices into the arrays
(:meth:`~tf_lottery.search.inputs.TrainingInput.index_chunks`), and the program gathers each
step's batch from the variables that hold the arrays and runs the model's own
``train_step`` on it, ``steps`` times. The same steps on the same batches in the same
order, through the same optimizer: what Keras's loop computes, without its per-step cost
(``benchmarks/search_speed.py`` measures the search with it).

Example (what :func:`~tf_lottery.search.training.train` does around each training)::

    fused = FusedSteps(train, steps=100)
    if fused.applies(model):
        with fused.installed(model):
            model.fit(train.index_chunks(seed, 100), steps_per_epoch=900, epochs=2)
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

from tf_lottery.engines.registry import engine_for


class FusedSteps:
    """``steps`` training steps of a compiled model per call, in one XLA program."""

    def __init__(self, train, steps: int):
        self.train, self.steps = train, steps  # train: a TrainingInput
        self._function, self._traced_for = None, None

    def applies(self, model) -> bool:
        """Whether ``model``, as it is compiled now, trains in fused calls: arrays, XLA
        (as Keras decided it: Keras 3 turns it off for layers without XLA support),
        TensorFlow graphs, no distribution strategy (whose replicas Keras's loop runs)."""
        return (self.train.arrays is not None and bool(model.jit_compile)
                and engine_for(model).tensorflow_graphs and not tf.distribute.has_strategy())

    @contextlib.contextmanager
    def installed(self, model):
        """``model.fit`` calls the fused program (it takes :meth:`index_chunks` batches);
        Keras's own training function again afterwards."""
        model.train_function = self._function_of(model)
        try:
            yield
        finally:
            model.train_function = None  # Keras makes its own at the next fit

    def _function_of(self, model):
        """The training function for the model as it is compiled now (traced again after a
        new compile, as Keras's own is)."""
        if self._traced_for is not model.compile_settings:
            gather, steps = self.train.gather, self.steps

            @tf.function(jit_compile=True)
            def run_steps(indices):
                logs = model.train_step(gather(indices[0]))
                for step in tf.range(1, steps):
                    logs = model.train_step(gather(indices[step]))
                return logs

            def train_function(iterator):
                return run_steps(iterator.get_next())
            self._function, self._traced_for = train_function, model.compile_settings
        return self._function
