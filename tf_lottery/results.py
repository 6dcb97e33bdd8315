"""Search results: one record per trial, round and variant; table, CSV, JSON and the plot."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from pathlib import Path

import numpy as np

from tf_lottery.atomic import replacing
from tf_lottery.controls import CONTROLS
from tf_lottery.errors import NotARunDirectoryError
from tf_lottery.rundir import RunDirectory, read_json, write_atomic, write_json

VARIANTS = ("ticket", *CONTROLS)
_LABELS = {"ticket": "winning ticket", **{name: c.label for name, c in CONTROLS.items()}}


@dataclasses.dataclass(frozen=True)
class RoundRecord:
    """What one training of one variant reached in one round of one trial.

    ``early_stop_iteration`` is the evaluation step of minimum validation loss; the
    validation and test numbers without ``final_`` are measured there.
    """

    trial: int
    round: int
    variant: str
    weights_remaining: float
    layer_weights_remaining: dict
    early_stop_iteration: int
    val_loss: float
    val_accuracy: float
    test_accuracy: float
    final_test_accuracy: float
    wall_time: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_CSV_FIELDS = [f.name for f in dataclasses.fields(RoundRecord)
               if f.name != "layer_weights_remaining"]


class SearchResult:
    """The records of a search, read as rows; ``table()``, ``save(run_dir)``, ``plot(path)``.

    Example::

        result = tfl.SearchResult.load("runs/lenet")
        print(result.table())
        [r for r in result.records if r.variant == "ticket" and r.round == 7]
    """

    def __init__(self, records):
        self.records = sorted(records, key=lambda r: (r.trial, r.round, VARIANTS.index(r.variant)))

    @classmethod
    def load(cls, run_dir: str | os.PathLike, verify: bool = True) -> SearchResult:
        """The committed rounds of a finished or partial search, checksums checked first
        (a running search, which checked them at its start, passes ``verify=False``)."""
        run = RunDirectory(run_dir)
        if not (run.path / run.CONFIG).is_file():
            raise NotARunDirectoryError(f"{run.path} is not a tf_lottery run directory "
                                        f"(it has no {run.CONFIG})")
        if verify:
            run.verify()
        records = []
        for trial in run.trials():
            for round_index in range(run.completed_rounds(trial)):
                metrics = read_json(run.round(trial, round_index) / "metrics.json")
                records += [RoundRecord(**row) for row in metrics["records"]]
        return cls(records)

    def summary(self) -> list[dict]:
        """Per round and variant: weights remaining and mean/min/max over trials."""
        groups = {}
        for record in self.records:
            groups.setdefault((record.round, record.variant), []).append(record)
        rows = []
        for (round_index, variant), group in sorted(
                groups.items(), key=lambda kv: (kv[0][0], VARIANTS.index(kv[0][1]))):
            row = {"round": round_index, "variant": variant, "trials": len(group),
                   "weights_remaining": float(np.mean([r.weights_remaining for r in group]))}
            for name in ("test_accuracy", "early_stop_iteration", "final_test_accuracy"):
                values = [getattr(r, name) for r in group]
                row[name] = float(np.mean(values))
                row[f"{name}_min"], row[f"{name}_max"] = float(min(values)), float(max(values))
            rows.append(row)
        return rows

    def table(self) -> str:
        """A text table: per round and variant, means over trials."""
        lines = [f"{'round':>5}  {'variant':<15} {'weights':>8}  {'test acc @ early stop':>21}  "
                 f"{'early stop it.':>14}  {'final test acc':>14}  trials"]
        for row in self.summary():
            lines.append(
                f"{row['round']:>5}  {row['variant']:<15} {row['weights_remaining']:>8.2%}  "
                f"{row['test_accuracy']:>21.4f}  {row['early_stop_iteration']:>14.0f}  "
                f"{row['final_test_accuracy']:>14.4f}  {row['trials']:>6}")
        return "\n".join(lines)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS, extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        for record in self.records:
            writer.writerow(record.to_dict())
        return buffer.getvalue()

    def save(self, directory: str | os.PathLike) -> dict:
        """Write results.csv, results.json and plot.png (atomically); return their paths."""
        directory = Path(directory)
        paths = {"csv": directory / "results.csv", "json": directory / "results.json",
                 "plot": directory / "plot.png"}
        write_atomic(paths["csv"], self.to_csv())
        write_json(paths["json"], {"records": [r.to_dict() for r in self.records],
                                   "summary": self.summary()})
        self.plot(paths["plot"])
        return paths

    def plot(self, path: str | os.PathLike) -> None:
        """Write :meth:`plot_png` to ``path`` atomically."""
        with replacing(path) as staged:
            staged.write_bytes(self.plot_png())

    def plot_png(self) -> bytes:
        """The paper's figure as PNG: test accuracy at early stop and early-stop iteration
        against percent of weights remaining (log scale, decreasing), trial spread as bars."""
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
        from matplotlib import ticker

        figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        summary = self.summary()
        for variant in VARIANTS:
            rows = [r for r in summary if r["variant"] == variant]
            if not rows:
                continue
            x = [100 * r["weights_remaining"] for r in rows]
            for axis, name, scale in ((axes[0], "test_accuracy", 100),
                                      (axes[1], "early_stop_iteration", 1)):
                mean = np.array([r[name] for r in rows]) * scale
                low = mean - np.array([r[f"{name}_min"] for r in rows]) * scale
                high = np.array([r[f"{name}_max"] for r in rows]) * scale - mean
                axis.errorbar(x, mean, yerr=[low, high], marker="o", markersize=4, capsize=3,
                              label=_LABELS[variant])
        ticks = sorted({round(100 * r["weights_remaining"], 1) for r in summary}, reverse=True)
        for axis, label in ((axes[0], "test accuracy at early stop (%)"),
                            (axes[1], "early-stop iteration")):
            axis.set_xscale("log")
            axis.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=8)
            axis.xaxis.set_minor_locator(ticker.NullLocator())
            axis.invert_xaxis()
            axis.set_xlabel("percent of weights remaining")
            axis.set_ylabel(label)
            axis.grid(True, which="both", alpha=0.3)
            axis.legend()
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        plt.close(figure)
        return buffer.getvalue()
