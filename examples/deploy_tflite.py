"""Deploy the MNIST Lenet-300-100 ticket to TFLite and run it the way a phone app does.

1. Find a ticket by IMP: 15 rounds at the paper's rates (20% of the hidden weights, 10% of
   the output layer's per round) leave 3.6% of the weights. Rounds here are one epoch
   each, not the paper's 50,000 iterations, so the example runs in about two minutes.
2. Export it with ``tfl.export_tflite``, verified in LiteRT against Keras, with a
   size/latency/accuracy report (printed, and saved beside the file):
   - float (default): a ticket pruned in 1x4 blocks, the layout TFLite's sparse float
     kernels accelerate, stored sparse: about 23x smaller and 6x faster than dense float;
   - int8: full-integer quantization of an unstructured ticket, stored dense-format (TFLite
     stores sparse int8 only in 1x16 blocks, and Lenet's 300 and 100 inputs are not
     multiples of 16): about 4x smaller and 4.5x faster, and gzip (an app store's
     download) shrinks its zeros to about 27 KB.
3. Load the .tflite file in the LiteRT interpreter and classify the test images one at a
   time, as an app would: read the input and output details, quantize each image with the
   input's scale and zero point (int8), invoke, dequantize the scores, take the arg-max.

    python examples/deploy_tflite.py                   # sparse float32, 1x4 blocks
    python examples/deploy_tflite.py --quantize int8   # full-integer int8

A second run finds the exported file and goes straight to step 3 (delete it, or pass
--out, to export again).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras
from ai_edge_litert.interpreter import Interpreter

import tf_lottery as tfl
from tf_lottery.export import SAVED_MODELS_DIR
from tf_lottery.zoo.data import load_mnist
from tf_lottery.zoo.models import lenet_300_100

ENCODINGS = {"float": (4, True), "int8": (1, False)}  # --quantize: (block_size, sparse storage)


def make_ticket(x_train, y_train, block_size: int, rounds: int = 15, epochs_per_round: int = 1,
                seed: int = 0, validation_data=None):
    """IMP on Lenet-300-100 at the paper's rates, pruning in 1 x ``block_size`` blocks.

    Returns the LotteryModel after its last round (``rounds[0]`` holds the dense network's
    metrics, with ``val_accuracy`` when ``validation_data`` is given).
    """
    keras.utils.set_random_seed(seed)
    batch_size = 60
    steps_per_epoch = int(np.ceil(len(x_train) / batch_size))
    schedule = tfl.RewindingSchedule(rounds=rounds,
                                     steps_per_round=epochs_per_round * steps_per_epoch,
                                     prune_rate=0.2, layer_rates={"output": 0.1})
    pruned = tfl.prune_with_rewinding(lenet_300_100(seed=seed), schedule, block_size=block_size)
    pruned.compile(optimizer=keras.optimizers.Adam(1.2e-3),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train)) \
        .shuffle(len(x_train), seed=seed).batch(batch_size).prefetch(2)
    pruned.fit(train, epochs=pruned.epochs(steps_per_epoch),
               validation_data=validation_data, verbose=0)
    return pruned


def classify_like_a_phone(tflite_path, images, labels) -> None:
    """Run a .tflite classifier image by image in LiteRT, the way an app's inference loop does."""
    interpreter = Interpreter(model_path=str(tflite_path), num_threads=1)
    interpreter.allocate_tensors()
    input_details = interpreter.get_input_details()[0]
    output_details = interpreter.get_output_details()[0]
    in_scale, in_zero_point = input_details["quantization"]
    out_scale, out_zero_point = output_details["quantization"]
    for role, details in (("input ", input_details), ("output", output_details)):
        scale, zero_point = details["quantization"]
        print(f"{role} {details['name']}: {np.dtype(details['dtype']).name} "
              f"{details['shape'].tolist()}" +
              (f", scale {scale:.6g}, zero point {zero_point}" if scale else ""))

    correct, latencies = 0, []
    for image, label in zip(images, labels):
        if in_scale:  # an int8 model takes quantized pixels: q = x / scale + zero_point
            image = np.clip(np.round(image / in_scale + in_zero_point), -128, 127)
        interpreter.set_tensor(input_details["index"], image[None].astype(input_details["dtype"]))
        start = time.perf_counter()
        interpreter.invoke()
        latencies.append(time.perf_counter() - start)
        scores = interpreter.get_tensor(output_details["index"])[0].astype(np.float32)
        if out_scale:  # and returns quantized scores: x = (q - zero_point) * scale
            scores = (scores - out_zero_point) * out_scale
        correct += int(np.argmax(scores) == label)
    print(f"{len(images)} test images, one at a time: accuracy {correct / len(images):.2%}, "
          f"median {np.median(latencies) * 1e6:.1f} µs per image (one thread)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantize", choices=sorted(ENCODINGS), default="float",
                        help="float (sparse float32, 1x4 blocks) or int8 (full integer, "
                             "dense format)")
    parser.add_argument("--rounds", type=int, default=15, help="IMP rounds (15: 3.6%% of weights)")
    parser.add_argument("--epochs-per-round", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None,
                        help="the .tflite file (default "
                             "saved_models/lenet_300_100_ticket_<quantize>.tflite)")
    args = parser.parse_args(argv)
    out = args.out or SAVED_MODELS_DIR / f"lenet_300_100_ticket_{args.quantize}.tflite"

    (x_train, y_train), (x_test, y_test) = load_mnist()
    if out.exists():
        print(f"{out} exists from an earlier run: running it (delete it to export again)")
    else:
        block_size, sparse = ENCODINGS[args.quantize]
        print(f"IMP on Lenet-300-100 with blocks of {block_size}: {args.rounds} rounds of "
              f"{args.epochs_per_round} epoch(s)")
        started = time.perf_counter()
        pruned = make_ticket(x_train, y_train, block_size, args.rounds, args.epochs_per_round)
        print(f"ticket: {pruned.masks.fraction_kept():.2%} of weights kept "
              f"({time.perf_counter() - started:.0f} s); exporting to {out}")
        int8 = args.quantize == "int8"
        tfl.export_tflite(pruned, out, quantize="int8" if int8 else None, sparse=sparse,
                          representative_data=x_train[:500] if int8 else None,
                          test_data=(x_test, y_test))
    print("\nOn the phone:")
    classify_like_a_phone(out, x_test, y_test)


if __name__ == "__main__":
    main()
