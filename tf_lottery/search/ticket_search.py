"""LotteryTicketSearch: IMP round by round, with controls, early-stop metrics, resumable.

Each round trains the ticket from its rewind point under its masks, measuring validation
loss every ``eval_every`` iterations; the early-stop iteration is the one of minimum
validation loss and the reported test accuracy is the one there (the paper's protocol).
The controls of each round (:mod:`tf_lottery.core.controls`) train the same way. Every round
is committed to the run directory as a whole; running again resumes after the last
committed round. The trainings are a graph (:mod:`tf_lottery.search.graph`) that an
executor runs (:mod:`tf_lottery.search.executors`): in this process, or on Ray.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable
from typing import NamedTuple, Union

import tensorflow as tf

from tf_lottery.core.controls import CONTROLS
from tf_lottery.core.masks import Masks
from tf_lottery.core.schedule import RewindingSchedule, check_schedule
from tf_lottery.core.settings import ImpSettings
from tf_lottery.engines import canonical_names, engine_for, keras_family
from tf_lottery.foundations.checks import did_you_mean, whole_number
from tf_lottery.foundations.declared import keyword_signature, split_options
from tf_lottery.foundations.errors import DataError, SettingError, SettingTypeError, reason
from tf_lottery.imp.rewind import RewindPoint, RewindPoints
from tf_lottery.imp.wrap import prepare
from tf_lottery.runs.results import SearchResult
from tf_lottery.runs.rundir import RunDirectory
from tf_lottery.runs.tensorboard import SearchSummaries
from tf_lottery.search.executors import (
    LocalExecutor,
    RayExecutor,
    WorkerJob,
    check_portable,
    portable,
)
from tf_lottery.search.graph import SearchGraph, TrialRounds, TrialSetup
from tf_lottery.search.inputs import EvaluationInput, TrainingInput
from tf_lottery.search.progress import Progress
from tf_lottery.search.scoring import Scoring
from tf_lottery.search.settings import SearchSettings
from tf_lottery.search.training import (
    DEFAULT_LOSS,
    TrainingContext,
    compiled,
    without_xla,
    xla_refused,
)


class LotteryTicketSearch:
    """Find winning tickets by IMP, with controls, several trials and a run directory.

    Args:
      model: a function ``build(seed) -> model`` (each trial builds its own), or a built
        Keras model (trial 0 starts from its weights, later trials from fresh draws);
        Keras 3 or tf_keras. A subclassed model without ``get_config`` cannot be drawn
        again: give the function (``lambda seed: Net()``), which the random-reinit control
        calls for its fresh draws.
      schedule: the RewindingSchedule: rounds, iterations per round, prune rates.
      run_dir: where config, θ0, per-round masks, weights and metrics go; resumable.
      **options: the :class:`~tf_lottery.search.settings.SearchSettings` (``controls``,
        ``trials``, ``optimizer``, ``learning_rate``, ``batch_size``, ``eval_every``,
        ``loss``, ``metrics``, ``monitor``, ``mode``, ``force_mode``, ``steps_per_execution``,
        ``jit_compile``, ``tensorboard``, ``verbose``, ``strategy``; where the trainings
        run: ``executor``, ``ray_address``, ``workers``, ``cpus_per_training``,
        ``gpus_per_training``) and the
        :class:`~tf_lottery.ImpSettings` (``rewind_to``, ``scope``, ``criterion``,
        ``block_size``, ``exclude``, ``prunable``, ``seed``: as in ``prune_with_rewinding``;
        ``seed`` also seeds the trials).

    Example::

        search = tfl.LotteryTicketSearch(lambda seed: lenet_300_100(seed=seed), schedule,
                                         run_dir="runs/lenet", trials=3)
        result = search.run(train=(x, y), validation=(xv, yv), test=(xt, yt))
        print(result.table())

        # the same trainings as Ray tasks, two at a time on this machine's cores
        tfl.LotteryTicketSearch(build, schedule, "runs/lenet", trials=3, executor="ray",
                                workers=2).run((x, y), (xv, yv), (xt, yt))
    """

    def __init__(self, model: Union[Callable[[int], object], object],
                 schedule: RewindingSchedule, run_dir: str | os.PathLike, **options):
        self._setup(model, schedule, run_dir, *split_options(options, ImpSettings,
                                                             SearchSettings))

    @classmethod
    def from_settings(cls, model, schedule: RewindingSchedule, run_dir,
                      settings: ImpSettings, options: SearchSettings) -> LotteryTicketSearch:
        """The search of settings already made (a config's): nothing is checked twice."""
        search = cls.__new__(cls)
        search._setup(model, schedule, run_dir, settings, options)
        return search

    def _setup(self, model, schedule, run_dir, settings: ImpSettings,
               options: SearchSettings) -> None:
        check_schedule(schedule)
        if not isinstance(run_dir, (str, os.PathLike)):
            raise SettingTypeError(f"run_dir must be a path, got {run_dir!r}")
        self.schedule, self.settings, self.options = schedule, settings, options
        if options.early_bird and settings.criterion != "magnitude":
            raise SettingError(f"early_bird draws the next masks by magnitude during a round; "
                               f"criterion={settings.criterion!r} would draw them otherwise "
                               "at its end: use criterion=\"magnitude\" or leave early_bird "
                               "out")
        self.run_dir = RunDirectory(run_dir)
        self._check_execution_steps()
        self.steps_per_execution = None  # resolved for the model's engine by run()
        self.strategy = options.distribution()
        # "auto": XLA until it refuses the model, but not for replicas on CPUs, where XLA
        # has no collectives (and a refused collective leaves the workers broken)
        self._use_xla = options.jit_compile is True or (options.jit_compile == "auto" and (
            self.strategy.num_replicas_in_sync == 1 or tf.config.list_physical_devices("GPU")))
        self._build = model if callable(model) and keras_family(model) is None else None
        self._model = None if self._build else model

    # --- public ----------------------------------------------------------------------

    def run(self, train, validation, test, callbacks=(), keep=None, data_identity=None,
            trial=None) -> SearchResult:
        """Run (or resume) every trial and round; write and return the results.

        ``train``, ``validation`` and ``test`` are ``(inputs, labels)`` pairs of arrays, or
        ``tf.data.Dataset`` s yielding ``(x, y)`` batches; ``callbacks`` are Keras callbacks
        added to every training's ``fit``; ``keep`` maps file names to texts to keep in the
        run directory (written once with the config, checksummed). Everything that can be
        refused is checked before anything is written: the data, the model, the settings,
        the loss and the monitored metric (on one validation batch).

        The data's identity is recorded and checked on resume (a SHA-256 of arrays, an
        order-independent digest of a dataset's contents); ``data_identity``, a string
        naming the data (its source and version), replaces the digest of datasets whose
        contents change at every pass (random augmentation).

        ``trial`` runs only that trial (0-based): processes or machines may run different
        trials of one search into the same run directory, each holding its trial's lock,
        or into separate ones (``tf-lottery report DIR DIR ...`` merges them).
        """
        trials = self._trials(trial)
        if self.options.executor == "ray":
            check_portable((train, validation, test), callbacks)
        data = (train, validation, test)
        train, evaluation = self._inputs(data, data_identity)
        template, first = self._first_models(trials[0], evaluation["val"])
        config, architecture = self._adopt_run_directory(template, first.lottery, train,
                                                         evaluation, keep)
        setup = self._trial_setup(config, trials, callbacks, train,
                                  first.lottery.channel_plan)
        with contextlib.ExitStack() as held:
            for index in trials:
                held.enter_context(self.run_dir.locked(index))
                self.run_dir.remove_staging_leftovers(index)
                self.run_dir.verify([index])
            with self.strategy.scope():
                models = {index: first.model if index == first.trial else
                          self._model_for_trial(index) for index in trials}
            graph = SearchGraph([TrialRounds(setup, index, model,
                                             functools.partial(self.fresh_draw, model),
                                             first.lottery.masks)
                                 for index, model in models.items()])
            try:
                self._executor(setup, first, models, train, evaluation, architecture, data,
                               data_identity).run(graph)
            finally:
                if setup.summaries:
                    setup.summaries.close()
        return self._results()

    def prepared_trial(self, train, validation, test, trial: int = 0,
                       data_identity=None) -> PreparedTrial:
        """Trial ``trial``'s model prepared in this process with what trains it, its θ0 and
        round 0's masks, the run directory's config adopted (or checked) as :meth:`run`
        does: for analyses beside the search (:mod:`tf_lottery.search.instability`)."""
        trial = self._trials(trial)[0]
        train, evaluation = self._inputs((train, validation, test), data_identity)
        template, first = self._first_models(trial, evaluation["val"])
        self._adopt_run_directory(template, first.lottery, train, evaluation, None)
        points = RewindPoints(self.run_dir.rewind_dir(trial), self.settings.policy)
        points.save_theta0(first.model)
        context = TrainingContext(first.lottery, train, evaluation, self.options,
                                  self.steps_per_execution)
        return PreparedTrial(context, points.theta0(first.model), first.lottery.masks)

    def _inputs(self, data: tuple, data_identity) -> tuple:
        """The training input and the evaluation sets of ``(train, validation, test)``."""
        train, validation, test = data
        return TrainingInput(train, self.options.batch_size, data_identity), {
            "val": EvaluationInput(validation, "validation", data_identity),
            "test": EvaluationInput(test, "test", data_identity)}

    def _trials(self, trial) -> range:
        """The trials this run runs: all, or the one ``trial`` names."""
        count = self.options.trials
        if trial is None:
            return range(count)
        trial = whole_number(trial, "trial", minimum=0)
        if trial >= count:
            raise SettingError(f"trial {trial} does not exist: the search has trials 0 to "
                               f"{count - 1} (trials={count})")
        return range(trial, trial + 1)

    def _first_models(self, trial: int, validation) -> tuple:
        """Trial 0's model (the config records its architecture), and the first trial's
        model and LotteryModel, checked on a validation batch: every refusal the model, the
        settings or the data can earn comes before anything is written."""
        with self.strategy.scope():
            template = self._model_for_trial(0)
            self._check_copies(template)
            self._check_gradients(template)
            self.steps_per_execution = self._resolved_execution_steps(engine_for(template))
            original = template if trial == 0 else self._model_for_trial(trial)
            lottery = self._prepared(original)
        self._check_on_a_batch(lottery, validation)
        return template, _FirstTrial(trial, original, lottery)

    def _adopt_run_directory(self, template, lottery, train, evaluation, keep) -> tuple:
        """Record the config in a new run directory, or check it against the one there;
        the config and trial 0's architecture (JSON)."""
        architecture = engine_for(template).to_json(template)
        config = self._config(architecture, lottery, train, evaluation)
        with self.run_dir.locked():
            self.run_dir.adopt(config, {"model.json": architecture, **(keep or {})},
                               resolved=self._resolved_from_auto())
        return config, architecture

    def _resolved_from_auto(self) -> tuple:
        """The config.json keys the search worked out from the user's "auto"."""
        return ("steps_per_execution",) if self.options.steps_per_execution == "auto" else ()

    def _trial_setup(self, config: dict, trials, callbacks, train, channels) -> TrialSetup:
        options = self.options
        summaries = SearchSummaries(self.run_dir.path / "logs", config,
                                    {**config["schedule"], **config["settings"]}) \
            if options.tensorboard else None
        setup = TrialSetup(schedule=self.schedule, settings=self.settings, options=options,
                           steps_per_execution=self.steps_per_execution, run_dir=self.run_dir,
                           callbacks=tuple(callbacks), summaries=summaries,
                           scoring=Scoring(train, options.loss or DEFAULT_LOSS,
                                           self.settings.seed),
                           channels=channels)
        return dataclasses.replace(setup, progress=Progress(
            self._steps_to_run(setup, trials), options.trials, self.schedule.rounds,
            options.monitor, options.verbose))

    def _results(self) -> SearchResult:
        """The committed rounds, written as table, CSV, JSON and plots (and printed)."""
        result = SearchResult.load(self.run_dir.path, verify=False)
        paths = result.save(self.run_dir.path)
        if self.options.verbose:
            print(result.table())
            print(f"results: {', '.join(str(path) for path in paths.values())}", flush=True)
        return result

    # --- one trial -------------------------------------------------------------------

    def _model_for_trial(self, trial):
        if self._build:
            with canonical_names():  # the same weight paths when built again to resume
                model = self._build(self.settings.seed + trial)
            if keras_family(model) is None:
                raise SettingTypeError(f"the model function returned {type(model).__name__}, "
                                       "not a Keras model")
            return model
        if trial == 0:
            return self._model
        engine = engine_for(self._model)  # a copy of the given model, freshly drawn
        clone = engine.clone(self._model)
        RewindPoint.fresh_draw(self._model, self.settings.seed + trial).restore(clone, Masks({}))
        return clone

    def _check_copies(self, model) -> None:
        """Refuse a built model that cannot be drawn again where the search needs fresh
        draws of it (later trials, the random-reinit control)."""
        options = self.options
        needs = [what for what, needed in (("trials > 1", options.trials > 1),
                                           ("the random_reinit control",
                                            "random_reinit" in options.controls)) if needed]
        if self._build is None and needs and not engine_for(model).can_copy(model):
            raise SettingTypeError(
                f"{type(model).__name__} cannot be copied (a subclassed model without "
                f"get_config), so the search cannot draw it again for {' and '.join(needs)}: "
                f"pass the function that builds it instead, e.g. model=lambda seed: "
                f"{type(model).__name__}(), built on a batch")

    def _check_gradients(self, model) -> None:
        """Refuse the controls that take the model's gradients where its engine cannot."""
        needing = [name for name in self.options.controls if CONTROLS[name].needs_gradients]
        if needing:
            engine_for(model).check_gradients(
                model, f"the control{'s' if len(needing) > 1 else ''} {', '.join(needing)}")

    def fresh_draw(self, original, seed: int) -> RewindPoint:
        """New initial weights for a trial's model: every initializer of ``original`` drawn
        again from ``seed``, or, for a model that cannot be copied, the model function
        called with ``seed``."""
        if self._build is not None and not engine_for(original).can_copy(original):
            with canonical_names():
                return RewindPoint.capture(self._build(seed), step=0)
        return RewindPoint.fresh_draw(original, seed)

    def _prepared(self, model):
        """The compiled LotteryModel of one trial's model (refusals come from here)."""
        return compiled(prepare(model, self.schedule, self.settings), self.options,
                        self.steps_per_execution, self._use_xla)

    def _check_execution_steps(self) -> None:
        """Every place the search acts (an evaluation, a round end, the rewind capture)
        must end a compiled call: a number of steps per call must divide them all."""
        steps = self.options.steps_per_execution
        if steps != "auto" and any(boundary % steps for boundary in self._boundaries()):
            raise SettingError(
                f"steps_per_execution={steps} must divide eval_every="
                f"{self.options.eval_every}, steps_per_round={self.schedule.steps_per_round} "
                "and the rewind step: the search evaluates, ends rounds and captures the "
                "rewind point between calls")

    def _boundaries(self) -> list:
        boundaries = [self.options.eval_every, self.schedule.steps_per_round]
        if self.settings.policy.rewind_step:
            boundaries.append(self.settings.policy.rewind_step)
        return boundaries

    def _resolved_execution_steps(self, engine) -> int:
        """"auto": the boundaries' greatest common divisor, but 1 for a Keras 3 model under
        a strategy of several replicas, whose fit fails with more steps per call ("You must
        feed a value for placeholder", plain Keras 3 too); a number there is refused."""
        asked = self.options.steps_per_execution
        replicated = engine.name == "keras3" and self.strategy.num_replicas_in_sync > 1
        if asked == "auto":
            return 1 if replicated else math.gcd(*self._boundaries())
        if replicated and asked > 1:
            raise SettingError(
                f"steps_per_execution={asked} does not run under a strategy of "
                f"{self.strategy.num_replicas_in_sync} replicas on Keras 3 (its fit fails with "
                "'You must feed a value for placeholder', in plain Keras too); use 1 or "
                "\"auto\"")
        return asked

    def _check_on_a_batch(self, lottery, validation) -> None:
        """Evaluate the first model on one validation batch: the data fits the model, the
        loss is finite at θ0, and the monitored metric exists. Nothing is written yet."""
        x, y = validation.first_batch()
        try:
            try:
                metrics = lottery.evaluate(x, y, verbose=0, return_dict=True)
            except Exception as error:  # XLA's refusals come as several error types
                if not xla_refused(self.options.jit_compile, lottery, error):
                    raise
                self._use_xla = False
                without_xla(lottery, error)
                metrics = lottery.evaluate(x, y, verbose=0, return_dict=True)
        except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
            raise DataError(f"the model cannot be evaluated on the validation data: "
                            f"{reason(error).rstrip('.')}. Check that the data "
                            "yields (x, y) with x shaped like the model's input and y like "
                            "what the loss expects") from error
        available, monitor = [f"val_{name}" for name in metrics], self.options.monitor
        if monitor not in available:
            raise SettingError(f"monitor {monitor!r} is not a metric the search "
                               f"evaluates.{did_you_mean(monitor, available)} The "
                               f"metrics: {', '.join(available)} (add the metric to "
                               "metrics=[...])")
        if not math.isfinite(metrics["loss"]):
            raise DataError(f"the loss is {metrics['loss']} on the first validation batch at "
                            "the initial weights: check that the loss fits the model's output "
                            "(from_logits=True for logits, False after a softmax), that the "
                            "labels are in the format it expects (integers for sparse "
                            "losses, one-hot otherwise) and that the data has no NaN")

    def _config(self, architecture: str, lottery, train, evaluation) -> dict:
        """The experiment a run directory holds (config.json): what a resume must match."""
        optimizer, engine = lottery.optimizer, engine_for(lottery)
        return {
            "engine": engine.name,
            "model": json.loads(architecture),
            "schedule": self.schedule.get_config()["config"],
            "settings": self.settings.to_config(),
            **self.options.recorded(engine.serialize),
            "seed": self.settings.seed,
            "optimizer": {"class_name": type(optimizer).__name__,  # its name aside
                          "config": {k: v for k, v in optimizer.get_config().items()
                                     if k != "name"}},
            "replicas": self.strategy.num_replicas_in_sync,
            "steps_per_execution": self.steps_per_execution,
            "data": {"train": train.identity(), "validation": evaluation["val"].identity(),
                     "test": evaluation["test"].identity()},
        }

    def _executor(self, setup: TrialSetup, first, models: dict, train, evaluation,
                  architecture: str, data: tuple, data_identity):
        """Where the trainings run: this process, or Ray (``executor``)."""
        options = self.options
        if options.executor == "local":
            return LocalExecutor(self._local_contexts(setup, first, models, train, evaluation))
        engine = engine_for(first.lottery)
        rebuildable = json.loads(architecture).get("config", {}) is not None
        job = WorkerJob(engine=engine.name, architecture=architecture,
                        build=None if rebuildable else self._build, schedule=self.schedule,
                        settings=self.settings, options=portable(options, engine),
                        steps_per_execution=self.steps_per_execution,
                        jit_compile=self._use_xla, data_identity=data_identity,
                        run_dir=self.run_dir.path, callbacks=setup.callbacks)
        return RayExecutor(options, job, data, setup.progress)

    def _local_contexts(self, setup: TrialSetup, first, models: dict, train, evaluation):
        """A trial's TrainingContext in this process, made when its first training comes
        (the first trial's model is prepared already) and kept while its trainings come."""
        made = {}

        def context(trial: int) -> TrainingContext:
            if trial not in made:
                made.clear()  # trial by trial: the last trial's model goes
                with self.strategy.scope():  # the context sees the strategy (its evaluator)
                    lottery = first.lottery if trial == first.trial else \
                        self._prepared(models[trial])
                    made[trial] = TrainingContext(
                        lottery, train, evaluation, self.options, self.steps_per_execution,
                        setup.callbacks, backups=self.run_dir, progress=setup.progress,
                        rewind_points=RewindPoints(self.run_dir.rewind_dir(trial),
                                                   self.settings.policy))
            return made[trial]
        return context

    def _steps_to_run(self, setup, trials) -> int:
        """The training steps this run has ahead (the trainings not committed yet)."""
        return sum(len(setup.steps(variant, r)) for trial in trials
                   for r in range(self.run_dir.completed_rounds(trial), self.schedule.rounds + 1)
                   for variant in ("ticket", *(self.options.controls if r > 0 else ())))


class PreparedTrial(NamedTuple):
    """One trial's model, prepared in this process (see ``prepared_trial``)."""

    context: TrainingContext        # the compiled LotteryModel and what trains it
    theta0: RewindPoint             # as on disk
    masks: Masks                    # round 0's: every weight kept


class _FirstTrial(NamedTuple):
    """The first trial a run runs: its model, and the LotteryModel checked on a batch."""

    trial: int
    model: object
    lottery: object


LotteryTicketSearch.__init__.__signature__ = keyword_signature(
    LotteryTicketSearch.__init__, SearchSettings, ImpSettings)
