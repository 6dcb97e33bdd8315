"""The trainings of a search as a graph, as its driver sees them.

Only the tickets form a chain: round r's masks come from round r-1's trained ticket. The
controls of round r need nothing but round r's masks (and θ0, or the rewind point), so
they can train beside the ticket of round r; trials need nothing from each other. The
driver makes each training's :class:`~tf_lottery.search.training.TrainingSpec` as soon as
its inputs exist, takes the outcomes in any order, and commits a round to the run
directory when its ticket and controls have all returned, rounds in order: the run
directory a search leaves does not depend on where or in which order its trainings ran.

Example (what an executor does)::

    graph = SearchGraph([TrialRounds(setup, trial, model, fresh_draw) for trial in trials])
    while not graph.done:
        spec = min(graph.ready(), key=lambda spec: spec.key)
        graph.take(spec)
        graph.finished(train(context, spec))
"""

from __future__ import annotations

import dataclasses

from tf_lottery.core.controls import CONTROLS
from tf_lottery.core.early_bird import EarlyBird
from tf_lottery.core.masks import Masks
from tf_lottery.core.plan import RoundPlan
from tf_lottery.foundations.atomic import write_json
from tf_lottery.imp.rewind import RewindPoint, RewindPoints
from tf_lottery.imp.rounds import chosen_masks
from tf_lottery.runs.results import VARIANTS, SearchResult
from tf_lottery.runs.rundir import RoundFiles
from tf_lottery.search.training import Outcome, TrainingSpec


@dataclasses.dataclass(frozen=True)
class TrialSetup:
    """What every trial of a search shares; each trial gets it explicitly."""

    schedule: object                # the RewindingSchedule
    settings: object                # the ImpSettings
    options: object                 # the SearchSettings
    steps_per_execution: int        # as the search resolved "auto" for the model's engine
    run_dir: object                 # the RunDirectory
    callbacks: tuple = ()           # the user's Keras callbacks, added to every fit
    summaries: object = None        # the SearchSummaries writing TensorBoard logs (or None)
    progress: object = None         # the Progress printing to the terminal (or None)
    scoring: object = None          # the Scoring of pruning-at-initialization controls
    channels: object = None         # the model's ChannelPlan (granularity="channel")

    @property
    def plan(self) -> RoundPlan:
        return RoundPlan(self.schedule, self.settings.policy)

    def steps(self, variant: str, round_index: int) -> range:
        """The optimizer steps one training trains: the ticket's are the rewind policy's; a
        control trains the ticket's where rounds rewind (the same budget and schedule
        position, as open_lth's controls do), else a whole round from step 0."""
        if variant == "ticket" or self.settings.policy.rewinds_weights:
            return self.plan.steps(round_index)
        return range(0, self.schedule.steps_per_round)

    def early_bird(self, round_index: int, masks: Masks, channels=None):
        """When round ``round_index``'s ticket (under ``masks``, in the groups of
        ``channels`` for channel tickets) may end early (None: it trains in full; the final
        round always does, having no next masks to draw)."""
        options, settings = self.options, self.settings
        if not options.early_bird or round_index >= self.schedule.rounds:
            return None
        sparsity = {path: self.schedule.path_sparsity(path, round_index + 1)
                    for path in masks}
        return EarlyBird(**options.early_bird, sparsity=sparsity,
                         structure=settings.structure(channels), refill=settings.refill)

    def round_seed(self, trial: int, round_index: int, variant: str) -> int:
        """The seed of one training: shuffling, dropout and the controls' draws."""
        return (self.settings.seed + trial) * 1_000_003 + round_index * 10 + \
            VARIANTS.index(variant)


