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

Your own model and data: ``model: my_models:build`` (a function of the trial's seed that
returns a built Keras model, importable from the config file's folder or the working
directory) or ``model: path/to/model.keras`` (its weights are trial 0's θ0; ``imports:
[my_layers]`` imports the modules that register its custom classes first); ``dataset:
my_data:load`` (a function returning ``(train, validation, test)``, each ``(x, y)`` arrays
or a ``tf.data.Dataset`` of ``(x, y)`` batches; it is given the run's ``seed`` if it takes
one, and those of ``train_size``, ``validation_size``, ``test_size`` the config sets: the
others keep the function's own defaults); ``loss``, ``metrics``, ``monitor`` and ``mode`` as
in :class:`~tf_lottery.LotteryTicketSearch`. An error raised inside your function is
reported as yours (a UserCodeError with the traceback of your frames).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import os
import re
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from tf_lottery.core.schedule import RewindingSchedule
from tf_lottery.core.settings import ImpSettings
from tf_lottery.engines import KERAS_VERSIONS, canonical_names, engine_named, keras_family
from tf_lottery.foundations.checks import did_you_mean, one_of, whole_number
from tf_lottery.foundations.declared import keys, split_options
from tf_lottery.foundations.errors import (
    ConfigError,
    DataError,
    TfLotteryError,
    UserCodeError,
    reason,
)
from tf_lottery.runs.serialization import saved_by
from tf_lottery.search.settings import SearchSettings
from tf_lottery.search.ticket_search import LotteryTicketSearch
from tf_lottery.zoo.data import DATASETS, Splits, load_dataset
from tf_lottery.zoo.models import MODELS, build

# the schedule the config runs unless it says otherwise: the paper's Lenet protocol
_PAPER_SCHEDULE = {"rounds": 18, "steps_per_round": 50_000}
_PARTS = (RewindingSchedule, ImpSettings, SearchSettings)  # declare the other keys
_SIZES = ("train_size", "validation_size", "test_size")  # unset (None): the data's own default


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of a search, from the YAML's flat keys; defaults follow the paper's
    Lenet protocol.

    Each key is declared once: the fields below (what to train on: ``model``, ``keras``,
    the data), :class:`~tf_lottery.RewindingSchedule`'s (``rounds`` to ``layer_rates``),
    :class:`~tf_lottery.ImpSettings`' (``rewind_to`` to ``seed``) and
    :class:`~tf_lottery.search.settings.SearchSettings`' (``controls`` to ``strategy``);
    each value is checked there. ``keras`` picks the Keras the built-in models are built
    with (2: tf_keras and TF-MOT, 3: Keras 3). ``config_dir`` (the config file's folder
    unless given) is where ``module:function`` specs and the ``imports`` modules (those that
    register a ``.keras`` model's custom classes) are imported from, besides the working
    directory. A size left unset (None) is the dataset's own default (the built-in
    datasets: 5,000 validation images, all the others).
    """

    run_dir: str
    model: str = "lenet_300_100"
    keras: int = 2
    dataset: str = "mnist"
    data_dir: Optional[str] = None
    validation_size: Optional[int] = None
    train_size: Optional[int] = None
    test_size: Optional[int] = None
    config_dir: Optional[str] = None
    imports: tuple = ()
    schedule: RewindingSchedule = RewindingSchedule(**_PAPER_SCHEDULE)
    settings: ImpSettings = ImpSettings()
    options: SearchSettings = SearchSettings()

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
        one_of(self.keras, "keras", KERAS_VERSIONS)
        for module_name in self.imports:  # they register the user's Keras classes
            self._module(module_name, f"imports: {module_name!r}")
        if _is_callable_spec(self.model):
            self.imported(self.model, "model")
        elif str(self.model).endswith(".keras"):
            if not self.resolve(self.model).is_file():
                raise ConfigError(f"model file {self.model} does not exist (looked in "
                                  f"{self.config_dir or '.'} and the working directory)")
        elif self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}.{did_you_mean(self.model, MODELS)}"
                              f" Known: {', '.join(MODELS)}, a module:function, or a "
                              ".keras file")
        if _is_callable_spec(self.dataset):
            self.imported(self.dataset, "dataset")
        elif self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}."
                              f"{did_you_mean(self.dataset, DATASETS)} Known: "
                              f"{', '.join(DATASETS)}, or a module:function")
        for key in _SIZES:
            if getattr(self, key) is not None:
                whole_number(getattr(self, key), key)

    @classmethod
    def from_dict(cls, values: dict, source: str = "the config") -> RunConfig:
        """The config of flat ``values`` (YAML keys), each given to what declares it."""
        own = [f.name for f in dataclasses.fields(cls) if f.name not in
               ("schedule", "settings", "options")]
        known = own + keys(*_PARTS)
        for key in values:
            if key not in known:
                raise ConfigError(f"unknown config key {key!r} in {source}."
                                  f"{did_you_mean(key, known)} Known keys: {', '.join(known)}")
        if "run_dir" not in values:
            raise ConfigError(f"{source} has no run_dir: say where the search is written")
        values = {**_PAPER_SCHEDULE, **values}
        for key in ("exclude", "prunable", "controls", "metrics", "imports"):
            if isinstance(values.get(key), str):  # `exclude: output` means one name
                values[key] = (values[key],)
            elif key in values:
                if not isinstance(values[key], (list, tuple, type(None))):
                    raise ConfigError(f"{key} must be a list of names, got {values[key]!r}")
                values[key] = tuple(values[key] or ())
        try:
            schedule, settings, options = split_options(
                {k: v for k, v in values.items() if k not in own}, *_PARTS)
        except TfLotteryError as error:  # a refused value: the config's to fix
            raise ConfigError(str(error)) from error
        return cls(**{k: v for k, v in values.items() if k in own}, schedule=schedule,
                   settings=settings, options=options)

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
        values.setdefault("config_dir", str(path.parent.resolve()))
        return cls.from_dict(values, source=str(path))

    def to_yaml(self) -> str:
        """The flat YAML of every key, as from_dict reads it back."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("schedule", "settings", "options")}
        values = {**own, **self.schedule.get_config()["config"], **self.settings.to_config(),
                  **self.options.to_config()}
        return yaml.safe_dump({key: list(value) if isinstance(value, tuple) else value
                               for key, value in values.items()}, sort_keys=False)

    def resolve(self, path) -> Path:
        """A path of the config: as given if absolute or found from the working directory,
        else relative to the config file's folder."""
        path = Path(path)
        if path.is_absolute() or path.exists() or not self.config_dir:
            return path
        return Path(self.config_dir) / path

    def imported(self, spec: str, what: str):
        """The function a ``module:function`` spec names, imported from the config file's
        folder or the working directory."""
        module_name, _, name = spec.partition(":")
        module = self._module(module_name, f"{what} {spec!r}")
        function = getattr(module, name, None)
        if not callable(function):
            raise ConfigError(f"{what} {spec!r}: {module_name} has no function {name!r}."
                              f"{did_you_mean(name, dir(module))}")
        return function

    def _module(self, module_name: str, what: str):
        """The user's module ``module_name``, imported from the config file's folder or the
        working directory."""
        with _search_path(self.config_dir):
            try:
                return importlib.import_module(module_name)
            except Exception as error:  # the user's module: any error it raises on import
                raise ConfigError(f"{what}: module {module_name!r} does not import "
                                  f"({type(error).__name__}: {error}); put {module_name}.py "
                                  f"beside the config file ({self.config_dir}) or in the "
                                  "working directory") from error

    def call(self, function, spec: str, what: str, *args, **kwargs):
        """``function(*args, **kwargs)``, the user's ``what`` function ``spec`` names, run
        where its module was imported from; any error it raises is reported as the user's:
        a UserCodeError naming the function, with the traceback of the user's frames."""
        with _search_path(self.config_dir):
            try:
                return function(*args, **kwargs)
            except Exception as error:  # the user's code: whatever it raises is theirs
                raised = UserCodeError(
                    f"your {what} function {spec!r} raised {type(error).__name__}: "
                    f"{reason(error)}. The error is in your code, not tf_lottery's: fix it "
                    "(see its traceback below), then run the same command again")
                raised.frames = _users_frames(error.__traceback__.tb_next)
                raise raised from error

    def data(self, strict: bool = True) -> Splits:
        """The dataset, split and sliced as configured: a built-in one, or what the
        ``dataset`` function returns, given the run's ``seed`` (if it takes one) and the
        sizes the config sets; unset sizes keep the function's own defaults. A size the
        function does not take is refused, or with ``strict=False`` (an export, reading the
        config of a run recorded before this check) left out."""
        sizes = {key: getattr(self, key) for key in _SIZES if getattr(self, key) is not None}
        if not _is_callable_spec(self.dataset):
            test_size = sizes.pop("test_size", None)
            splits = load_dataset(self.dataset, self.data_dir, seed=0, **sizes)
            if test_size is not None:
                x, y = splits.test
                splits = dataclasses.replace(splits, test=(x[:test_size], y[:test_size]))
            return splits
        load = self.imported(self.dataset, "dataset")
        taken = inspect.signature(load).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in taken.values())
        unused = [] if takes_any else [key for key in sizes if key not in taken]
        if unused and strict:
            one = len(unused) == 1
            raise ConfigError(
                f"the config sets {', '.join(f'{key}: {sizes[key]}' for key in unused)}, but "
                f"the dataset function {self.dataset!r} has no parameter "
                f"{' or '.join(unused)}: add {'it' if one else 'them'} to the function, or "
                f"leave {'that key' if one else 'those keys'} out")
        given = {key: value for key, value in sizes.items() if key not in unused}
        if takes_any or "seed" in taken:
            given["seed"] = self.settings.seed
        returned = self.call(load, self.dataset, "dataset", **given)
        if not isinstance(returned, (tuple, list)) or len(returned) != 3:
            raise DataError(f"dataset {self.dataset!r} returned {type(returned).__name__}; it "
                            "must return (train, validation, test), each (x, y) arrays or a "
                            "tf.data.Dataset of (x, y) batches")
        train, validation, test = returned
        return Splits(self.dataset, train, validation, test, classes=_classes(train, test))

    def model_builder(self, splits: Splits):
        """What LotteryTicketSearch takes as its model: a function of the seed, or (for a
        .keras file) the loaded model, trial 0's θ0."""
        if _is_callable_spec(self.model):
            function = self.imported(self.model, "model")

            def build_model(seed):
                model = self.call(function, self.model, "model", seed)
                if keras_family(model) is None:
                    raise ConfigError(f"model {self.model!r} returned {type(model).__name__}, "
                                      "not a Keras model: it must return a built model")
                return model
            return build_model
        if str(self.model).endswith(".keras"):
            return self._load_model_file(self.resolve(self.model))
        if not splits.classes:
            raise ConfigError(f"the built-in model {self.model!r} is sized from array data "
                              "with class labels (integers, or one-hot); for other data give "
                              "your own model (model: module:function)")
        return lambda seed: build(self.model, splits.input_shape, splits.classes, seed=seed,
                                  keras=self.keras)

    def _load_model_file(self, path: Path):
        """The model a ``.keras`` file holds; a class of the user's that no imported module
        registers is named, with the config key that imports it."""
        try:
            return engine_named(saved_by(path)).load_model(path)
        except (TypeError, ValueError) as error:
            unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", str(error))
            if not unknown:
                raise
            raise ConfigError(
                f"model file {path} uses {unknown.group(1)!r}, which no imported module "
                "registers: add `imports: [my_layers]` to the config, naming the module that "
                f"defines it with @keras.saving.register_keras_serializable() (imported from "
                f"{self.config_dir or '.'} or the working directory)") from error

    def first_model(self, splits: Splits):
        """Trial 0's model, built (what ``tf-lottery estimate`` looks at)."""
        built = self.model_builder(splits)
        if str(self.model).endswith(".keras"):
            return built
        with canonical_names():
            return built(self.settings.seed)

    def rebuilder(self, splits: Splits, trial: int):
        """A function building trial ``trial``'s model with the ``model`` function (None for
        other models): what rebuilds a model that has no config, for export."""
        if not _is_callable_spec(self.model):
            return None
        build = self.model_builder(splits)

        def rebuild():
            with canonical_names():
                return build(self.settings.seed + trial)
        return rebuild

    def search(self, splits: Splits) -> LotteryTicketSearch:
        """The LotteryTicketSearch this config describes, for ``splits``."""
        return LotteryTicketSearch.from_settings(self.model_builder(splits), self.schedule,
                                                 self.run_dir, self.settings, self.options)


