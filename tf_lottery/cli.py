"""The ``tf-lottery`` command: a thin layer over RunConfig, LotteryTicketSearch, SearchResult
and the exports.

    tf-lottery run CONFIG.yaml [key=value ...]   run or resume the search CONFIG describes
    tf-lottery report RUN_DIR                    table, CSV, JSON and plot of a (partial) run
    tf-lottery export RUN_DIR [--round K] [--format tflite] [--quantize int8] [--output P]
                                                 a round's ticket as a verified SavedModel or
                                                 TFLite file (default under saved_models/)
"""

from __future__ import annotations

import argparse
import sys

from tf_lottery.config import ConfigError, RunConfig
from tf_lottery.data import DataError
from tf_lottery.export import ExportError, export_saved_model, export_tflite
from tf_lottery.integrity import DamagedFileError
from tf_lottery.results import SearchResult
from tf_lottery.rundir import RunDirectory, RunDirectoryError

# Errors that are the user's to fix: printed as one line, without a traceback.
_USER_ERRORS = (ConfigError, DataError, RunDirectoryError, DamagedFileError, ExportError,
                FileNotFoundError, FileExistsError, FloatingPointError, ValueError, TypeError)


def _run(args) -> None:
    config = RunConfig.load(args.config, args.overrides)
    splits = config.splits()
    config.search(splits).run(splits.train, splits.validation, splits.test,
                              keep={RunConfig.RECORD: config.to_yaml()})


def _export(args) -> None:
    run = RunDirectory(args.run_dir)
    ticket, round_index = run.ticket(args.trial, args.round)
    recorded = run.path / RunConfig.RECORD
    data = RunConfig.load(recorded).splits() if recorded.is_file() else None
    if data is None:
        print(f"{recorded} not found: verifying on random inputs, without accuracy")
    test = data.test if data else None
    print(f"exporting trial {args.trial}, round {round_index}: "
          f"{ticket.name}, as {args.format}")
    if args.format == "saved_model":
        export_saved_model(ticket, args.output, test_data=test)
    else:
        quantize = None if args.quantize == "none" else args.quantize
        representative = data.train[0][:500] if data and quantize == "int8" else None
        export_tflite(ticket, args.output, quantize=quantize,
                      representative_data=representative, test_data=test,
                      sparse=not args.dense)


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
    export = commands.add_parser("export", help="export a round's ticket, verified")
    export.add_argument("run_dir")
    export.add_argument("--round", type=int, default=None,
                        help="the round to export (default: the last completed one)")
    export.add_argument("--trial", type=int, default=0)
    export.add_argument("--format", choices=["tflite", "saved_model"], default="tflite")
    export.add_argument("--quantize", choices=["none", "dynamic", "int8"], default="none",
                        help="TFLite only: float32, dynamic-range or full-integer int8")
    export.add_argument("--dense", action="store_true",
                        help="TFLite only: store the weights dense (int8 of unstructured "
                             "tickets needs it)")
    export.add_argument("--output", default=None,
                        help="a path that does not exist yet (default under saved_models/)")
    export.set_defaults(handler=_export)
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
