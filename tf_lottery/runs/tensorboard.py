"""TensorBoard summaries of a search: the paper's curves live, and round-level summaries.

In ``LOGDIR`` (a search writes ``RUN_DIR/logs``)::

    trial_0/ticket/round_00           every evaluation of one training, step = iteration:
    trial_0/random_reinit/round_01    val/loss, val/accuracy, test/..., train/loss, and
    ...                               early_stop/<monitor>, one point at the early stop
    rounds/trial_0/ticket             round-level scalars, step = round: weights remaining,
    rounds/trial_0/random_reinit      test metrics at early stop, early-stop iteration, ...;
    rounds/trial_0/random_pruning     per-layer sparsity, mask overlap, weight histograms,
                                      the accuracy-versus-sparsity plot and the curves
                                      figure, config, HParams

The run selector's regex picks a variant (``ticket``), a round (``round_07``), a trial
(``trial_1``) or the round-level runs (``rounds/``) in one word; the rounds of one variant
overlay in one chart, as in the paper's figure 3.

Example (the one-call path)::

    pruned.fit(train, epochs=..., callbacks=[tfl.TensorBoardRounds("logs/imp")])
    # tensorboard --logdir logs/imp
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.hparams import api as hparams_api

from tf_lottery.engines.callbacks import RoundCallback
from tf_lottery.core.masks import Masks


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a ∩ b| / |a ∪ b| of two boolean masks (1.0 for two empty masks)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


class _CurveWriter:
    """One training's evaluations as scalars with step = iteration: ``val/<metric>``,
    ``test/<metric>``, ``train/loss``; and the early stop, marked once."""

    def __init__(self, logdir: str | os.PathLike):
        self._writer = tf.summary.create_file_writer(str(logdir))

    def evaluation(self, point: dict) -> None:
        """``point``: the tracker's evaluation (``val_loss``, ..., ``iteration``)."""
        with self._writer.as_default(step=point["iteration"]):
            for key, value in point.items():
                if key != "iteration":
                    tf.summary.scalar(key.replace("_", "/", 1), value)

    def early_stop(self, monitor: str, best: dict) -> None:
        """A point at the early-stop iteration (the best ``monitor``), and a text saying it."""
        with self._writer.as_default(step=best["iteration"]):
            tf.summary.scalar(f"early_stop/{monitor}", best[monitor])
            tf.summary.text("early_stop", f"early stop at iteration {best['iteration']}: "
                                          f"{monitor} {best[monitor]:.6g}")

    def close(self) -> None:
        self._writer.close()


class _RoundSummaryWriter:
    """Writes one run's round-level summaries; the step of every summary is the round."""

    def __init__(self, logdir: str | os.PathLike):
        self.logdir = Path(logdir)
        self._writer = tf.summary.create_file_writer(str(self.logdir))

    def write_round(self, round_index: int, scalars: dict, masks: Masks,
                    previous: Optional[Masks] = None, weights: Optional[dict] = None) -> None:
        """Scalars under ``imp/``, per-layer sparsity, overlap with the previous round's
        masks, and histograms of the surviving ``weights`` (path -> array)."""
        with self._writer.as_default(step=round_index):
            for name, value in scalars.items():
                tf.summary.scalar(f"imp/{name}", value)
            for path, sparsity in masks.sparsity().items():
                tf.summary.scalar(f"sparsity/{path}", sparsity)
            if previous is not None:
                for path in masks:
                    tf.summary.scalar(f"mask_overlap_previous/{path}",
                                      jaccard(masks[path], previous[path]))
            for path, value in (weights or {}).items():
                _histogram(f"surviving_weights/{path}", value[masks[path]])
        self._writer.flush()

    def write_final_overlap(self, masks_by_round: list) -> None:
        """Per round, the Jaccard overlap of its masks with the last round's."""
        final = masks_by_round[-1]
        with self._writer.as_default():
            for round_index, masks in enumerate(masks_by_round):
                for path in masks:
                    tf.summary.scalar(f"mask_overlap_final/{path}",
                                      jaccard(masks[path], final[path]), step=round_index)
        self._writer.flush()

    def write_setup(self, config: dict, hparams: dict) -> None:
        """The config as text and the HParams the dashboard compares searches by."""
        with self._writer.as_default(step=0):
            tf.summary.text("config", "```\n" + json.dumps(config, indent=2, default=str) +
                            "\n```")
            hparams_api.hparams({key: _hparam_value(v) for key, v in hparams.items()})
        self._writer.flush()

    def write_image(self, name: str, png: bytes, round_index: int) -> None:
        with self._writer.as_default(step=round_index):
            tf.summary.image(name, tf.image.decode_png(png, channels=4)[tf.newaxis])
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _histogram(name: str, values: np.ndarray, buckets: int = 30) -> None:
    """A histogram summary of ``values`` (rows: left edge, right edge, count), counted with
    numpy: ``tf.summary.histogram`` one-hot encodes every value in float64, a transient of
    56 MB at every round end for the 235,200 weights of Lenet-300-100's first layer."""
    counts, edges = np.histogram(values, bins=buckets)
    tf.summary.write(name, np.stack([edges[:-1], edges[1:], counts], axis=1).astype(np.float64),
                     metadata=histogram_metadata.create_summary_metadata(
                         display_name=None, description=None))