class TrialRounds:
    """One trial's rounds: the committed ones, the specs of the rounds whose inputs exist,
    the outcomes of the rounds under way. Controls take ``rewind_point()``,
    ``fresh_draw(seed)``, ``settings`` and the gradients of its model (``loss_gradients``,
    ``flow_gradients``: the scorer of :mod:`tf_lottery.core.pai`) from it
    (:mod:`tf_lottery.core.controls`).

    ``model`` is the trial's model (its θ0 is written first), ``fresh_draw(seed)`` gives its
    weights drawn again (the random-reinit control's start), ``masks`` the masks of round 0
    (every weight kept).
    """

    def __init__(self, setup: TrialSetup, trial: int, model, fresh_draw, masks: Masks):
        self.setup, self.trial, self.model = setup, trial, model
        self.fresh_draw, self._first_masks = fresh_draw, masks
        self.points = RewindPoints(setup.run_dir.rewind_dir(trial), setup.settings.policy)
        self.points.save_theta0(model)
        self.theta0 = self.points.theta0(model)  # as on disk, verified
        self.committed = setup.run_dir.completed_rounds(trial)
        setup.run_dir.discard_committed_backups(trial, self.committed)
        self.pending: list[TrainingSpec] = []   # made, not yet taken
        self._outcomes: dict = {}               # round -> {variant: Outcome}
        self._expected: dict = {}               # round -> how many trainings it has
        self._trained: dict = {}                # round -> the ticket's trained RewindPoint
        self._next_masks: dict = {}             # round -> the next round's masks
        if not self.done:
            self._make_round(self.committed, *self._resume_state())

    @property
    def done(self) -> bool:
        """Whether every round is committed."""
        return self.committed > self.setup.schedule.rounds

    def rewind_point(self) -> RewindPoint:
        """Where rounds start under a rewinding policy (θ0, or the weights after k steps),
        and what criteria compare the trained weights with (θ0 under the others)."""
        return self.points.reference(self.model)

    @property
    def settings(self):
        """The ImpSettings (``scope``, ``block_size``: how controls select their masks)."""
        return self.setup.settings

    @property
    def channels(self):
        """The model's ChannelPlan under ``granularity="channel"`` (else None)."""
        return self.setup.channels

    def loss_gradients(self, values: dict, paths: list, temperature: float = 1.0,
                       vector=None) -> dict:
        """The trial model's loss gradients (or Hessian-vector products) at ``values``."""
        return self.setup.scoring.loss_gradients(self.model, values, paths, temperature,
                                                 vector)

    def flow_gradients(self, values: dict, paths: list) -> dict:
        """The trial model's synaptic-flow gradients at ``values``."""
        return self.setup.scoring.flow_gradients(self.model, values, paths)

    def _resume_state(self):
        """The ticket's masks and starting weights for the first round not committed."""
        if self.committed == 0:
            return self._first_masks, self.theta0
        previous = self.setup.run_dir.round_files(self.trial, self.committed - 1)
        masks = Masks.load(previous.next_masks())
        return masks, self.points.start(self.model) or \
            RewindPoint.load(previous.ticket_weights(), self.model)

    def _make_round(self, round_index: int, masks: Masks, start: RewindPoint) -> None:
        """The specs of round ``round_index``: its ticket, and from round 1 its controls."""
        setup = self.setup
        seed = setup.round_seed(self.trial, round_index, "ticket")
        capture = self.points.capture_step if round_index == 0 else None
        specs = [TrainingSpec(self.trial, round_index, "ticket", seed,
                              setup.steps("ticket", round_index), masks, start, capture,
                              setup.early_bird(round_index, masks, self.channels))]
        for name in setup.options.controls if round_index > 0 else ():
            control, seed = CONTROLS[name], setup.round_seed(self.trial, round_index, name)
            specs.append(TrainingSpec(self.trial, round_index, name, seed,
                                      setup.steps(name, round_index),
                                      control.masks(masks, seed, self),
                                      control.start(self, seed)))
        self._expected[round_index] = len(specs)
        self._outcomes[round_index] = {}
        self.pending += specs

    def finished(self, outcome: Outcome) -> None:
        """Take ``outcome``: a ticket's makes the next round's specs; a complete round is
        committed, rounds in order."""
        spec = outcome.spec
        if spec.variant == "ticket":
            self._ticket_finished(outcome)
        self._outcomes[spec.round][spec.variant] = outcome
        while not self.done and \
                len(self._outcomes.get(self.committed, {})) == self._expected.get(self.committed):
            self._commit(self.committed)
            self.committed += 1

    def _ticket_finished(self, outcome: Outcome) -> None:
        setup, spec = self.setup, outcome.spec
        if outcome.captured is not None:
            self.points.keep(outcome.captured)
        trained = RewindPoint(outcome.trained, setup.plan.ends[spec.round])
        self._trained[spec.round] = trained
        if spec.round < setup.schedule.rounds:
            masks = chosen_masks(outcome.weights, spec.masks, setup.schedule, setup.settings,
                                 spec.round + 1, initial=self.rewind_point(),
                                 label=f"trial {self.trial}, ", channels=self.channels)
            self._next_masks[spec.round] = masks
            self._make_round(spec.round + 1, masks,
                             self.points.start(self.model) or trained)

    def _commit(self, round_index: int) -> None:
        """Write round ``round_index`` to the run directory (atomically), then its
        TensorBoard summaries and its line in the terminal."""
        setup, run_dir = self.setup, self.setup.run_dir
        outcomes = [self._outcomes[round_index][variant] for variant in VARIANTS
                    if variant in self._outcomes[round_index]]
        with run_dir.staging(self.trial, round_index) as stage:
            self._write_round(stage, outcomes, self._trained.pop(round_index),
                              self._next_masks.pop(round_index, None))
        run_dir.discard_committed_backups(self.trial, round_index + 1)
        if setup.summaries:
            self._summarize(round_index, outcomes)
        if setup.progress:
            self._report_round(round_index, [o.record for o in outcomes])
        if round_index == setup.schedule.rounds:
            run_dir.discard_backups(self.trial)
            if setup.summaries:
                setup.summaries.trial_finished(self.trial, [
                    Masks.load(run_dir.round_files(self.trial, r).masks("ticket"))
                    for r in range(round_index + 1)])
        del self._outcomes[round_index]

    @staticmethod
    def _write_round(stage: RoundFiles, outcomes: list, trained: RewindPoint,
                     next_masks) -> None:
        """A round's files: every training's masks, the ticket's trained weights, the next
        round's masks, and the records and curves."""
        for outcome in outcomes:
            path = stage.masks(outcome.spec.variant)
            path.parent.mkdir()
            outcome.spec.masks.save(path)
        trained.save(stage.ticket_weights())
        if next_masks is not None:
            next_masks.save(stage.next_masks())
        write_json(stage.metrics(), {
            "records": [o.record.to_dict() for o in outcomes],
            "curves": {o.spec.variant: o.curve for o in outcomes}})

    def _summarize(self, round_index: int, outcomes: list) -> None:
        setup, run_dir = self.setup, self.setup.run_dir
        for outcome in outcomes:
            spec = outcome.spec
            setup.summaries.training_curve(spec.trial, spec.variant, spec.round,
                                           outcome.curve, setup.options.monitor, outcome.best)
            previous = run_dir.round_files(self.trial, round_index - 1).masks(spec.variant)
            setup.summaries.round_committed(
                outcome.record, spec.masks, Masks.load(previous) if previous.is_file() else None,
                outcome.weights)
        result = SearchResult.load(run_dir.path, verify=False)
        setup.summaries.plot(self.trial, round_index, result.plot_png(), result.curves_png())

    def _report_round(self, round_index: int, records: list) -> None:
        setup, progress = self.setup, self.setup.progress
        ticket, metric = records[0], SearchResult(records).metric
        controls = "".join(f", {r.variant} {r.metric(metric):.4f}" for r in records[1:])
        progress.line(f"trial {self.trial + 1}/{setup.options.trials}, round {round_index}/"
                      f"{setup.schedule.rounds}: {ticket.weights_remaining:.2%} of weights, "
                      f"test {metric} at early stop {ticket.metric(metric):.4f} (iteration "
                      f"{ticket.early_stop_iteration}){controls}; about {progress.left()} "
                      "left")


class SearchGraph:
    """The trainings of every trial of a search: ``ready()`` gives the specs whose inputs
    exist, ``take(spec)`` marks one handed to a worker, ``finished(outcome)`` takes it
    back (and commits what it completes); ``done`` once every round is committed."""

    def __init__(self, trials: list):
        self.trials = {rounds.trial: rounds for rounds in trials}

    @property
    def done(self) -> bool:
        return all(rounds.done for rounds in self.trials.values())

    def ready(self) -> list:
        return [spec for rounds in self.trials.values() for spec in rounds.pending]

    def take(self, spec: TrainingSpec) -> None:
        rounds = self.trials[spec.trial]
        rounds.pending = [other for other in rounds.pending if other is not spec]

    def finished(self, outcome: Outcome) -> None:
        self.trials[outcome.spec.trial].finished(outcome)
