"""The ``tf-lottery`` command and the YAML config it reads."""

from tf_lottery.cli.commands import main

__all__ = ["main"]
