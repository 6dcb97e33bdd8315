"""What a search prints while it runs: one progress bar per training, and a line per round.

At ``verbose=1`` (the default) a terminal shows one bar per training, redrawn at every
evaluation: the trial, round and variant, the weights remaining, the iteration, the current
and best value of the monitored metric, and the time left for the whole run. Piped to a
file, the same facts come as one plain line per training, never as redraws. ``verbose=2``
adds Keras's own line per epoch; ``verbose=0`` prints nothing.

Example (a terminal, one line)::

    trial 1/3 round 4/18 ticket   41.0% |######----| it  30000/50000
        val_loss 0.0712 (best 0.0651 @ 21300) | 2h41m left
"""

from __future__ import annotations

import sys
import time


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
    """The terminal side of a search: ``training(...)`` starts a bar, ``evaluated(state)``
    redraws it, ``finished(record)`` ends it; ``round_done(...)`` prints the round's line.

    ``total_steps`` are the training steps this process will run; the time left is
    extrapolated from the steps done so far."""

    WIDTH = 10

    def __init__(self, total_steps: int, trials: int, rounds: int, monitor: str,
                 verbose: int = 1, stream=None):
        self.stream = stream or sys.stdout
        self.bars = verbose >= 1 and self.stream.isatty()
        self.verbose, self.total, self.trials, self.rounds = verbose, total_steps, trials, rounds
        self.monitor = monitor
        self.began, self.done, self._training = time.perf_counter(), 0, None

    def training(self, trial: int, round_index: int, variant: str, weights: float,
                 steps: int) -> None:
        self._training = (f"trial {trial + 1}/{self.trials} round {round_index}/{self.rounds} "
                          f"{variant:<14} {weights:>6.1%}", steps)

    def left(self, steps_now: int = 0) -> str:
        done = self.done + steps_now
        if not done:
            return "?"
        per_step = (time.perf_counter() - self.began) / done
        return duration(max(0, self.total - done) * per_step)

    def _metric(self, state) -> str:
        if state.last is None:
            return ""
        best = state.best
        return (f"{self.monitor} {state.last[self.monitor]:.4f} (best "
                f"{best[self.monitor]:.4f} @ {best['iteration']})")

    def evaluated(self, state) -> None:
        if not self.bars or self._training is None:
            return
        label, steps = self._training
        filled = int(self.WIDTH * state.step / steps)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(f"\r{label} |{bar}| it {state.step:>6}/{steps} {self._metric(state)}"
                          f" | {self.left(state.step)} left\x1b[K")
        self.stream.flush()

    def finished(self, state, steps: int) -> None:
        """A training ended after ``steps`` steps (fewer if it was resumed)."""
        self.done += steps
        if self.verbose < 1 or self._training is None:
            return
        label, total = self._training
        line = f"{label} it {state.step}/{total} {self._metric(state)} | {self.left()} left"
        self.stream.write(("\r" + line + "\x1b[K\n") if self.bars else line + "\n")
        self.stream.flush()
        self._training = None

    def trained(self, outcome) -> None:
        """A training that ran elsewhere (a Ray worker) returned: its line."""
        spec, record = outcome.spec, outcome.record
        self.done += len(spec.steps)
        best = outcome.best
        self.line(f"trial {spec.trial + 1}/{self.trials} round {spec.round}/{self.rounds} "
                  f"{spec.variant:<14} {record.weights_remaining:>6.1%} {self.monitor} "
                  f"{best[self.monitor]:.4f} @ {best['iteration']}, {record.wall_time:.0f} s "
                  f"| {self.left()} left")

    def line(self, text: str) -> None:
        if self.verbose >= 1:
            print(text, file=self.stream, flush=True)
