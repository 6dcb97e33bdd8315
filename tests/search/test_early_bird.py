"""Early-bird rounds: a ticket's training ends once its next masks stop changing."""

import json
from pathlib import Path

import numpy as np
import pytest

import tf_lottery as tfl
from tf_lottery.core.early_bird import EarlyBird, mask_distance, settled
from tf_lottery.engines.callbacks import Callback
from tf_lottery.imp.rewind import RewindPoint
from tf_lottery.zoo.data import load_dataset
from tf_lottery.zoo.models import lenet_300_100

SCHEDULE = tfl.RewindingSchedule(rounds=2, steps_per_round=20, prune_rate=0.5)


@pytest.fixture(scope="module")
def splits():
    data = load_dataset("mnist", validation_size=200, train_size=600)
    return data.train, data.validation, (data.test[0][:200], data.test[1][:200])


def _search(run_dir, **kwargs):
    options = dict(eval_every=5, verbose=0, seed=3, controls=("random_pruning",),
                   early_bird={"epsilon": 0.99, "window": 2})
    options.update(kwargs)
    return tfl.LotteryTicketSearch(lambda seed: lenet_300_100((28, 28, 1), seed=seed, keras=3),
                                   SCHEDULE, run_dir, **options)


def _round(run_dir, round_index):
    return Path(run_dir) / "trial_0" / f"round_{round_index:02d}"


def test_the_distance_is_the_fraction_of_entries_that_differ():
    a = tfl.Masks({"k": np.array([[1, 1], [0, 0]]), "b": np.array([1, 0, 1, 0])})
    b = tfl.Masks({"k": np.array([[1, 0], [0, 0]]), "b": np.array([0, 1, 1, 0])})
    assert mask_distance(a, b) == pytest.approx(3 / 8)
    assert mask_distance(a, a) == 0.0
    assert settled([0.5, 0.05, 0.04], epsilon=0.1, window=2)
    assert not settled([0.05, 0.5, 0.04], epsilon=0.1, window=2)
    assert not settled([0.05], epsilon=0.1, window=2)  # too few draws yet


@pytest.fixture(scope="module")
def straight(splits, tmp_path_factory):
    """A search with early_bird run without interruption: its run directory and result."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    return run_dir, _search(run_dir).run(*splits)


def test_tickets_end_where_their_masks_settle_and_the_final_round_trains_in_full(straight):
    run_dir, result = straight
    # draws at 5, 10, 15: two distances under 0.99 by iteration 15, 5 iterations saved
    drawn = {(r.round, r.variant): (r.mask_drawn_at, r.iterations_saved)
             for r in result.records}
    assert drawn == {(0, "ticket"): (15, 5), (1, "ticket"): (15, 5), (2, "ticket"): (None, None),
                     (1, "random_pruning"): (None, None), (2, "random_pruning"): (None, None)}
    assert all(r.early_stop_iteration <= 15 for r in result.records if r.mask_drawn_at)
    # round 1's masks are the draw from round 0's ticket as it was at iteration 15
    masks0 = tfl.Masks.load(_round(run_dir, 0) / "ticket" / "masks.npz")
    model = lenet_300_100((28, 28, 1), seed=3, keras=3)
    trained = RewindPoint.load(_round(run_dir, 0) / "ticket" / "weights", model)
    bird = EarlyBird(0.99, 2, {path: SCHEDULE.path_sparsity(path, 1) for path in masks0})
    draw = bird.draw({path: trained.values[path] * masks0[path] for path in masks0}, masks0)
    masks1 = tfl.Masks.load(_round(run_dir, 1) / "ticket" / "masks.npz")
    assert all(np.array_equal(draw[path], masks1[path]) for path in masks1)
    row = next(r for r in result.rows() if r["round"] == 0)
    assert row["mask_drawn_at"] == 15 and row["iterations_saved"] == 5
    config = json.loads((run_dir / "config.json").read_text())
    assert config["early_bird"] == {"epsilon": 0.99, "window": 2}


class _InterruptAtSecondEpoch(Callback):
    """Ctrl-C at the start of the first training's second epoch (after its first backup)."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def test_an_interrupted_round_resumes_to_the_same_draw(splits, straight, tmp_path):
    straight_dir, straight = straight
    with pytest.raises(KeyboardInterrupt):  # after round 0's backup at iteration 10
        _search(tmp_path / "resumed").run(*splits, callbacks=[_InterruptAtSecondEpoch()])
    resumed = _search(tmp_path / "resumed").run(*splits)
    assert [r.to_dict() | {"wall_time": 0} for r in resumed.records] == \
        [r.to_dict() | {"wall_time": 0} for r in straight.records]
    for round_index in (0, 1, 2):
        a, b = (tfl.Masks.load(_round(run, round_index) / "ticket" / "masks.npz")
                for run in (straight_dir, tmp_path / "resumed"))
        assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("early_bird, message", [
    ({"epsilon": 1.5}, "early_bird's epsilon must be a number strictly between 0 and 1"),
    ({"eps": 0.1}, "early_bird must be a mapping of epsilon and window"),
    ({"window": 0}, "early_bird's window must be a whole number >= 1"),
    (0.1, "early_bird must be a mapping"),
])
def test_bad_early_bird_settings_are_refused(tmp_path, early_bird, message):
    with pytest.raises(tfl.SettingError, match=message):
        _search(tmp_path / "run", early_bird=early_bird)
    assert not (tmp_path / "run").exists()


def test_early_bird_with_another_criterion_is_refused(tmp_path):
    with pytest.raises(tfl.SettingError, match="early_bird draws the next masks by magnitude"):
        _search(tmp_path / "run", criterion="magnitude_increase")


def test_the_cli_on_a_tf_keras_model(tmp_path):
    from tf_lottery.cli.commands import main
    config = tmp_path / "c.yaml"
    config.write_text(f"run_dir: {tmp_path / 'run'}\nkeras: 2\nrounds: 1\nsteps_per_round: 20\n"
                      "train_size: 600\nvalidation_size: 200\ntest_size: 200\neval_every: 5\n"
                      "controls: []\nverbose: 0\nprune_rate: 0.5\n"
                      "early_bird: {epsilon: 0.99, window: 2}\n")
    assert main(["run", str(config)]) == 0
    rows = tfl.SearchResult.load(tmp_path / "run").rows()
    assert [(r["round"], r.get("mask_drawn_at"), r.get("iterations_saved")) for r in rows] == [
        (0, 15, 5), (1, None, None)]
