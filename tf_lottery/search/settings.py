"""SearchSettings: how a search trains, evaluates and reports, declared once.

Every field is a keyword of :class:`~tf_lottery.LotteryTicketSearch` and a key of the YAML
config (``tf-lottery run``, with ``key=value`` overrides); every value is checked here. The
fields marked ``recorded`` belong to the experiment a run directory holds: ``config.json``
records them, and a resume with other values is refused with the differences.

Example::

    options = SearchSettings(trials=3, eval_every=200)
    options.recorded(str)   # {"controls": [...], "trials": 3, "batch_size": 60, ...}
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from typing import Optional, Union

import tensorflow as tf

from tf_lottery.core.controls import CONTROLS, DEFAULT_CONTROLS
from tf_lottery.foundations.checks import (
    did_you_mean,
    names,
    one_of,
    positive_number,
    whole_number,
)
from tf_lottery.foundations.errors import SettingError, SettingTypeError

_MODES = ("min", "max", "auto")
# the direction of Keras's metrics by the names it logs them under (Keras 3's ``_direction``
# of its metric classes, the short names included): the early stop takes the "max" of these
_MAXIMIZED = frozenset((
    "accuracy", "acc", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
    "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy", "auc", "precision",
    "recall", "f1_score", "fbeta_score", "r2_score", "cosine_similarity", "iou", "mean_iou",
    "binary_iou", "one_hot_iou", "one_hot_mean_iou", "pearson_correlation",
    "concordance_correlation", "precision_at_recall", "recall_at_precision",
    "sensitivity_at_specificity", "specificity_at_sensitivity"))
# ... and the "min" of these (losses and errors)
_MINIMIZED = frozenset((
    "loss", "mae", "mse", "mape", "msle", "rmse", "mean_absolute_error", "mean_squared_error",
    "mean_absolute_percentage_error", "mean_squared_logarithmic_error",
    "root_mean_squared_error", "logcosh", "log_cosh", "binary_crossentropy",
    "categorical_crossentropy", "sparse_categorical_crossentropy",
    "binary_focal_crossentropy", "categorical_focal_crossentropy", "hinge", "squared_hinge",
    "categorical_hinge", "kl_divergence", "kld", "poisson", "false_positives",
    "false_negatives"))
_STRATEGIES = {"mirrored": tf.distribute.MirroredStrategy,
              "multi_worker": tf.distribute.MultiWorkerMirroredStrategy}
_PAPER_OPTIMIZER = ("adam", 1.2e-3)  # the paper's Lenet optimizer and learning rate


def _recorded(default, keras_objects: bool = False, when_set: bool = False):
    """A field config.json records (``keras_objects``: a loss or metrics, serialized;
    ``when_set``: only when it is not its default, so earlier run directories resume)."""
    return dataclasses.field(default=default, metadata={
        "recorded": True, "keras_objects": keras_objects, "when_set": when_set})


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """The options of a search besides its schedule and its IMP settings.

    Args:
      controls: any of :data:`tf_lottery.core.controls.CONTROLS`, trained in rounds >= 1:
        "random_reinit", "random_pruning" (the default: the paper's two), and pruning at
        initialization: "snip", "grasp", "synflow", "magnitude_init".
      trials: independent repetitions, seeds ``seed``, ``seed + 1``, ...
      optimizer: an optimizer of the model's Keras (copied for every training), or a Keras
        identifier (``"sgd"``, ``{"class_name": "adam", "config": {...}}``) resolved with
        the model's Keras; None: Adam at 1.2e-3, the paper's.
      learning_rate: the learning rate of an optimizer given by identifier (None: its own).
      batch_size, eval_every: the paper uses 60 and 100 (``batch_size`` batches arrays; a
        tf.data training set comes batched).
      loss, metrics: what every training is compiled with: Keras names, identifiers or
        objects (default: sparse categorical cross-entropy from logits, and accuracy: the
        paper's classifier).
      monitor, mode: the evaluated metric whose best value ("min" or "max") is the
        early-stop iteration: ``"val_loss"`` (the paper), ``"val_mae"``, ``"val_accuracy"``.
        ``mode="auto"`` takes the direction Keras gives the metric (:func:`metric_mode`:
        losses and errors "min"; accuracy, AUC, precision, recall, ... "max"); a metric it
        does not know needs "min" or "max".
      force_mode: insist on a ``mode`` that contradicts the metric's direction (refused
        without it).
      early_bird: ``{"epsilon": 0.1, "window": 5}`` ends a ticket's training as soon as the
        next round's masks, drawn by magnitude at every evaluation, have differed from the
        previous draw in fewer than ``epsilon`` of their entries for ``window`` evaluations
        in a row (You et al. 2020; :mod:`tf_lottery.core.early_bird`); the records say
        where (``mask_drawn_at``) and the iterations saved. The final round trains in full.
        None (default): every round trains in full.
      steps_per_execution: training steps per compiled call; "auto" runs from one
        evaluation (or round end, or rewind capture) to the next in one call, but one step
        per call for a Keras 3 model under a strategy of several replicas (Keras 3 cannot
        run more there). On training arrays under XLA (TensorFlow backend) a call is one
        XLA program of all its steps (``tf_lottery.engines.fused``); elsewhere Keras's loop
        of compiled steps. Under gradient accumulation a step is
        ``gradient_accumulation_steps`` batches.
      jit_compile: XLA for the training steps (TensorFlow backends): "auto" tries it and
        falls back, with a message, where the model does not compile under XLA; True
        insists; False turns it off. (JAX always compiles. Evaluations run in a TensorFlow
        graph without XLA, faster for their large batches on CPUs.)
      tensorboard: write TensorBoard logs into ``RUN_DIR/logs``.
      verbose: progress bars (1), Keras's line per epoch too (2) or nothing (0).
      strategy: a ``tf.distribute.Strategy`` to build and train every model under, or its
        name: "mirrored" (the devices of this machine), "multi_worker" (``TF_CONFIG``'s
        workers); None: TensorFlow's default.
      executor: where the trainings run: "local" (one after another in this process) or
        "ray" (each a Ray task, as soon as its inputs exist: every core of this machine,
        every machine of a cluster; ``pip install 'tf_lottery[ray]'``).
      ray_address: the Ray cluster to join ("auto", or "host:port" of its head); None
        starts a Ray runtime on this machine.
      workers: trainings at once (None: as many as the cluster's CPUs, and GPUs, hold).
      cpus_per_training, gpus_per_training: what one training takes of a node; TensorFlow
        runs ``ceil(cpus_per_training)`` threads in it, and a fraction of a GPU packs
        several trainings on one, each taking the GPU memory it uses rather than all.
    """

    controls: tuple = _recorded(DEFAULT_CONTROLS)
    trials: int = _recorded(1)
    optimizer: object = None  # config.json records the optimizer it resolves to
    learning_rate: Optional[float] = None
    batch_size: int = _recorded(60)
    eval_every: int = _recorded(100)
    loss: object = _recorded(None, keras_objects=True)
    metrics: tuple = _recorded(("accuracy",), keras_objects=True)
    monitor: str = _recorded("val_loss")
    mode: str = _recorded("auto")  # recorded as resolved: "min" or "max"
    force_mode: bool = False
    early_bird: Optional[dict] = _recorded(None, when_set=True)
    steps_per_execution: Union[int, str] = "auto"  # recorded as the search resolves it
    jit_compile: Union[bool, str] = _recorded("auto")
    tensorboard: bool = True
    verbose: int = 1
    strategy: object = None  # recorded as its replica count
    executor: str = "local"
    ray_address: Optional[str] = None
    workers: Optional[int] = None
    cpus_per_training: float = 1.0
    gpus_per_training: float = 0.0

    def __post_init__(self):
        controls = names(self.controls, "controls")
        for control in controls:
            if control not in CONTROLS:
                raise SettingError(f"unknown control {control!r}."
                                   f"{did_you_mean(control, CONTROLS)} The controls: "
                                   f"{', '.join(CONTROLS)}")
        self._set("controls", tuple(c for c in CONTROLS if c in controls))
        for key in ("trials", "batch_size", "eval_every"):
            self._set(key, whole_number(getattr(self, key), key))
        self._set("verbose", whole_number(self.verbose, "verbose", minimum=0))
        if self.learning_rate is not None:
            self._set("learning_rate", positive_number(self.learning_rate, "learning_rate"))
            if self.optimizer is not None and not isinstance(self.optimizer, (str, dict)):
                raise SettingError("learning_rate applies to an optimizer given by name; "
                                   "give the optimizer object its learning rate instead")
        if isinstance(self.metrics, str) or not hasattr(self.metrics, "__iter__"):
            raise SettingTypeError(f"metrics must be a list of Keras metric names or "
                                   f"objects, got {self.metrics!r}; write "
                                   f"metrics=[{self.metrics!r}]")
        self._set("metrics", tuple(self.metrics))
        if not isinstance(self.monitor, str) or not self.monitor.startswith("val_"):
            raise SettingError(f"monitor must name a validation metric (\"val_loss\", "
                               f"\"val_accuracy\", \"val_mae\", ...), got {self.monitor!r}")
        self._check_mode()
        if self.early_bird is not None:
            self._set("early_bird", _early_bird(self.early_bird))
        if self.steps_per_execution != "auto":
            self._set("steps_per_execution",
                      whole_number(self.steps_per_execution, "steps_per_execution"))
        one_of(self.jit_compile, "jit_compile", ("auto", True, False))
        one_of(self.tensorboard, "tensorboard", (True, False))
        if self.strategy is None or isinstance(self.strategy, str):
            one_of(self.strategy, "strategy", (None, *_STRATEGIES))
        elif not isinstance(self.strategy, tf.distribute.Strategy):
            raise SettingTypeError(f"strategy must be a tf.distribute.Strategy or one of "
                                   f"{', '.join(_STRATEGIES)}, got {type(self.strategy).__name__}")
        self._check_executor()

    def _check_mode(self) -> None:
        """Resolve ``mode="auto"`` from the monitored metric; refuse a mode against it."""
        one_of(self.mode, "mode", _MODES)
        one_of(self.force_mode, "force_mode", (True, False))
        known = metric_mode(self.monitor)
        if self.mode == "auto":
            if known is None:
                raise SettingError(
                    f"mode=\"auto\" cannot tell whether {self.monitor} is better low or high "
                    "(Keras does not know the metric); give mode=\"min\" or mode=\"max\"")
            self._set("mode", known)
        elif known is not None and self.mode != known and not self.force_mode:
            raise SettingError(
                f"mode={self.mode!r} contradicts monitor={self.monitor!r}, which is better "
                f"{'low' if known == 'min' else 'high'}: the early stop would pick its worst "
                f"value. Leave mode out (\"auto\" gives {known!r}), or set force_mode=True to "
                "insist")

    def _check_executor(self) -> None:
        one_of(self.executor, "executor", ("local", "ray"))
        if self.workers is not None:
            self._set("workers", whole_number(self.workers, "workers"))
        self._set("cpus_per_training",
                  positive_number(self.cpus_per_training, "cpus_per_training"))
        if isinstance(self.gpus_per_training, bool) or \
                not isinstance(self.gpus_per_training, (int, float)) or \
                self.gpus_per_training < 0:
            raise SettingError(f"gpus_per_training must be a number >= 0 (a fraction packs "
                               f"trainings on a GPU), got {self.gpus_per_training!r}")
        if self.ray_address is not None and not isinstance(self.ray_address, str):
            raise SettingError(f"ray_address must be \"auto\" or \"host:port\", got "
                               f"{self.ray_address!r}")
        if self.executor == "local":
            return
        if importlib.util.find_spec("ray") is None:
            raise SettingError("executor='ray' needs Ray: pip install 'tf_lottery[ray]'")
        if self.strategy is not None:
            raise SettingError("a search on Ray gives each training a worker of its own; "
                               "it takes no tf.distribute strategy (leave strategy out, or "
                               "use executor='local')")

    def better(self, value: float, best: float) -> bool:
        """Whether ``value`` of the monitored metric beats ``best``."""
        return value < best if self.mode == "min" else value > best

    def _set(self, key, value) -> None:
        object.__setattr__(self, key, value)

    def recorded(self, serialize) -> dict:
        """The recorded fields as config.json holds them: lists for tuples, Keras objects
        through ``serialize`` (the model's engine's)."""
        recorded = {}
        for field in dataclasses.fields(self):
            if not field.metadata.get("recorded"):
                continue
            value = getattr(self, field.name)
            if field.metadata["when_set"] and value == field.default:
                continue
            if field.metadata["keras_objects"]:
                value = [serialize(v) for v in value] if isinstance(value, tuple) else \
                    serialize(value)
            recorded[field.name] = list(value) if isinstance(value, tuple) else value
        return recorded

    def optimizer_identifier(self) -> tuple:
        """``(identifier, settings)`` the model's engine makes the optimizer from."""
        if self.optimizer is None:
            name, rate = _PAPER_OPTIMIZER
            return name, {"learning_rate": self.learning_rate or rate}
        rate = {} if self.learning_rate is None else {"learning_rate": self.learning_rate}
        return self.optimizer, rate

    def distribution(self) -> tf.distribute.Strategy:
        """The strategy to build and train under (made now from a name)."""
        if isinstance(self.strategy, str):
            return _STRATEGIES[self.strategy]()
        return self.strategy or tf.distribute.get_strategy()

    def to_config(self) -> dict:
        """Every field as the YAML config writes it (the values given)."""
        return {field.name: list(value) if isinstance(value, tuple) else value
                for field in dataclasses.fields(self) for value in [getattr(self, field.name)]}


def metric_mode(monitor: str) -> Optional[str]:
    """The direction Keras gives the metric ``monitor`` names: "min" (losses, errors), "max"
    (accuracy, AUC, precision, recall, ...) or None for a metric it does not know. Keras's
    names may carry a count (``val_auc_1``) or an output's name (``val_digit_accuracy``).

    Example::

        metric_mode("val_mae"), metric_mode("val_auc_1"), metric_mode("val_dice")
        # ("min", "max", None)
    """
    name = re.sub(r"_\d+$", "", str(monitor).removeprefix("val_"))
    for known in (name, *sorted((k for k in _MAXIMIZED | _MINIMIZED
                                 if name.endswith(f"_{k}")), key=len, reverse=True)):
        if known in _MAXIMIZED:
            return "max"
        if known in _MINIMIZED:
            return "min"
    return None


def _early_bird(value) -> dict:
    """``early_bird`` checked, its defaults filled in: ``{"epsilon": ..., "window": ...}``."""
    if not isinstance(value, dict) or set(value) - {"epsilon", "window"}:
        raise SettingError(f"early_bird must be a mapping of epsilon and window, e.g. "
                           f"{{\"epsilon\": 0.1, \"window\": 5}}, got {value!r}")
    epsilon = value.get("epsilon", 0.1)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or \
            not 0 < epsilon < 1:
        raise SettingError(f"early_bird's epsilon must be a number strictly between 0 and 1 "
                           f"(the fraction of mask entries two successive draws may differ "
                           f"in), got {epsilon!r}")
    return {"epsilon": float(epsilon),
            "window": whole_number(value.get("window", 5), "early_bird's window")}
