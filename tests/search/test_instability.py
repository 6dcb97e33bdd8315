"""Instability analysis: error barriers along the linear path between two copies."""

import json

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tf_lottery as tfl
from tf_lottery.search.instability import error_barrier
from tf_lottery.zoo.data import load_dataset
from tf_lottery.zoo.models import lenet_300_100

SCHEDULE = tfl.RewindingSchedule(rounds=1, steps_per_round=20, prune_rate=0.5)


@pytest.fixture(scope="module")
def splits():
    data = load_dataset("mnist", validation_size=200, train_size=600)
    return data.train, data.validation, (data.test[0][:300], data.test[1][:300])


def _search(run_dir, keras=3):
    return tfl.LotteryTicketSearch(
        lambda seed: lenet_300_100((28, 28, 1), seed=seed, keras=keras), SCHEDULE, run_dir,
        controls=(), eval_every=10, verbose=0, seed=5)


def test_the_barrier_is_the_highest_point_over_the_ends_mean():
    assert error_barrier([0.02, 0.05, 0.03]) == pytest.approx(0.025)
    assert error_barrier([0.1, 0.08, 0.1]) == pytest.approx(0.0)  # a valley: no barrier
    assert error_barrier([0.3, 0.2, 0.1]) == pytest.approx(0.1)   # the end counts too


def test_paths_of_the_dense_network_and_a_ticket_written_and_resumed(splits, tmp_path):
    search = _search(tmp_path / "run")
    search.run(*splits)
    result = tfl.instability(search, *splits, rewind_steps=(0, 10), rounds=(0, 1),
                             repetitions=1, points=5)
    assert [(e["round"], e["rewind_step"]) for e in result.entries] == [
        (0, 0), (1, 0), (0, 10), (1, 10)]
    ticket = tfl.Masks.load(tmp_path / "run" / "trial_0" / "round_01" / "ticket" / "masks.npz")
    for entry in result.entries:
        assert entry["alphas"] == pytest.approx([0, 0.25, 0.5, 0.75, 1])
        assert len(entry["test_error"]) == 5 and all(0 <= e <= 1 for e in entry["test_error"])
        assert entry["error_barrier"] == pytest.approx(error_barrier(entry["test_error"]))
        assert entry["weights_remaining"] == pytest.approx(
            1.0 if entry["round"] == 0 else ticket.fraction_kept())
    # the two ends are different networks (their own data orders), both trained
    assert any(e["test_loss"][0] != e["test_loss"][-1] for e in result.entries)
    folder = tmp_path / "run" / "instability"
    saved = json.loads((folder / "instability.json").read_text())
    assert [row["rewind_step"] for row in saved["summary"]] == [0, 10, 0, 10]
    assert (folder / "instability.png").stat().st_size > 10_000
    events = EventAccumulator(str(folder / "logs" / "round_01"), size_guidance={"tensors": 0})
    events.Reload()
    written = events.Tensors("instability/error_barrier")
    assert len(written) == 2  # one point per rewind step, written once
    barriers = {event.step: float(tf_value(event)) for event in written}
    assert barriers == pytest.approx({row["rewind_step"]: row["error_barrier"]
                                      for row in saved["summary"] if row["round"] == 1})
    # resumed: what is measured stays, only the new repetition trains
    again = tfl.instability(search, *splits, rewind_steps=(0, 10), rounds=(0, 1),
                            repetitions=2, points=5)
    assert again.entries[:4] == result.entries
    assert [(e["round"], e["rewind_step"], e["repetition"]) for e in again.entries[4:]] == [
        (0, 0, 1), (1, 0, 1), (0, 10, 1), (1, 10, 1)]


def tf_value(event):
    return tf.make_ndarray(event.tensor_proto)


def test_refusals_write_nothing(splits, tmp_path):
    search = _search(tmp_path / "run")
    with pytest.raises(tfl.SettingError, match="rewind step 20 is not within a round of 20"):
        tfl.instability(search, *splits, rewind_steps=(20,))
    with pytest.raises(tfl.SettingError, match="round 2 does not exist"):
        tfl.instability(search, *splits, rounds=(2,))
    with pytest.raises(tfl.RunDirectoryError, match="round 1 of trial 0 is not committed"):
        tfl.instability(search, *splits, rounds=(1,))
    dataset = tf.data.Dataset.from_tensor_slices(splits[0]).batch(60)
    with pytest.raises(tfl.SettingError, match="give the data as \\(x, y\\) arrays"):
        tfl.instability(search, dataset, *splits[1:])
    assert not (tmp_path / "run").exists()
    result = tfl.instability(search, *splits, repetitions=1, points=3)
    with pytest.raises(tfl.RunDirectoryError, match="holds an analysis of another setup"):
        tfl.instability(search, *splits, repetitions=1, points=5)
    assert tfl.InstabilityResult.load(tmp_path / "run" / "instability") == result
    assert np.isfinite(result.entries[0]["loss_barrier"])


def test_the_cli_measures_a_tf_keras_ticket_after_the_search(tmp_path, capsys):
    from tf_lottery.cli.commands import main
    config = tmp_path / "c.yaml"
    config.write_text(f"run_dir: {tmp_path / 'run'}\nkeras: 2\nrounds: 1\nsteps_per_round: 20\n"
                      "train_size: 600\nvalidation_size: 200\ntest_size: 300\neval_every: 10\n"
                      "controls: []\nverbose: 0\nprune_rate: 0.5\n")
    assert main(["instability", str(config), "--rounds", "0,1"]) == 2
    assert "round 1 of trial 0 is not committed" in capsys.readouterr().err
    assert main(["run", str(config)]) == 0
    assert main(["instability", str(config), "--rewind-steps", "10", "--rounds", "0,1",
                 "--repetitions", "1", "--points", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["round", "weights"] and len(out) == 1 + 2 + 1
    saved = json.loads((tmp_path / "run" / "instability" / "instability.json").read_text())
    assert len(saved["entries"]) == 2 and saved["setup"]["points"] == 3
    ticket = saved["entries"][1]
    assert ticket["round"] == 1 and ticket["weights_remaining"] < 0.6
    assert np.isfinite(ticket["error_barrier"])
    assert ticket["test_loss"][0] != ticket["test_loss"][-1]  # two different ends
    with pytest.raises(SystemExit, match="2"):  # argparse's usage error
        main(["instability", str(config), "--rewind-steps", "0,x"])
    assert "expected whole numbers separated by commas, got '0,x'" in capsys.readouterr().err
