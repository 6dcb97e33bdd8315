"""Search results: one record per trial, round and variant; table, CSV, JSON and the plot."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from pathlib import Path
from typing import Optional

import numpy as np

from tf_lottery.foundations.atomic import replacing
from tf_lottery.core.controls import CONTROLS
from tf_lottery.foundations.errors import NotARunDirectoryError, RunDirectoryError
from tf_lottery.foundations.atomic import read_json, write_atomic, write_json
from tf_lottery.runs.rundir import (
    RunDirectory,
    config_differences,
    planned_rounds,
    rounds_committed,
)

VARIANTS = ("ticket", *CONTROLS)
_RESULTS_JSON = "results.json"
_PAPER_LEVELS = (100, 51.3, 21.1, 7.0, 3.6, 1.9)  # % of weights in the paper's figure 3
_LABELS = {"ticket": "winning ticket", **{name: c.label for name, c in CONTROLS.items()}}


@dataclasses.dataclass(frozen=True)
class RoundRecord:
    """What one training of one variant reached in one round of one trial.

    ``early_stop_iteration`` is the evaluation step where ``monitor`` was best (minimum
    validation loss by default); ``val_metrics`` and ``test_metrics`` hold every compiled
    metric there (keyed by Keras's names: ``loss``, ``accuracy``, ``mae``, ...), and
    ``final_test_metrics`` at the end of the training. ``val_loss``, ``val_accuracy``,
    ``test_accuracy`` and ``final_test_accuracy`` repeat the paper's numbers (the
    accuracies None for a model without an accuracy metric).
    """

    trial: int
    round: int
    variant: str
    weights_remaining: float
    layer_weights_remaining: dict
    early_stop_iteration: int
    val_loss: float
    val_accuracy: Optional[float]
    test_accuracy: Optional[float]
    final_test_accuracy: Optional[float]
    wall_time: float
    monitor: str = "val_loss"
    val_metrics: dict = dataclasses.field(default_factory=dict)
    test_metrics: dict = dataclasses.field(default_factory=dict)
    final_test_metrics: dict = dataclasses.field(default_factory=dict)
    mask_drawn_at: Optional[int] = None     # early_bird: the iteration the training ended at
    iterations_saved: Optional[int] = None  # and the iterations of the round it did not train

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def metric(self, name: str, final: bool = False) -> Optional[float]:
        """The test value of metric ``name`` at early stop (or at the end, ``final``)."""
        metrics = self.final_test_metrics if final else self.test_metrics
        if name in metrics:
            return metrics[name]
        if name == "accuracy":  # records written before metrics were kept per set
            return self.final_test_accuracy if final else self.test_accuracy
        return None


_FIXED_FIELDS = ["trial", "round", "variant", "weights_remaining", "early_stop_iteration",
                 "monitor", "wall_time"]


class SearchResult:
    """The records of a search, read as rows; ``table()``, ``save(run_dir)``, ``plot(path)``.

    Example::

        result = tfl.SearchResult.load("runs/lenet")
        print(result.table())
        [r for r in result.records if r.variant == "ticket" and r.round == 7]
    """

    def __init__(self, records, curves=None, config=None):
        self.records = sorted(records, key=lambda r: (r.trial, r.round, VARIANTS.index(r.variant)))
        # (trial, round, variant) -> the training's evaluations: iteration, val_*, test_*
        self.curves = dict(curves or {})
        self.config = config  # the search's config.json, where known

    @classmethod
    def merged(cls, paths) -> tuple[SearchResult, list[str]]:
        """The complete trials of several run directories of one search (each run with
        ``--trial K``, say on its own machine), checksums checked, or of results folders a
        report wrote (``save``: the small results, without the weights); and a note for
        each trial left out because it is not complete. Trials of different searches, or
        the same trial twice, are refused."""
        sources = [_source(path) for path in paths]
        configs = [source.config() for source in sources]
        for source, config in zip(sources[1:], configs[1:]):
            differences = config_differences(configs[0], config)
            if differences:
                raise RunDirectoryError(
                    f"{source.path} holds another search than {sources[0].path}; only trials "
                    "of one config merge. Differences:\n  " + "\n  ".join(differences))
        rounds = planned_rounds(configs[0])
        notes, owner = [], {}
        for source in sources:
            for trial in source.trials():
                done = source.completed_rounds(trial)
                if done < rounds:
                    notes.append(f"{source.path}, trial {trial}: {done} of {rounds} rounds, "
                                 "left out")
                    continue
                if trial in owner:
                    raise RunDirectoryError(f"trial {trial} is complete in both "
                                            f"{owner[trial].path} and {source.path}; merge "
                                            "one of them")
                owner[trial] = source
        records, curves = _read_trials(owner.items())
        without = sorted(t for t in owner if not any(key[0] == t for key in curves))
        if without and len(without) < len(owner):
            which = (f"trial {without[0]}: no learning curves in its" if len(without) == 1 else
                     f"trials {', '.join(map(str, without))}: no learning curves in their")
            notes.append(f"{which} results folder; curves.png shows the other trials")
        return cls(records, curves, configs[0]), notes

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True) -> SearchResult:
        """The committed rounds of a finished or partial search, checksums checked first
        (a running search, which checked them at its start, passes ``verify=False``); or
        the records of a results folder (``save``)."""
        source = _source(path, verify)
        records, curves = _read_trials((trial, source) for trial in source.trials())
        return cls(records, curves, source.config())

    def in_progress(self) -> list[str]:
        """A line for each trial of the search that has not committed all its rounds (a run
        in progress, or stopped): ``"trial 1 in progress: rounds 0-2 of 8 committed"``, or
        ``"trial 2: no round of 8 committed"`` (not started, or run elsewhere)."""
        if not self.config:
            return []
        planned = planned_rounds(self.config)
        done = {trial: 0 for trial in range(self.config["trials"])}
        for record in self.records:
            done[record.trial] = max(done.get(record.trial, 0), record.round + 1)
        return [f"trial {trial}{' in progress' if count else ''}: "
                f"{rounds_committed(count, planned)}"
                for trial, count in sorted(done.items()) if count < planned]

    @property
    def metric(self) -> str:
        """The test metric tables and plots show: accuracy where every record has one (the
        paper's), else the monitored metric (``"mae"`` for ``monitor="val_mae"``)."""
        if all(r.metric("accuracy") is not None for r in self.records):
            return "accuracy"
        return self.records[0].monitor.split("_", 1)[1]

    def summary(self) -> list[dict]:
        """Per round and variant: weights remaining, and the mean/min/max over trials of the
        test metric at early stop, the early-stop iteration and the final test metric."""
        metric = self.metric
        groups = {}
        for record in self.records:
            groups.setdefault((record.round, record.variant), []).append(record)
        rows = []
        for (round_index, variant), group in sorted(
                groups.items(), key=lambda kv: (kv[0][0], VARIANTS.index(kv[0][1]))):
            row = {"round": round_index, "variant": variant, "trials": len(group),
                   "weights_remaining": float(np.mean([r.weights_remaining for r in group]))}
            for name, values in ((f"test_{metric}", [r.metric(metric) for r in group]),
                                 ("early_stop_iteration",
                                  [r.early_stop_iteration for r in group]),
                                 (f"final_test_{metric}",
                                  [r.metric(metric, final=True) for r in group])):
                row[name] = float(np.mean(values))
                row[f"{name}_min"], row[f"{name}_max"] = float(min(values)), float(max(values))
            rows.append(row)
        return rows

    def table(self) -> str:
        """A text table: per round and variant, means over trials."""
        metric = self.metric
        short = {"accuracy": "acc"}.get(metric, metric)
        early, final = f"test {short} @ early stop", f"final test {short}"
        rows = self.summary()
        spread = any(row["trials"] > 1 for row in rows)  # min-max over trials, as error bars
        lines = [f"{'round':>5}  {'variant':<15} {'weights':>8}  {early:>21}  "
                 + ("    min - max of trials  " if spread else "")
                 + f"{'early stop it.':>14}  {final:>14}  trials"]
        for row in rows:
            low, high = row[f"test_{metric}_min"], row[f"test_{metric}_max"]
            lines.append(
                f"{row['round']:>5}  {row['variant']:<15} {row['weights_remaining']:>8.2%}  "
                f"{row[f'test_{metric}']:>21.4f}  "
                + (f"{low:>11.4f} - {high:<11.4f} " if spread else "")
                + f"{row['early_stop_iteration']:>14.0f}  "
                f"{row[f'final_test_{metric}']:>14.4f}  {row['trials']:>6}")
        return "\n".join(lines)

    def rows(self) -> list[dict]:
        """One flat row per record: its fields and every metric as ``val_<name>``,
        ``test_<name>`` and ``final_test_<name>`` (and, for a ticket ended early by
        ``early_bird``, ``mask_drawn_at`` and ``iterations_saved``)."""
        rows = []
        for record in self.records:
            row = {name: getattr(record, name) for name in _FIXED_FIELDS}
            for prefix, metrics in (("val", record.val_metrics), ("test", record.test_metrics),
                                    ("final_test", record.final_test_metrics)):
                row.update({f"{prefix}_{key}": value for key, value in metrics.items()})
            for name in ("val_loss", "val_accuracy", "test_accuracy", "final_test_accuracy",
                         "mask_drawn_at", "iterations_saved"):
                if getattr(record, name) is not None:
                    row.setdefault(name, getattr(record, name))
            rows.append(row)
        return rows

    def to_csv(self) -> str:
        rows = self.rows()
        metrics = sorted({key for row in rows for key in row if key not in _FIXED_FIELDS})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=_FIXED_FIELDS + metrics, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def save(self, directory: str | os.PathLike) -> dict:
        """Write results.csv, results.json and plot.png (atomically); return their paths."""
        directory = Path(directory)
        paths = {"csv": directory / "results.csv", "json": directory / _RESULTS_JSON,
                 "plot": directory / "plot.png", "curves": directory / "curves.png"}
        write_atomic(paths["csv"], self.to_csv())
        write_json(paths["json"], {"config": self.config,
                                   "records": [r.to_dict() for r in self.records],
                                   "summary": self.summary()})
        with replacing(paths["plot"]) as staged:
            staged.write_bytes(self.plot_png())
        if self.curves:  # a results folder read back has none: its curves.png stays
            with replacing(paths["curves"]) as staged:
                staged.write_bytes(self.curves_png())
        else:
            del paths["curves"]
        return paths

    def plot_png(self) -> bytes:
        """The paper's figure as PNG: the test metric (accuracy) at early stop and the
        early-stop iteration against percent of weights remaining (log scale, decreasing),
        trial spread as bars."""
        from matplotlib import ticker

        plt = pyplot()

        figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        summary = self.summary()
        metric = self.metric
        percent = metric == "accuracy"
        for variant in VARIANTS:
            rows = [r for r in summary if r["variant"] == variant]
            if not rows:
                continue
            x = [100 * r["weights_remaining"] for r in rows]
            for axis, name, scale in ((axes[0], f"test_{metric}", 100 if percent else 1),
                                      (axes[1], "early_stop_iteration", 1)):
                mean = np.array([r[name] for r in rows]) * scale
                low = mean - np.array([r[f"{name}_min"] for r in rows]) * scale
                high = np.array([r[f"{name}_max"] for r in rows]) * scale - mean
                axis.errorbar(x, mean, yerr=[low, high], marker="o", markersize=4, capsize=3,
                              label=_LABELS[variant])
        ticks = sorted({round(100 * r["weights_remaining"], 1) for r in summary}, reverse=True)
        for axis, label in ((axes[0], f"test {metric} at early stop{' (%)' if percent else ''}"),
                            (axes[1], "early-stop iteration")):
            axis.set_xscale("log")
            axis.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=8,
                            rotation=90 if len(ticks) > 10 else 0)  # many levels: no overlap
            axis.xaxis.set_minor_locator(ticker.NullLocator())
            axis.invert_xaxis()
            axis.set_xlabel("percent of weights remaining")
            axis.set_ylabel(label)
            axis.grid(True, which="both", alpha=0.3)
            axis.legend()
        figure.tight_layout()
        return png_bytes(figure, dpi=110)

    def curve_levels(self) -> dict:
        """The rounds whose curves the figure shows: for each of the paper's figure-3 levels
        (100, 51.3, 21.1, 7.0, 3.6, 1.9% of weights), the round closest to it (within 20%)."""
        remaining = {r.round: 100 * r.weights_remaining for r in self.records
                     if r.variant == "ticket"}
        chosen = {}
        for target in _PAPER_LEVELS:
            if not remaining:
                break
            round_index = min(remaining, key=lambda r: abs(np.log(remaining[r] / target)))
            if abs(remaining[round_index] / target - 1) <= 0.2:
                chosen[round_index] = remaining[round_index]
        return dict(sorted(chosen.items()))

    def curves_png(self) -> bytes:
        """The paper's figure 3 as PNG: the test metric against training iterations, one
        line per sparsity level (mean over trials), a panel each for the ticket and the
        controls."""
        plt = pyplot()
        metric, levels = self.metric, self.curve_levels()
        variants = [v for v in VARIANTS if any(key[2] == v for key in self.curves)]
        figure, axes = plt.subplots(1, max(1, len(variants)), sharey=True,
                                    figsize=(4.2 * max(1, len(variants)), 3.8), squeeze=False)
        percent = 100 if metric == "accuracy" else 1
        for axis, variant in zip(axes[0], variants):
            for color, (round_index, weights) in enumerate(levels.items()):
                runs = [curve for (trial, r, v), curve in sorted(self.curves.items())
                        if r == round_index and v == variant]
                if not runs:
                    continue
                length = min(len(run) for run in runs)
                iterations = [point["iteration"] for point in runs[0][:length]]
                values = np.mean([[point[f"test_{metric}"] * percent for point in run[:length]]
                                  for run in runs], axis=0)
                axis.plot(iterations, values, label=f"{weights:.1f}%", color=f"C{color}")
            axis.set_title(_LABELS[variant])
            axis.set_xlabel("training iterations")
            axis.grid(True, alpha=0.3)
            if axis.lines:
                axis.legend(title="weights remaining", fontsize=8)
        axes[0][0].set_ylabel(f"test {metric}{' (%)' if percent == 100 else ''}")
        figure.tight_layout()
        return png_bytes(figure, dpi=100)


