"""Where a search's trainings run: in its own process, or as Ray tasks.

Both take the same :class:`~tf_lottery.search.graph.SearchGraph` and the same
:func:`~tf_lottery.search.training.train`; the driver (the search's process) alone writes
the run directory, so the results do not depend on the executor.

- :class:`LocalExecutor`: one training after another in this process, trial by trial,
  round by round, the ticket before its controls (live progress bars, epoch backups).
- :class:`RayExecutor`: every training one Ray task (``num_cpus``/``num_gpus`` of its
  own), submitted as soon as its inputs exist; tickets first, as the chain of tickets is
  the critical path. Workers get the trial's architecture, the settings and the data (put
  once into the object store) and return the outcome; a worker process that dies is
  replaced and its task run again by Ray. Where a worker sees the run directory (one
  machine, or a shared file system) it keeps epoch backups there as the local executor
  does; elsewhere a training run again starts from its beginning (same seed, same result).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys

import numpy as np

from tf_lottery.engines import keras_environment
from tf_lottery.foundations.errors import DataError, SettingError, TfLotteryError
from tf_lottery.search.graph import SearchGraph
from tf_lottery.search.training import TrainingContext, compiled, train


class LocalExecutor:
    """The trainings one after another in this process: ``context(trial)`` gives a trial's
    TrainingContext (made once, dropped when the trial is done)."""

    def __init__(self, context):
        self.context = context

    def run(self, graph: SearchGraph) -> None:
        while not graph.done:
            spec = min(graph.ready(), key=lambda spec: spec.key)
            graph.take(spec)
            graph.finished(train(self.context(spec.trial), spec))


class RayExecutor:
    """Every training a Ray task on a local runtime or a cluster (see the module)."""

    RETRIES = 2  # a task whose worker process died runs again, this many times at most

    def __init__(self, options, job: WorkerJob, data: tuple, progress=None):
        self.options, self.job, self.progress = options, job, progress
        self._data = data  # train, validation, test arrays, put into the object store

    def run(self, graph: SearchGraph) -> None:
        ray = _ray()
        started = _connect(ray, self.options)
        try:
            self._run(ray, graph)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, graph: SearchGraph) -> None:
        options = self.options
        remote = ray.remote(_train_on_worker).options(
            num_cpus=options.cpus_per_training, num_gpus=options.gpus_per_training,
            max_retries=self.RETRIES, retry_exceptions=False,
            runtime_env={"env_vars": _worker_environment(options)})
        job = ray.put(self.job)
        data = [ray.put(arrays) for arrays in self._data]
        slots = options.workers or max(1, int(_training_slots(ray, options)))
        run_graph(ray, graph, lambda spec: remote.remote(job, spec, *data), slots,
                  self.progress)


def run_graph(ray, graph, submit, slots: int, progress=None) -> None:
    """Keep ``slots`` trainings of ``graph`` in flight: ``submit(spec)`` starts one (a Ray
    ObjectRef of its Outcome); the ready ones go critical path first, each outcome goes
    back to the graph as it arrives. What is still in flight when this fails is cancelled.
    (``benchmarks/ray_executor.py`` runs it on a stand-in graph of the paper's protocol.)"""
    running = {}
    try:
        while not graph.done:
            for spec in sorted(graph.ready(), key=_critical_first)[:slots - len(running)]:
                graph.take(spec)
                running[submit(spec)] = spec
            finished, _ = ray.wait(list(running), num_returns=1)
            del running[finished[0]]
            outcome = _outcome(ray, finished[0])
            if progress:
                progress.trained(outcome)
            graph.finished(outcome)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)


def check_portable(data: tuple, callbacks) -> None:
    """On Ray the data and the callbacks go to other processes: refuse what cannot (a
    tf.data pipeline, a callback that does not pickle) before anything is written."""
    import tensorflow as tf
    if any(isinstance(part, tf.data.Dataset) for part in data):
        raise DataError("executor='ray' sends the data to its workers as arrays; a "
                        "tf.data.Dataset cannot go to another process. Give (x, y) arrays, "
                        "or run with executor='local'")
    try:
        _ray().cloudpickle.dumps(tuple(callbacks))
    except Exception as error:  # any pickling failure
        raise SettingError(f"executor='ray' sends the callbacks to its workers, and these "
                           f"cannot be pickled ({error}); pass callbacks that can, or run "
                           "with executor='local'") from error


def _critical_first(spec) -> tuple:
    """Tickets before controls (the chain of tickets is the critical path), earlier rounds
    first, then trial by trial."""
    return spec.variant != "ticket", spec.round, spec.trial


