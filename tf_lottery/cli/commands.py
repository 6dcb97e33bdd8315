"""The ``tf-lottery`` command: a thin layer over RunConfig, LotteryTicketSearch, SearchResult
and the exports.

    tf-lottery [--verbose] [--traceback] COMMAND ...
    tf-lottery run CONFIG.yaml [key=value ...]   run or resume the search CONFIG describes
    tf-lottery run CONFIG.yaml --trial K         run only trial K (several processes at once)
    tf-lottery report DIR [DIR ...]              table, CSV, JSON and plot of a (partial) run,
                                                 or the complete trials of several run
                                                 directories or results folders, merged
    tf-lottery export RUN_DIR [--round K] [--format tflite] [--quantize int8] [--output P]
                      [--target arm_xnnpack_sparse]
                                                 a round's ticket as a verified SavedModel or
                                                 TFLite file (default under ./saved_models/;
                                                 the last round of a finished run; int8
                                                 calibrated on the run's training data;
                                                 --target checks the file meets XNNPACK's
                                                 sparse inference conditions, for ARM)
    tf-lottery instability CONFIG.yaml --rewind-steps 0,100,500 [--rounds 0,3]
                                                 error barriers between two copies trained
                                                 from each rewind step (RUN_DIR/instability)
    tf-lottery estimate CONFIG.yaml [--granularity 1x4] [--sparsities 0.8,0.9,0.95]
                                                 before the search: multiply-adds per layer
                                                 of the config's model, and where each
                                                 sparsity can make it faster on this machine

The package's own errors (bad input, damaged files, refused exports) print as one line
and exit with 2; an error raised in the config's own model or dataset function too, with
the traceback of that code; errors of the operating system (a full or read-only disk) with
1, Ctrl-C with 130, each saying what is safe and how to go on. Anything else is a bug and
prints its traceback, as every error does with ``--traceback``. TensorFlow's C++ start-up
log is quieted (see :func:`tf_lottery.cli.main`) unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tf_lottery.cli.config import RunConfig
from tf_lottery.export import (
    CALIBRATION_SAMPLES,
    FORMATS,
    GRANULARITIES,
    QUANTIZE,
    SPARSITIES,
    cost_estimate,
    export_model,
)
from tf_lottery.export.shrink import shrink, shrink_summary
from tf_lottery.export.xnnpack_target import TARGETS
from tf_lottery.foundations.errors import (
    ConfigError,
    NotARunDirectoryError,
    TfLotteryError,
    UserCodeError,
)
from tf_lottery.foundations.interrupts import interruptible
from tf_lottery.runs.results import SearchResult
from tf_lottery.runs.rundir import RunDirectory
from tf_lottery.search.inputs import as_arrays
from tf_lottery.search.instability import instability

_VERIFICATION_SAMPLES = 10_000  # test examples an export of a run is verified on

# What is safe after a failure of each command but run, and how to go on.
_AFTERMATH = {
    "report": "The run directory was not changed.",
    "export": "Nothing was written.",
    "instability": "Measured repetitions are safe; run the same command again to resume.",
    "estimate": "Nothing was written.",
}


def _aftermath(args) -> str:
    """What is safe after the command ``args`` describes failed or was interrupted, and how
    to go on."""
    if args.command != "run":
        return _AFTERMATH[args.command]
    run = getattr(args, "run_directory", None)  # of a run whose config was read
    if run is None or not run.path.is_dir():
        return "Nothing was written."
    try:
        committed = any(run.completed_rounds(trial) for trial in run.trials()
                        if args.trial in (None, trial))
    except OSError:  # the directory cannot be read either
        committed = False
    if committed:
        return "Committed rounds are safe; run the same command again to resume."
    return ("No round was committed yet; run the same command again to resume from the last "
            "saved epoch, if any.")


def _run(args) -> None:
    config = RunConfig.load(args.config, args.overrides)
    args.run_directory = RunDirectory(config.run_dir)
    data = config.data()
    config.search(data).run(data.train, data.validation, data.test,
                            keep={RunConfig.RECORD: config.to_yaml()}, trial=args.trial)


def _instability(args) -> None:
    config = RunConfig.load(args.config, args.overrides)
    data = config.data()
    result = instability(config.search(data), data.train, data.validation, data.test,
                         rewind_steps=args.rewind_steps, rounds=args.rounds,
                         repetitions=args.repetitions, points=args.points, trial=args.trial)
    print(result.table())
    print(f"results: {RunDirectory(config.run_dir).instability_dir()}", flush=True)


def _estimate(args) -> None:
    config = RunConfig.load(args.config, args.overrides)
    model = config.first_model(config.data())
    print(cost_estimate(model, args.granularity, args.sparsities))


def _comma_separated(convert, what: str):
    """An argparse type reading ``"0,100,500"`` as a tuple of ``convert``'s values."""
    def parse(text: str) -> tuple:
        try:
            return tuple(convert(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} separated by commas, got "
                                             f"{text!r}") from None
    return parse