def _hparam_value(value):
    return value if isinstance(value, (bool, int, float, str)) else json.dumps(value)


class TensorBoardRounds(RoundCallback):
    """Round-level summaries for ``LotteryModel.fit``: pass it in ``callbacks``.

    At every round end it writes, with the round as the step: weights remaining, the
    round's last Keras metrics, per-layer sparsity, mask overlap with the previous round
    and histograms of the surviving weights. Keras' own curves stay with Keras's
    ``callbacks.TensorBoard``.
    """

    def __init__(self, log_dir: str | os.PathLike):
        super().__init__()
        self.writer = _RoundSummaryWriter(Path(log_dir) / "summary")
        self._previous = None

    def on_round_end(self, round_index, logs):
        masks = self.model.masks
        self.writer.write_round(round_index, logs, masks, self._previous,
                                self.model.masked_weights())
        self._previous = masks


class SearchSummaries:
    """The TensorBoard side of a LotteryTicketSearch, writing into ``RUN_DIR/logs``."""

    def __init__(self, logdir: str | os.PathLike, config: dict, hparams: dict):
        self.logdir = Path(logdir)
        self.config, self.hparams = config, hparams
        self._writers = {}

    def training_curve(self, trial: int, variant: str, round_index: int, curve: list,
                       monitor: str, best: dict) -> None:
        """One training's evaluations (``curve``) and its early stop (``best``)."""
        writer = _CurveWriter(self.logdir / f"trial_{trial}" / variant /
                              f"round_{round_index:02d}")
        for point in curve:
            writer.evaluation(point)
        writer.early_stop(monitor, best)
        writer.close()

    def _writer(self, trial: int, variant: str) -> _RoundSummaryWriter:
        key = (trial, variant)
        if key not in self._writers:
            path = self.logdir / "rounds" / f"trial_{trial}" / variant
            fresh = not path.exists()
            self._writers[key] = _RoundSummaryWriter(path)
            if fresh:
                self._writers[key].write_setup(
                    self.config, dict(self.hparams, trial=trial, variant=variant))
        return self._writers[key]

    def round_committed(self, record, masks: Masks, previous: Optional[Masks],
                        weights: dict) -> None:
        """Everything one variant's training in one round reached: weights remaining, the
        early-stop iteration, every metric at early stop (``val_*``, ``test_*``) and at the
        end (``final_test_*``)."""
        scalars = {"weights_remaining": record.weights_remaining,
                   "early_stop_iteration": record.early_stop_iteration}
        for prefix, metrics in (("val", record.val_metrics), ("test", record.test_metrics),
                                ("final_test", record.final_test_metrics)):
            scalars.update({f"{prefix}_{name}": value for name, value in metrics.items()})
        self._writer(record.trial, record.variant).write_round(
            record.round, scalars, masks, previous, weights)

    def plot(self, trial: int, round_index: int, png: bytes, curves_png: bytes) -> None:
        """The results plot and the curves figure as they stand after ``round_index``."""
        writer = self._writer(trial, "ticket")
        writer.write_image("imp/accuracy_vs_sparsity", png, round_index)
        writer.write_image("imp/curves", curves_png, round_index)

    def trial_finished(self, trial: int, ticket_masks_by_round: list) -> None:
        self._writer(trial, "ticket").write_final_overlap(ticket_masks_by_round)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