def _outcome(ray, ref):
    """A task's outcome; an error raised in the task is raised here as itself."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        cause = getattr(error, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise


def _ray():
    try:
        import ray
    except ImportError:
        raise SettingError("executor='ray' needs Ray: pip install 'tf_lottery[ray]'") from None
    return ray


def _connect(ray, options) -> bool:
    """Join the cluster at ``ray_address`` or start a local runtime; True if started here
    (so shut down at the end)."""
    if ray.is_initialized():
        return False
    kwargs = dict(log_to_driver=False, include_dashboard=False)
    if options.ray_address is None:
        ray.init(num_cpus=options.workers and
                 int(np.ceil(options.workers * options.cpus_per_training)) or None, **kwargs)
    else:
        try:
            ray.init(address=options.ray_address, **kwargs)
        except (ConnectionError, RuntimeError) as error:
            raise SettingError(f"cannot join the Ray cluster at {options.ray_address!r} "
                               f"({error}); start it with `ray start --head`, or leave "
                               "ray_address out to run a local runtime") from error
    return True


def _worker_environment(options) -> dict:
    """What the workers must share with this process (the Keras backend, TensorFlow's log
    level and memory settings, where this process imports its modules from); TensorFlow's
    threads: as many as the CPUs a training holds, so trainings side by side do not fight
    for cores; and where trainings share a GPU, each takes the memory it uses, not all."""
    env = keras_environment()
    env.update({key: os.environ[key] for key in _PASSED_ON if key in os.environ})
    env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    threads = str(max(1, int(np.ceil(options.cpus_per_training))))
    env.update(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads)
    if 0 < options.gpus_per_training < 1:
        env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")     # TensorFlow
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX
    return env


_PASSED_ON = ("TF_CPP_MIN_LOG_LEVEL", "TF_FORCE_GPU_ALLOW_GROWTH",
              "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION")


def _training_slots(ray, options) -> float:
    """How many trainings the cluster runs at once, by its CPUs (and GPUs, if asked)."""
    resources = ray.cluster_resources()
    slots = resources.get("CPU", 1) / options.cpus_per_training
    if options.gpus_per_training:
        slots = min(slots, resources.get("GPU", 0) / options.gpus_per_training)
    return slots


class WorkerJob:
    """What every worker of a search needs besides one training's spec and the data: how to
    build the model (its architecture, or the function that builds it), the settings to
    compile and train it with, and the run directory (for epoch backups, if it sees it)."""

    def __init__(self, engine: str, architecture: str, build, schedule, settings, options,
                 steps_per_execution: int, jit_compile, data_identity, run_dir, callbacks=()):
        self.engine, self.architecture, self.build = engine, architecture, build
        self.schedule, self.settings, self.options = schedule, settings, options
        self.steps_per_execution, self.jit_compile = steps_per_execution, jit_compile
        self.data_identity = data_identity
        self.run_dir, self.callbacks = str(run_dir), tuple(callbacks)
        self.config_digest = _digest(json.loads(architecture))
        self.key = (self.run_dir, self.config_digest)


def portable(options, engine):
    """``options`` (SearchSettings) as workers take them: Keras objects (an optimizer, a
    loss, metrics) as their configs, which the worker's engine makes again."""
    def config(value):
        return value if value is None or isinstance(value, (str, dict)) else \
            engine.serialize(value)
    return dataclasses.replace(options, optimizer=config(options.optimizer),
                               loss=config(options.loss),
                               metrics=tuple(config(m) for m in options.metrics))


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


_CONTEXTS: dict = {}  # a worker process's TrainingContexts: (job key, trial) -> context


def _train_on_worker(job: WorkerJob, spec, train_data, validation, test):
    """A Ray task: one training, in this worker's TrainingContext of the spec's trial."""
    key = (job.key, spec.trial)
    if key not in _CONTEXTS:
        _CONTEXTS.clear()  # a worker keeps one trial's model at a time
        _CONTEXTS[key] = _worker_context(job, train_data, validation, test)
    try:
        return train(_CONTEXTS[key], spec)
    except TfLotteryError:
        raise
    except Exception as error:  # said with the training it broke
        raise RuntimeError(f"{spec.describe()} failed on a Ray worker: "
                           f"{type(error).__name__}: {error}") from error


def _worker_context(job: WorkerJob, train_data, validation, test) -> TrainingContext:
    """Build, prepare and compile the trial's model as the driver did, and its data."""
    from tf_lottery.engines import canonical_names, engine_named
    from tf_lottery.imp.wrap import prepare
    from tf_lottery.runs.rundir import RunDirectory
    from tf_lottery.search.inputs import EvaluationInput, TrainingInput

    engine = engine_named(job.engine)
    with canonical_names():
        model = engine.from_json(job.architecture) if job.build is None else job.build(0)
    lottery = compiled(prepare(model, job.schedule, job.settings), job.options,
                       job.steps_per_execution, job.jit_compile)
    run_dir = RunDirectory(job.run_dir)
    sees_run_dir = (run_dir.path / run_dir.MODEL).is_file() and \
        _digest(json.loads((run_dir.path / run_dir.MODEL).read_text())) == job.config_digest
    train = TrainingInput(train_data, job.options.batch_size, job.data_identity)
    evaluation = {"val": EvaluationInput(validation, "validation", job.data_identity),
                  "test": EvaluationInput(test, "test", job.data_identity)}
    return TrainingContext(lottery, train, evaluation, job.options, job.steps_per_execution,
                           job.callbacks, backups=run_dir if sees_run_dir else None)
