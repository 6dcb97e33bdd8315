"""RunConfig: a search described in YAML, as the ``tf-lottery run`` command reads it.

Example (``examples/lenet_mnist_quick.yaml``)::

    run_dir: runs/lenet_mnist_quick
    model: lenet_300_100
    dataset: mnist
    rounds: 7
    steps_per_round: 1500
    layer_rates: {output: 0.1}

Any key can be overridden on the command line: ``tf-lottery run CONFIG rounds=3 seed=1``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Optional, Union

import tensorflow as tf
import yaml

from tf_lottery._compat import keras
from tf_lottery.data import load_dataset
from tf_lottery.models import build
from tf_lottery.schedule import RewindingSchedule
from tf_lottery.search import CONTROLS, LotteryTicketSearch


class ConfigError(ValueError):
    """A config file or override that cannot describe a search."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of a search; defaults follow the paper's Lenet protocol."""

    run_dir: str
    model: str = "lenet_300_100"
    dataset: str = "mnist"
    data_dir: Optional[str] = None
    validation_size: int = 5000
    train_size: Optional[int] = None
    test_size: Optional[int] = None
    rounds: int = 18
    steps_per_round: int = 50_000
    prune_rate: float = 0.2
    layer_rates: dict = dataclasses.field(default_factory=dict)
    rewind_to: Union[int, str, None] = 0
    scope: str = "layer"
    criterion: str = "magnitude"
    block_size: int = 1
    exclude: tuple = ()
    controls: tuple = CONTROLS
    trials: int = 1
    seed: int = 0
    optimizer: str = "adam"
    learning_rate: float = 1.2e-3
    batch_size: int = 60
    eval_every: int = 100
    verbose: int = 1
    strategy: Optional[str] = None  # "mirrored" (the devices of this machine) or "multi_worker"

    RECORD = "run_config.yaml"  # the config a run directory was started with, for export

    @classmethod
    def from_dict(cls, values: dict, source: str = "the config") -> "RunConfig":
        names = [field.name for field in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown config key {key!r} in {source}.{hint} "
                                  f"Known keys: {', '.join(names)}")
        if "run_dir" not in values:
            raise ConfigError(f"{source} has no run_dir: say where the search is written")
        values = dict(values)
        for key in ("exclude", "controls"):
            if key in values:
                values[key] = tuple(values[key] or ())
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike, overrides=()) -> "RunConfig":
        """Read a YAML config and apply ``key=value`` overrides (values parsed as YAML)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from error
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys")
        for override in overrides:
            key, sep, text = override.partition("=")
            if not sep or not key:
                raise ConfigError(f"override {override!r} is not of the form key=value")
            values[key.strip()] = yaml.safe_load(text)
        return cls.from_dict(values, source=str(path))

    def to_yaml(self) -> str:
        values = {key: list(value) if isinstance(value, tuple) else value
                  for key, value in dataclasses.asdict(self).items()}
        return yaml.safe_dump(values, sort_keys=False)

    def schedule(self) -> RewindingSchedule:
        return RewindingSchedule(rounds=self.rounds, steps_per_round=self.steps_per_round,
                                 prune_rate=self.prune_rate, layer_rates=self.layer_rates)

    def splits(self):
        """The dataset, split and sliced as configured."""
        splits = load_dataset(self.dataset, self.data_dir, self.validation_size,
                              self.train_size, seed=0)
        if self.test_size is not None:
            x, y = splits.test
            splits = dataclasses.replace(splits, test=(x[:self.test_size], y[:self.test_size]))
        return splits

    def search(self, splits) -> LotteryTicketSearch:
        """The LotteryTicketSearch this config describes, for data shaped like ``splits``."""
        try:
            optimizer = keras.optimizers.get(
                {"class_name": self.optimizer, "config": {"learning_rate": self.learning_rate}})
        except ValueError as error:
            raise ConfigError(f"optimizer {self.optimizer!r} is not a tf_keras optimizer "
                              f"({error})") from error
        return LotteryTicketSearch(
            lambda seed: build(self.model, splits.input_shape, splits.classes, seed=seed),
            self.schedule(), self.run_dir, rewind_to=self.rewind_to, scope=self.scope,
            criterion=self.criterion, block_size=self.block_size, exclude=self.exclude,
            controls=self.controls, trials=self.trials, seed=self.seed, optimizer=optimizer,
            batch_size=self.batch_size, eval_every=self.eval_every, verbose=self.verbose,
            strategy=self.distribution())

    def distribution(self):
        """The tf.distribute strategy the ``strategy`` key names (None: TensorFlow's default)."""
        strategies = {None: lambda: None, "mirrored": tf.distribute.MirroredStrategy,
                      "multi_worker": tf.distribute.MultiWorkerMirroredStrategy}
        if self.strategy not in strategies:
            raise ConfigError(f"strategy must be one of {list(strategies)}, got "
                              f"{self.strategy!r}")
        return strategies[self.strategy]()
