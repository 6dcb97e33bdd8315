"""IMP inside one fit: IMP rounds of Lenet-300-100 on the embedded MNIST, in minutes on a CPU.

One ``fit`` runs every round. The paper's rates: each round removes 20% of the surviving
weights of the hidden layers and 10% of the output layer's; after every round the
survivors go back to their initial values. Per round it prints the weights remaining and
the test accuracy the round reached.

    python examples/one_call_imp.py            # 12 rounds, 2 epochs each
    python examples/one_call_imp.py --rounds 3 --epochs-per-round 1
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

import tf_lottery as tfl
from tf_lottery.zoo.data import load_mnist
from tf_lottery.zoo.models import lenet_300_100


class PrintRounds(tfl.RoundCallback):
    """Prints one line per finished round."""

    def __init__(self, rounds: int):
        super().__init__()
        self.total = rounds + 1
        self.started = time.perf_counter()

    def on_round_end(self, round_index, logs):
        print(f"round {round_index:2d}/{self.total - 1}  "
              f"weights remaining {logs['weights_remaining']:7.2%}  "
              f"test accuracy {logs['val_accuracy']:.4f}  "
              f"({time.perf_counter() - self.started:5.1f} s)", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12,
                        help="pruning rounds (default 12: 7.0%% of hidden weights)")
    parser.add_argument("--epochs-per-round", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-dir", default=None,
                        help="where θ0 is stored (default: a new temporary directory)")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = load_mnist()
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train)) \
        .shuffle(len(x_train), seed=args.seed).batch(args.batch_size).prefetch(2)
    steps_per_epoch = int(np.ceil(len(x_train) / args.batch_size))

    schedule = tfl.RewindingSchedule(
        rounds=args.rounds, steps_per_round=args.epochs_per_round * steps_per_epoch,
        prune_rate=0.2, layer_rates={"output": 0.1})
    pruned = tfl.prune_with_rewinding(lenet_300_100(seed=args.seed, keras=3), schedule, rewind_to=0,
                                      checkpoint_dir=args.checkpoint_dir)
    pruned.compile(optimizer=keras.optimizers.Adam(1.2e-3),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    print(f"Lenet-300-100 on MNIST: {args.rounds} rounds of {schedule.steps_per_round} steps "
          f"(batch {args.batch_size}), θ0 stored in {pruned.checkpoint_dir}")
    pruned.fit(train, epochs=pruned.epochs(steps_per_epoch),
               validation_data=(x_test, y_test), verbose=0,
               callbacks=[PrintRounds(args.rounds)])

    ticket = tfl.strip_pruning(pruned)
    ticket.compile(metrics=["accuracy"],
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _, accuracy = ticket.evaluate(x_test, y_test, verbose=0)
    print(f"winning ticket: {pruned.masks.fraction_kept():.2%} of weights, "
          f"test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