class _RunRecords:
    """The committed rounds of a run directory, as ``SearchResult`` reads them."""

    def __init__(self, run: RunDirectory, verify: bool):
        self.run = run
        if verify:
            run.verify()

    @property
    def path(self) -> Path:
        return self.run.path

    def config(self) -> dict:
        return self.run.config()

    def trials(self) -> list[int]:
        return self.run.trials()

    def completed_rounds(self, trial: int) -> int:
        return self.run.completed_rounds(trial)

    def read_trial(self, trial: int) -> tuple[list, dict]:
        """The records and learning curves of ``trial``'s committed rounds."""
        records, curves = [], {}
        for round_index in range(self.run.completed_rounds(trial)):
            metrics = read_json(self.run.round_files(trial, round_index).metrics())
            records += [RoundRecord(**row) for row in metrics["records"]]
            curves.update({(trial, round_index, variant): curve
                           for variant, curve in metrics.get("curves", {}).items()})
        return records, curves


class _SavedRecords:
    """The results.json of a results folder (``SearchResult.save``): the records of its
    trials and the config of their search, without weights or learning curves."""

    def __init__(self, path: Path):
        self.path = path
        saved = read_json(path / _RESULTS_JSON)
        if not saved.get("config"):
            raise RunDirectoryError(
                f"{path / _RESULTS_JSON} does not record the config of its search (reports "
                "written before tf_lottery recorded it), so its trials cannot be checked "
                "against others. Report its run directory again: tf-lottery report RUN_DIR")
        self._config = saved["config"]
        self._records = [RoundRecord(**row) for row in saved["records"]]

    def config(self) -> dict:
        return self._config

    def trials(self) -> list[int]:
        return sorted({record.trial for record in self._records})

    def completed_rounds(self, trial: int) -> int:
        return len({record.round for record in self._records if record.trial == trial})

    def read_trial(self, trial: int) -> tuple[list, dict]:
        return [record for record in self._records if record.trial == trial], {}


def _source(path: str | os.PathLike, verify: bool = True):
    """The records in ``path``: a run directory (its committed rounds) or a results folder."""
    run = RunDirectory(path)
    if (run.path / run.CONFIG).is_file():
        return _RunRecords(run, verify)
    if (run.path / _RESULTS_JSON).is_file():
        return _SavedRecords(run.path)
    raise NotARunDirectoryError(f"{run.path} is not a tf_lottery run directory (it has no "
                                f"{run.CONFIG}) nor a results folder (no {_RESULTS_JSON})")


def _read_trials(sources) -> tuple[list, dict]:
    """The records and learning curves of the (trial, source) pairs ``sources``."""
    records, curves = [], {}
    for trial, source in sources:
        trial_records, trial_curves = source.read_trial(trial)
        records += trial_records
        curves.update(trial_curves)
    return records, curves


def pyplot():
    """matplotlib's pyplot, drawing to files (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot
    return pyplot


def png_bytes(figure, dpi: int) -> bytes:
    """``figure`` as PNG, closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(figure)
    return buffer.getvalue()