_whole_numbers = _comma_separated(int, "whole numbers")
_fractions = _comma_separated(float, "fractions (e.g. 0.8,0.9,0.95)")


def _export(args) -> None:
    options = {}
    if args.quantize != "none" or args.dense:
        options = {"quantize": None if args.quantize == "none" else args.quantize,
                   "sparse": not args.dense}
    if args.target:
        options["target"] = args.target
    FORMATS[args.format].refuse_unknown(options)  # what the format does not take, first
    run = RunDirectory(args.run_dir)
    recorded = run.path / RunConfig.RECORD
    # the recorded config imports the user's model module (its layers' classes) and data
    config = RunConfig.load(recorded) if recorded.is_file() else None
    data = config.data(strict=False) if config else None
    ticket, round_index = run.ticket(args.trial, args.round,
                                     build=config and config.rebuilder(data, args.trial))
    if options.get("quantize") == "int8":
        if data is None:
            raise ConfigError(
                f"--quantize int8 calibrates on the run's training data, and {recorded} "
                "(written by tf-lottery run) is not there to load it from: export this run "
                "from Python, with tfl.export_tflite(ticket, quantize='int8', "
                "representative_data=x_train[:500])")
        options["representative_data"] = as_arrays(data.train, CALIBRATION_SAMPLES)[0]
    if data is None:
        print(f"{recorded} not found: verifying on random inputs, without accuracy")
    print(f"exporting trial {args.trial}, round {round_index}: {ticket.name}, as {args.format}"
          + (f", calibrated on {len(options['representative_data'])} training inputs"
             if "representative_data" in options else ""))
    test = as_arrays(data.test, _VERIFICATION_SAMPLES) if data else None
    if args.shrink:
        options["dense_reference"], ticket = ticket, shrink(ticket)
        print("shrunk to " + ", ".join(
            f"{name} {before} -> {after}" for name, (before, after)
            in shrink_summary(options["dense_reference"], ticket).items() if before != after)
            + f" channels ({ticket.count_params():,} parameters, "
            f"{options['dense_reference'].count_params():,} before)")
    export_model(ticket, args.format, args.output, test_data=test, **options)


