"""The rewind point: a model's layer weights at one step, kept on disk as a TF checkpoint.

Weights are addressed by variable path (``"dense/kernel"``, ``"batch_normalization/
moving_mean"``), never by position: ``model.get_weights()`` of a wrapped model includes
TF-MOT's masks, and a positional restore would reset every mask to ones. The wrappers'
mask, threshold and step variables are not part of a rewind point.

Example::

    point = RewindPoint.capture(model, step=0)
    point.save("run/rewind/step_0")
    ...
    RewindPoint.load("run/rewind/step_0", model).restore(model, masks)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from tf_lottery.core.masks import masked
from tf_lottery.engines import engine_for
from tf_lottery.foundations.atomic import replacing
from tf_lottery.foundations.errors import (
    AlreadyExistsError,
    DamagedFileError,
    RewindCheckpointError,
    SettingTypeError,
)
from tf_lottery.foundations.integrity import verify, write_manifest

_CHECKPOINT_PREFIX = "weights"


class RewindPoint:
    """The values of every layer weight of a model at training step ``step``."""

    def __init__(self, values: dict[str, np.ndarray], step: int):
        self.values = values
        self.step = step

    @classmethod
    def capture(cls, model, step: int) -> RewindPoint:
        weights = engine_for(model).model_weights(model)
        return cls({path: var.numpy() for path, var in weights.items()}, step)

    @classmethod
    def fresh_draw(cls, model, seed: int) -> RewindPoint:
        """New initial weights for ``model``: every layer's initializers drawn again, seeded
        by ``seed`` (the random-reinitialisation control). ``model`` is left untouched."""
        return cls.capture(engine_for(model).reseeded_clone(model, seed), step=0)

    def save(self, directory: str | os.PathLike) -> None:
        """Write a TF checkpoint into ``directory`` atomically; an existing one is refused."""
        directory = Path(directory)
        if directory.exists():
            raise AlreadyExistsError(
                f"{directory} already holds a rewind point; it is never overwritten. Choose "
                "another checkpoint directory, or remove it if it is no longer wanted.")
        with replacing(directory, keep_existing=True) as staging:
            variables = {path: tf.Variable(value) for path, value in self.values.items()}
            checkpoint = tf.train.Checkpoint(
                weights=variables, step=tf.Variable(self.step, dtype=tf.int64))
            checkpoint.write(str(staging / _CHECKPOINT_PREFIX))
            write_manifest(staging)

    @classmethod
    def load(cls, directory: str | os.PathLike, model) -> RewindPoint:
        """Read the rewind point in ``directory``, checked against ``model`` weight by weight."""
        directory = Path(directory)
        prefix = directory / _CHECKPOINT_PREFIX
        if not Path(f"{prefix}.index").is_file():
            raise RewindCheckpointError(
                f"no rewind checkpoint in {directory}: the initial weights this model rewinds "
                "to are gone. Wrap the model again to start a new search.")
        try:
            verify(directory)
        except DamagedFileError as error:
            raise RewindCheckpointError(str(error)) from error
        expected = engine_for(model).model_weights(model)
        try:
            values, step = _read_checkpoint(prefix, expected)
        except (KeyError, ValueError, tf.errors.OpError) as error:
            raise RewindCheckpointError(
                f"the rewind checkpoint in {directory} does not match this model or is "
                f"damaged ({error}). Use the checkpoint written when this model was wrapped."
            ) from error
        return cls(values, step)

    def restore(self, model, masks) -> None:
        """Set every layer weight to its rewind value; weights pruned by ``masks`` become 0."""
        for path, variable in engine_for(model).model_weights(model).items():
            variable.assign(masked(self.values[path], masks.get(path)))


def _read_checkpoint(prefix: Path, expected: dict) -> tuple[dict[str, np.ndarray], int]:
    """The values and step stored under ``prefix``, checked name by name and shape by shape
    against ``expected`` (path -> variable).

    A plain reader, not ``Checkpoint.read``: a read that a Ctrl-C cuts short leaves nothing
    half-restored behind to warn about at exit.
    """
    reader = tf.train.load_checkpoint(str(prefix))
    stored = reader.get_variable_to_shape_map()
    keys = {_checkpoint_key(path): path for path in expected}
    step_key = "step/.ATTRIBUTES/VARIABLE_VALUE"
    unexpected = sorted(set(stored) - set(keys) - {step_key, "_CHECKPOINTABLE_OBJECT_GRAPH"})
    missing = sorted(path for key, path in keys.items() if key not in stored)
    if missing or unexpected or step_key not in stored:
        raise KeyError(f"weights missing from the checkpoint: {missing or 'none'}; "
                       f"weights the model does not have: {unexpected or 'none'}")
    values = {}
    for key, path in keys.items():
        value, variable = reader.get_tensor(key), expected[path]
        if (value.shape, value.dtype) != (tuple(variable.shape),
                                          tf.as_dtype(variable.dtype).as_numpy_dtype):
            raise ValueError(f"{path} is {value.dtype} {value.shape} in the checkpoint and "
                             f"{tf.as_dtype(variable.dtype).name} {tuple(variable.shape)} in "
                             "the model")
        values[path] = value
    return values, int(reader.get_tensor(step_key))


def _checkpoint_key(path: str) -> str:
    """The key ``tf.train.Checkpoint(weights={path: ...})`` stores a weight under (TF escapes
    "." as ".." and "/" as ".S" in object names)."""
    escaped = path.replace(".", "..").replace("/", ".S")
    return f"weights/{escaped}/.ATTRIBUTES/VARIABLE_VALUE"


def _rewind_point_dir(checkpoint_dir, step: int) -> Path:
    """Where the rewind point of ``step`` lives in a checkpoint directory: ``step_<step>``."""
    return Path(checkpoint_dir) / f"step_{step}"


def save_rewind_point(model, checkpoint_dir, step: int) -> RewindPoint:
    """Capture ``model``'s weights as the rewind point of ``step`` and write it (once)."""
    point = RewindPoint.capture(model, step)
    point.save(_rewind_point_dir(checkpoint_dir, step))
    return point


