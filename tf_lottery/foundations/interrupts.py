"""Ctrl-C that is never lost while a run trains.

Python turns SIGINT into a KeyboardInterrupt at the next bytecode of the main thread; when
that bytecode runs inside a garbage-collection callback or a ``__del__`` (JAX and
TensorFlow register some), the exception is printed as "Exception ignored" and training
goes on. Inside ``interruptible()`` a SIGINT is also remembered, and the search's training
callback calls ``raise_if_interrupted()`` after every compiled call, so a swallowed Ctrl-C
still stops the run there.

Example::

    with interruptible():
        search.run(train, validation, test)   # Ctrl-C: KeyboardInterrupt, never lost
"""

from __future__ import annotations

import contextlib
import signal
import threading

_interrupted = threading.Event()


def _on_sigint(signum, frame):
    _interrupted.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def interruptible():
    """Remember every SIGINT inside the block (only in the main thread, where signals go)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    _interrupted.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _interrupted.clear()


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived inside ``interruptible()``."""
    if _interrupted.is_set():
        raise KeyboardInterrupt
