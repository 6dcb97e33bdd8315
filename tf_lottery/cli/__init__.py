"""The ``tf-lottery`` command and the YAML config it reads."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

# A line of TensorFlow's C++ log (absl's format, and TensorFlow's own before it), or absl's
# notice that such lines go to stderr
TF_LOG_LINE = re.compile(r"[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] |"
                         r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] |"
                         r"WARNING: All log messages before absl::InitializeLog\(\)")


def main(argv=None) -> int:
    """The ``tf-lottery`` command (:mod:`tf_lottery.cli.commands`).

    TensorFlow's C++ start-up log (oneDNN and CUDA notices, XLA's "Compiled cluster") would
    come between the command's own lines. Unless ``--verbose`` is given or the environment
    sets ``TF_CPP_MIN_LOG_LEVEL`` itself, the lines TensorFlow logs while it loads and
    looks for devices are held back (it writes some before it reads any setting), and
    ``TF_CPP_MIN_LOG_LEVEL=2`` keeps only its errors after that.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    # --verbose, or an abbreviation argparse takes for it
    verbose = any(len(arg) > 2 and "--verbose".startswith(arg) for arg in argv)
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        from tf_lottery.cli.commands import main as command
    else:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        with _without_tensorflow_log():
            import tensorflow as tf

            from tf_lottery.cli.commands import main as command
            tf.config.list_physical_devices()  # CUDA's notices, on a machine without it
    return command(argv)


@contextlib.contextmanager
def _without_tensorflow_log():
    """Hold back what the process writes to its standard error (file descriptor 2, where
    TensorFlow's C++ log goes) inside the block, then write it but TensorFlow's log lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not TF_LOG_LINE.match(line)))
            sys.stderr.flush()


__all__ = ["main"]