class RewindPoints:
    """The rewind points of one IMP run in its checkpoint directory, and the rewind policy's
    decisions on them, made here only: which step round 0 captures (late rewinding), where
    later rounds start (a rewind point, or None: the trained weights) and what criteria
    compare the trained weights with (the start point, else θ0). Points are read (and
    checked) once.

    Example::

        points = RewindPoints("run/trial_0/rewind", policy_for(500))
        points.capture_step                   # 500
        points.start(model)                   # the weights of iteration 500
    """

    def __init__(self, checkpoint_dir, policy):
        self.directory, self.policy = Path(checkpoint_dir), policy
        self._loaded = {}

    @property
    def capture_step(self):
        """The step of round 0 whose weights later rounds rewind to, if it must be captured
        (θ0 is written before training; None without late rewinding)."""
        step = self.policy.rewind_step
        return step if step else None

    def captures(self, previous: int, step: int) -> bool:
        """Whether training from ``previous`` to ``step`` passes the capture step."""
        return self.capture_step is not None and previous < self.capture_step <= step

    def capture(self, model) -> RewindPoint:
        """Write ``model``'s weights as the point of the capture step."""
        return self.keep(RewindPoint.capture(model, self.capture_step))

    def keep(self, point: RewindPoint) -> RewindPoint:
        """Write ``point`` (captured at the capture step elsewhere) unless it is on disk
        already (the same weights, captured again by a training that ran again)."""
        if not _rewind_point_dir(self.directory, point.step).exists():
            point.save(_rewind_point_dir(self.directory, point.step))
        self._loaded[point.step] = point
        return point

    def theta0(self, model) -> RewindPoint:
        """θ0, written first (``save_theta0``) and read back as it is on disk."""
        return self._point(0, model)

    def save_theta0(self, model) -> None:
        """Write ``model``'s weights as θ0 unless they are there already."""
        if not _rewind_point_dir(self.directory, 0).exists():
            save_rewind_point(model, self.directory, 0)

    def start(self, model):
        """The weights rounds after the first start from (None: the trained ones)."""
        return self._point(self.policy.rewind_step, model) \
            if self.policy.rewinds_weights else None

    def check(self, model, step: int) -> None:
        """Read (and check) now the points a run at ``step`` uses: θ0, and the captured one
        once the run has passed it; a damaged one fails before any training."""
        self.theta0(model)
        if self.capture_step is not None and step >= self.capture_step:
            self.start(model)

    def reference(self, model) -> RewindPoint:
        """What criteria compare the trained weights with: the start point, else θ0."""
        return self.start(model) or self.theta0(model)

    def _point(self, step: int, model) -> RewindPoint:
        if step not in self._loaded:
            self._loaded[step] = RewindPoint.load(_rewind_point_dir(self.directory, step), model)
        return self._loaded[step]


class OptimizerReset:
    """A fresh optimizer's state, to give each round a fresh optimizer.

    The values come from a new optimizer of the same class and config built on the same
    variables, so any optimizer resets correctly (Adagrad's accumulators do not start at 0),
    and a model loaded mid-run resets to fresh state, not to the state it was saved with.
    ``reset(step)`` sets the optimizer's step count, and so the learning-rate schedule, to
    ``step`` (gradient accumulation starting afresh) and restarts its moving averages
    (``use_ema``) from the weights the round starts with; ``finalize()`` sets the weights to
    those averages, as Keras does at the end of a ``fit``.
    """

    def __init__(self, optimizer, trainable_variables):
        self.engine = engine = engine_for(optimizer)
        self.optimizer, self.trainable_variables = optimizer, list(trainable_variables)
        fresh = type(optimizer).from_config(optimizer.get_config())
        fresh_values = [var.numpy() for var in
                        engine.optimizer_variables(fresh, trainable_variables)]
        self.variables = engine.optimizer_variables(optimizer, trainable_variables)
        if len(self.variables) != len(fresh_values):
            raise SettingTypeError(f"cannot reset {type(optimizer).__name__}: a fresh copy has a "
                            "different set of variables")
        self._initial = list(zip(self.variables, fresh_values))
        self.averages = engine.moving_averages(optimizer, self.trainable_variables)

    def reset(self, step: int = 0) -> None:
        for variable, value in self._initial:
            variable.assign(value)
        self.engine.set_optimizer_step(self.optimizer, step)
        for variable, average in self.averages:
            average.assign(variable.numpy())

    def finalize(self) -> None:
        """The weights become their moving averages (``use_ema``): the trained network a
        ``fit`` ending here would leave. Nothing happens without EMA."""
        if self.averages:
            self.optimizer.finalize_variable_values(self.trainable_variables)
