"""tf_lottery's callbacks: Keras 3 callbacks that a LotteryModel of either Keras takes.

:class:`Callback` marks a callback as tf_lottery's (the fit of a tf_keras model takes it;
its engine adds what tf_keras's callback list asks of a callback); :class:`RoundCallback`
adds ``on_round_end``, which a LotteryModel's training calls at every IMP round end.

Example::

    class PrintRounds(tfl.RoundCallback):
        def on_round_end(self, round_index, logs):
            print(round_index, logs["weights_remaining"])

    pruned.fit(train, epochs=10, callbacks=[PrintRounds()])
"""

from __future__ import annotations

import keras


class Callback(keras.callbacks.Callback):
    """A Keras callback for either Keras's ``fit``.

    On the JAX backend, ``self.model`` brings the training state back into the model's
    variables before a callback reads or assigns them (Keras 3 does this).
    """


class RoundCallback(Callback):
    """A Keras callback that also hears about IMP round ends on a LotteryModel's training.

    ``on_round_end(round_index, logs)`` runs after round ``round_index`` finished training
    and before its weights are pruned and rewound. ``logs`` holds the Keras metrics of the
    round's last step (or epoch, when the round ends with an epoch) and
    ``weights_remaining``, the fraction of prunable weights the round trained with.
    """

    def on_round_end(self, round_index: int, logs: dict) -> None:
        pass
