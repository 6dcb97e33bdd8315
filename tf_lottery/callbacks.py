"""Keras callbacks that work in either Keras's ``fit``: tf_keras (Keras 2) and Keras 3.

:class:`Callback` is a Keras 3 callback that also carries what tf_keras's callback list
asks of its callbacks, so one class serves both engines. :class:`RoundCallback` adds
``on_round_end``, which a LotteryModel's ``fit`` calls at every IMP round end.

Example::

    class PrintRounds(tfl.RoundCallback):
        def on_round_end(self, round_index, logs):
            print(round_index, logs["weights_remaining"])

    pruned.fit(train, epochs=10, callbacks=[PrintRounds()])
"""

from __future__ import annotations

import keras


def _overridden(*methods) -> bool:
    return not all(getattr(method, "_is_default", False) for method in methods)


class Callback(keras.callbacks.Callback):
    """A Keras callback for either Keras's ``fit`` (Keras 3's base class, tf_keras's hooks).

    On the JAX backend, ``self.model`` brings the training state back into the model's
    variables before a callback reads or assigns them (Keras 3 does this).
    """

    _supports_tf_logs = False   # tf_keras: hand this callback NumPy logs
    _chief_worker_only = None

    def _implements_train_batch_hooks(self) -> bool:  # tf_keras asks these once per fit
        return _overridden(self.on_batch_begin, self.on_batch_end,
                           self.on_train_batch_begin, self.on_train_batch_end)

    def _implements_test_batch_hooks(self) -> bool:
        return _overridden(self.on_test_batch_begin, self.on_test_batch_end)

    def _implements_predict_batch_hooks(self) -> bool:
        return _overridden(self.on_predict_batch_begin, self.on_predict_batch_end)


class RoundCallback(Callback):
    """A Keras callback that also hears about IMP round ends on a LotteryModel's ``fit``.

    ``on_round_end(round_index, logs)`` runs after round ``round_index`` finished training
    and before its weights are pruned and rewound. ``logs`` holds the Keras metrics of the
    round's last step (or epoch, when the round ends with an epoch) and
    ``weights_remaining``, the fraction of prunable weights the round trained with.
    """

    def on_round_end(self, round_index: int, logs: dict) -> None:
        pass