def _is_callable_spec(spec) -> bool:
    """``"module:function"`` (a model or dataset of the user's)."""
    return isinstance(spec, str) and ":" in spec and not spec.endswith(".keras")


# the files of Python, the installed packages and tf_lottery: not the user's code
_NOT_USERS = tuple({Path(sysconfig.get_paths()[key]) for key in
                    ("stdlib", "platstdlib", "purelib", "platlib")} | {Path(__file__).parents[1]})


def _users_frames(trace) -> str:
    """The traceback ``trace`` (from the user's function on) as text, with only the frames
    of the user's own files (at least the function's own frame)."""
    frames = traceback.extract_tb(trace)
    own = [frame for frame in frames if not frame.filename.startswith("<") and not any(
        Path(frame.filename).is_relative_to(folder) for folder in _NOT_USERS)]
    return "".join(traceback.format_list(own or frames[:1]))


@contextlib.contextmanager
def _search_path(folder):
    """Import from ``folder`` (the config's) and the working directory too."""
    added = [str(p) for p in (folder, os.getcwd()) if p and str(p) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for path in added:
            sys.path.remove(path)


def _classes(train, test) -> int:
    """The class count of array labels (what the built-in models are sized by): the largest
    integer label + 1, or the width of one-hot labels; 0 for datasets and other labels."""
    labels = [np.asarray(data[1]) for data in (train, test) if isinstance(data, (tuple, list))]
    if labels and all(np.issubdtype(y.dtype, np.integer) and y.ndim == 1 for y in labels):
        return int(max(y.max() for y in labels)) + 1
    if labels and all(y.ndim == 2 for y in labels):
        return int(labels[0].shape[-1])
    return 0
