"""Latency of a TFLite model against a dense network's, on one thread and on all of them.

Each model runs in LiteRT (default delegate: XNNPACK) one image at a time; the ticket's
and the dense network's runs are interleaved so that drift in the machine's speed hits both
alike, and the median of the runs is taken (it shrugs off the first, slower runs that
prepare the delegate's kernels). The thread counts are 1 and ``os.cpu_count()``.

Example::

    for latency in measure_latencies("ticket.tflite", dense_bytes, x[0], runs=200):
        print(latency.threads, latency.ms, latency.dense_ms, latency.speedup)
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import numpy as np

from tf_lottery.export.litert import LiteRT


class Latency(NamedTuple):
    """Median milliseconds per image (batch 1) on ``threads`` threads: the model's (``ms``)
    and the dense network's (``dense_ms``)."""

    threads: int
    ms: float
    dense_ms: float

    @property
    def speedup(self) -> float:
        """How many times faster than the dense network."""
        return self.dense_ms / self.ms


def thread_counts() -> tuple:
    """One thread, and every core of this machine (LiteRT's ``num_threads``)."""
    return tuple(sorted({1, os.cpu_count() or 1}))


def measure_latencies(model, dense, sample: np.ndarray, runs: int) -> tuple:
    """A :class:`Latency` per thread count of :func:`thread_counts`: ``model`` and ``dense``
    (TFLite files or flatbuffers) each run ``runs`` times on ``sample``, interleaved."""
    return tuple(Latency(threads, *_median_ms([model, dense], sample, runs, threads))
                 for threads in thread_counts())


def _median_ms(models, sample, runs: int, threads: int) -> list:
    runners = [LiteRT(model, threads=threads) for model in models]
    times = [[] for _ in runners]
    for runner in runners:
        runner.set_input(sample)
    for _ in range(runs):
        for runner, elapsed in zip(runners, times):
            start = time.perf_counter()
            runner.invoke()
            elapsed.append(time.perf_counter() - start)
    return [float(np.median(elapsed)) * 1e3 for elapsed in times]
