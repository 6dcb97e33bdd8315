"""The ``tf-lottery`` command: a thin layer over RunConfig, LotteryTicketSearch and SearchResult.

    tf-lottery run CONFIG.yaml [key=value ...]   run or resume the search CONFIG describes
    tf-lottery report RUN_DIR                    table, CSV, JSON and plot of a (partial) run
"""

from __future__ import annotations

import argparse
import sys

from tf_lottery.config import ConfigError, RunConfig
from tf_lottery.data import DataError
from tf_lottery.integrity import DamagedFileError
from tf_lottery.results import SearchResult
from tf_lottery.rundir import RunDirectoryError

# Errors that are the user's to fix: printed as one line, without a traceback.
_USER_ERRORS = (ConfigError, DataError, RunDirectoryError, DamagedFileError,
                FileNotFoundError, FileExistsError, FloatingPointError, ValueError, TypeError)


def _run(args) -> None:
    config = RunConfig.load(args.config, args.overrides)
    splits = config.splits()
    config.search(splits).run(splits.train, splits.validation, splits.test)


def _report(args) -> None:
    result = SearchResult.load(args.run_dir)
    if not result.records:
        raise FileNotFoundError(f"{args.run_dir} has no completed round yet")
    print(result.table())
    paths = result.save(args.run_dir)
    print(f"results: {paths['csv']}, {paths['json']}, {paths['plot']}")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="tf-lottery", description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run or resume the search a YAML config describes")
    run.add_argument("config", help="a YAML file of config keys (see examples/*.yaml)")
    run.add_argument("overrides", nargs="*", metavar="key=value",
                     help="config keys to override, values in YAML syntax")
    run.set_defaults(handler=_run)
    report = commands.add_parser("report", help="results table and plot of a run directory")
    report.add_argument("run_dir")
    report.set_defaults(handler=_report)
    return main


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        args.handler(args)
    except _USER_ERRORS as error:
        print(f"tf-lottery {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
