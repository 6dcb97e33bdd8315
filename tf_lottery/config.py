"""RunConfig: a search described in YAML, as the ``tf-lottery run`` command reads it.

Example (``examples/lenet_mnist_quick.yaml``)::

    run_dir: runs/lenet_mnist_quick
    model: lenet_300_100
    dataset: mnist
    rounds: 7
    steps_per_round: 1500
    layer_rates: {output: 0.1}

Any key can be overridden on the command line: ``tf-lottery run CONFIG rounds=3 seed=1``.
Every value is checked when the config is read, before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional, Union

import tensorflow as tf
import yaml

from tf_lottery.checks import did_you_mean, one_of, positive_number, whole_number
from tf_lottery.controls import CONTROLS
from tf_lottery.data import DATASETS, load_dataset
from tf_lottery.errors import ConfigError, TfLotteryError
from tf_lottery.models import KERAS_MODULES, MODELS, build, keras_module
from tf_lottery.schedule import RewindingSchedule
from tf_lottery.search import LotteryTicketSearch
from tf_lottery.settings import ImpSettings

STRATEGIES = {None: lambda: None, "mirrored": tf.distribute.MirroredStrategy,
              "multi_worker": tf.distribute.MultiWorkerMirroredStrategy}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of a search; defaults follow the paper's Lenet protocol.

    The IMP settings (``rewind_to`` to ``seed``) are :class:`~tf_lottery.ImpSettings`'
    fields, the schedule keys :class:`~tf_lottery.RewindingSchedule`'s; ``keras`` picks the
    Keras the built-in models are built with (2: tf_keras and TF-MOT, 3: Keras 3).
    """

    run_dir: str
    model: str = "lenet_300_100"
    keras: int = 2
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
    prunable: tuple = ()
    seed: int = 0
    controls: tuple = tuple(CONTROLS)
    trials: int = 1
    optimizer: str = "adam"
    learning_rate: float = 1.2e-3
    batch_size: int = 60
    eval_every: int = 100
    verbose: int = 1
    strategy: Optional[str] = None  # "mirrored" (the devices of this machine) or "multi_worker"

    RECORD = "run_config.yaml"  # the config a run directory was started with, for export

    def __post_init__(self):
        try:
            self._check()
        except ConfigError:
            raise
        except TfLotteryError as error:  # a refused value: the config's to fix
            raise ConfigError(str(error)) from error

    def _check(self) -> None:
        if not isinstance(self.run_dir, (str, os.PathLike)) or not str(self.run_dir):
            raise ConfigError(f"run_dir must be a path, got {self.run_dir!r}")
        if Path(self.run_dir).exists() and not Path(self.run_dir).is_dir():
            raise ConfigError(f"run_dir {self.run_dir} is a file, not a directory; choose a "
                              "directory for the search's files")
        one_of(self.keras, "keras", KERAS_MODULES)
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}.{did_you_mean(self.model, MODELS)}"
                              f" Known: {', '.join(MODELS)}")
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}."
                              f"{did_you_mean(self.dataset, DATASETS)} Known: "
                              f"{', '.join(DATASETS)}")
        whole_number(self.validation_size, "validation_size")
        for key in ("train_size", "test_size"):
            if getattr(self, key) is not None:
                whole_number(getattr(self, key), key)
        self.schedule()
        self.settings()
        for control in self.controls:
            one_of(control, "controls", CONTROLS)
        for key in ("trials", "batch_size", "eval_every"):
            whole_number(getattr(self, key), key)
        whole_number(self.verbose, "verbose", minimum=0)
        positive_number(self.learning_rate, "learning_rate")
        self.make_optimizer()
        one_of(self.strategy, "strategy", STRATEGIES)

    @classmethod
    def from_dict(cls, values: dict, source: str = "the config") -> RunConfig:
        names = [field.name for field in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                raise ConfigError(f"unknown config key {key!r} in {source}."
                                  f"{did_you_mean(key, names)} Known keys: {', '.join(names)}")
        if "run_dir" not in values:
            raise ConfigError(f"{source} has no run_dir: say where the search is written")
        values = dict(values)
        for key in ("exclude", "prunable", "controls"):
            if isinstance(values.get(key), str):  # `exclude: output` means one name
                values[key] = (values[key],)
            elif key in values:
                if not isinstance(values[key], (list, tuple, type(None))):
                    raise ConfigError(f"{key} must be a list of names, got {values[key]!r}")
                values[key] = tuple(values[key] or ())
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike, overrides=()) -> RunConfig:
        """Read a YAML config and apply ``key=value`` overrides (values parsed as YAML)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from error
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys")
        for override in overrides:
            key, sep, text = override.partition("=")
            if not sep or not key:
                raise ConfigError(f"override {override!r} is not of the form key=value")
            try:
                values[key.strip()] = yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise ConfigError(f"override {override!r} is not valid YAML: {error}") from error
        return cls.from_dict(values, source=str(path))

    def to_yaml(self) -> str:
        values = {key: list(value) if isinstance(value, tuple) else value
                  for key, value in dataclasses.asdict(self).items()}
        return yaml.safe_dump(values, sort_keys=False)

    def schedule(self) -> RewindingSchedule:
        return RewindingSchedule(rounds=self.rounds, steps_per_round=self.steps_per_round,
                                 prune_rate=self.prune_rate, layer_rates=self.layer_rates)

    def settings(self) -> ImpSettings:
        """The ImpSettings of this config, from the fields of the same names."""
        return ImpSettings(**{field.name: getattr(self, field.name)
                              for field in dataclasses.fields(ImpSettings)})

    def make_optimizer(self):
        """A new optimizer of the configured Keras, class and learning rate."""
        keras = keras_module(self.keras)
        try:
            return keras.optimizers.get(
                {"class_name": self.optimizer, "config": {"learning_rate": self.learning_rate}})
        except (ValueError, TypeError) as error:
            raise ConfigError(f"optimizer {self.optimizer!r} is not a {keras.__name__} "
                              f"optimizer ({error})") from error

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
        return LotteryTicketSearch(
            lambda seed: build(self.model, splits.input_shape, splits.classes, seed=seed,
                               keras=self.keras),
            self.schedule(), self.run_dir, controls=self.controls, trials=self.trials,
            optimizer=self.make_optimizer(), batch_size=self.batch_size,
            eval_every=self.eval_every, verbose=self.verbose, strategy=self.distribution(),
            **self.settings().to_config())

    def distribution(self):
        """The tf.distribute strategy the ``strategy`` key names (None: TensorFlow's default)."""
        return STRATEGIES[self.strategy]()