def _report(args) -> None:
    if len(args.run_dirs) == 1:
        result = SearchResult.load(args.run_dirs[0])
        notes = result.in_progress()
    elif args.output is None:
        raise ConfigError("several run directories merge into a new folder: give --output DIR")
    else:
        result, notes = SearchResult.merged(args.run_dirs)
    output = args.output or args.run_dirs[0]
    for note in notes:
        print(note)
    if not result.records:
        raise NotARunDirectoryError(f"{', '.join(args.run_dirs)}: no completed round yet")
    print(result.table())
    try:
        Path(output).mkdir(parents=True, exist_ok=True)
        paths = result.save(output)
    except OSError as error:
        print(f"results not written ({error.strerror or error}): {output} is not "
              "writable; the table above is the report")
        return
    print(f"results: {', '.join(str(path) for path in paths.values())}")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="tf-lottery", description=__doc__.splitlines()[0])
    main.add_argument("--traceback", action="store_true",
                      help="print the full traceback of any error")
    main.add_argument("--verbose", action="store_true",
                      help="keep TensorFlow's C++ start-up log (oneDNN, CUDA, XLA notices), "
                           "which the command quiets unless TF_CPP_MIN_LOG_LEVEL is set")
    commands = main.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run or resume the search a YAML config describes")
    run.add_argument("config", help="a YAML file of config keys (see examples/*.yaml)")
    run.add_argument("overrides", nargs="*", metavar="key=value",
                     help="config keys to override, values in YAML syntax")
    run.add_argument("--trial", type=int, default=None,
                     help="run only this trial (0-based); processes may run different "
                          "trials into one run directory at once")
    run.set_defaults(handler=_run)
    report = commands.add_parser(
        "report", help="results table and plot of a run directory, or of the complete "
                       "trials of several (merged, with the spread over trials)")
    report.add_argument("run_dirs", nargs="+", metavar="DIR",
                        help="run directories, or folders an earlier report wrote")
    report.add_argument("--output", default=None,
                        help="where results.csv/json and plot.png go (default: the run "
                             "directory; required to merge several)")
    report.set_defaults(handler=_report)
    export_ = commands.add_parser("export", help="export a round's ticket, verified")
    export_.add_argument("run_dir")
    export_.add_argument("--round", type=int, default=None,
                         help="the round to export (default: the last one, of a finished "
                              "run)")
    export_.add_argument("--trial", type=int, default=0)
    export_.add_argument("--format", choices=list(FORMATS), default="tflite")
    export_.add_argument("--quantize", choices=["none", *(q for q in QUANTIZE if q)],
                         default="none",
                         help="TFLite only: float32, dynamic-range or full-integer int8")
    export_.add_argument("--dense", action="store_true",
                         help="TFLite only: store the weights dense (int8 of unstructured "
                              "tickets needs it)")
    export_.add_argument("--target", choices=[t for t in TARGETS if t], default=None,
                         help="TFLite only: check the file meets XNNPACK's sparse inference "
                              "conditions (faster on ARM devices; not measurable on x86)")
    export_.add_argument("--shrink", action="store_true",
                         help="remove the pruned channels of a channel ticket "
                              "(granularity: channel) first: a smaller, faster network, "
                              "timed against the full-size one")
    export_.add_argument("--output", default=None,
                         help="a path that does not exist yet (default under saved_models/ "
                              "in the working directory)")
    export_.set_defaults(handler=_export)
    unstable = commands.add_parser(
        "instability", help="error barriers between copies trained from rewind steps "
                            "(linear mode connectivity), for the dense network and tickets")
    unstable.add_argument("config", help="the search's YAML config (its run directory holds "
                                         "the tickets of --rounds)")
    unstable.add_argument("overrides", nargs="*", metavar="key=value",
                          help="config keys to override, as for run")
    unstable.add_argument("--rewind-steps", type=_whole_numbers, default=(0,),
                          help="steps the copies start from, e.g. 0,100,500,2000")
    unstable.add_argument("--rounds", type=_whole_numbers, default=(0,),
                          help="0 (the dense network) and rounds whose tickets to analyse")
    unstable.add_argument("--repetitions", type=int, default=2)
    unstable.add_argument("--points", type=int, default=11,
                          help="evaluation points on the path between the copies")
    unstable.add_argument("--trial", type=int, default=0)
    unstable.set_defaults(handler=_instability)
    estimate = commands.add_parser(
        "estimate", help="multiply-adds per layer of the config's model and where each "
                         "granularity of sparsity can make it faster on this machine")
    estimate.add_argument("config", help="a YAML config (its model and data are built)")
    estimate.add_argument("overrides", nargs="*", metavar="key=value",
                          help="config keys to override, as for run")
    estimate.add_argument("--granularity", choices=GRANULARITIES, default=None,
                          help="one granularity (default: all)")
    estimate.add_argument("--sparsities", type=_fractions, default=SPARSITIES,
                          help="fractions of weights pruned, e.g. 0.8,0.9,0.95")
    estimate.set_defaults(handler=_estimate)
    return main


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    prefix = f"tf-lottery {args.command}"
    try:
        with interruptible():
            args.handler(args)
    except KeyboardInterrupt:
        if args.traceback:
            raise
        print(f"\n{prefix}: interrupted. {_aftermath(args)}", file=sys.stderr)
        return 130
    except TfLotteryError as error:
        if args.traceback:
            raise
        print(f"{prefix}: error: {error}", file=sys.stderr)
        if isinstance(error, UserCodeError) and error.frames:
            print(f"Traceback of your code (most recent call last):\n{error.frames}", end="",
                  file=sys.stderr)
        return 2
    except OSError as error:  # a full or read-only disk, a lock that is a directory, ...
        if args.traceback:
            raise
        where = f" {error.filename}" if error.filename else ""
        print(f"{prefix}: error: the operating system refused{where}: "
              f"{error.strerror or error}. {_aftermath(args)}", file=sys.stderr)
        return 1
    return 0
