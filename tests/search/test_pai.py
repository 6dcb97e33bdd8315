"""The pruning-at-initialization controls in a search, on both engines: records, masks, CSV,
JSON, table, plots, TensorBoard and ``tf-lottery report``; and what is refused."""

import json

import numpy as np
import pytest
import tensorflow as tf

import tf_lottery as tfl
from tf_lottery.cli.commands import main
from tf_lottery.search.inputs import TrainingInput
from tf_lottery.search.scoring import SCORE_BATCHES, Scoring

from helpers import KERASES, InterruptAt, small_mlp, toy_data

PAI = ("snip", "grasp", "synflow", "magnitude_init")
RUN = ("random_pruning", *PAI)
SCHEDULE = tfl.RewindingSchedule(rounds=1, steps_per_round=10, prune_rate=0.5,
                                 layer_rates={"output": 0.2})


def _splits():
    x, y = toy_data(160)
    return (x[:100], y[:100]), (x[100:130], y[100:130]), (x[130:], y[130:])


def _search(run_dir, keras, **options):
    return tfl.LotteryTicketSearch(lambda seed: small_mlp(seed, input_dim=12, keras=keras),
                                   SCHEDULE, run_dir, **{"eval_every": 5, "batch_size": 20,
                                                         "verbose": 0, "seed": 1, **options})


@pytest.mark.parametrize("engine", list(KERASES))
def test_a_search_trains_the_pai_controls_beside_the_ticket(engine, tmp_path, capsys):
    run = tmp_path / "run"
    result = _search(run, KERASES[engine], controls=RUN).run(*_splits())
    assert [(r.round, r.variant) for r in result.records] == [(0, "ticket")] + [
        (1, v) for v in ("ticket", *RUN)]
    assert json.loads((run / "config.json").read_text())["controls"] == list(RUN)
    folder = run / "trial_0" / "round_01"
    ticket = tfl.Masks.load(folder / "ticket" / "masks.npz")
    made = {name: tfl.Masks.load(folder / name / "masks.npz") for name in RUN}
    for name, masks in made.items():  # exactly the ticket's per-layer sparsity
        assert masks.kept() == ticket.kept(), name
        assert (run / "logs" / "rounds" / "trial_0" / name).is_dir()
    assert not np.array_equal(made["snip"]["hidden/kernel"], made["grasp"]["hidden/kernel"])
    csv = (run / "results.csv").read_text()
    assert all(f",{name}," in csv for name in RUN)
    saved = json.loads((run / "results.json").read_text())
    assert {row["variant"] for row in saved["summary"]} == {"ticket", *RUN}
    for name in RUN:
        assert name in result.table()
    assert (run / "plot.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    report = capsys.readouterr().out
    assert all(name in report for name in RUN)


def test_an_interrupted_search_resumes_to_the_same_pai_masks(tmp_path):
    keras, options = KERASES["keras3"], dict(controls=("snip", "grasp"), tensorboard=False)
    straight = _search(tmp_path / "straight", keras, **options).run(*_splits())
    with pytest.raises(KeyboardInterrupt):  # the 3rd training: round 1's snip
        _search(tmp_path / "resumed", keras, **options).run(*_splits(),
                                                            callbacks=[InterruptAt(3)])
    resumed = _search(tmp_path / "resumed", keras, **options).run(*_splits())
    for control in ("snip", "grasp"):
        a, b = (tfl.Masks.load(tmp_path / run / "trial_0" / "round_01" / control / "masks.npz")
                for run in ("straight", "resumed"))
        assert all(np.array_equal(a[p], b[p]) for p in a)
    assert [r.test_accuracy for r in resumed.records] == \
        [r.test_accuracy for r in straight.records]


def test_the_scoring_batches_are_the_same_when_taken_again():
    """A resumed round (or one on Ray) makes its controls' masks again, from the same
    batches, whatever seed the process's last training left."""
    train = TrainingInput(_splits()[0], batch_size=20)
    first, again = [], []
    for seed, batches in ((5, first), (6, again)):
        tf.random.set_seed(seed)  # as a training of that seed leaves it
        batches += Scoring(train, "sparse_categorical_crossentropy", seed=1).batches()
    other = Scoring(train, "sparse_categorical_crossentropy", seed=2).batches()
    assert len(first) == SCORE_BATCHES and first[0][0].shape == (20, 12)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for a, b in zip(first, again))
    assert not np.array_equal(first[0][0], other[0][0])


def test_an_unknown_control_is_refused_with_the_list(tmp_path):
    with pytest.raises(tfl.SettingError, match=r"unknown control 'snipp'.*'snip'.*grasp, "
                                               r"synflow, magnitude_init"):
        _search(tmp_path / "run", KERASES["keras3"], controls=("snipp",))
    assert not (tmp_path / "run").exists()


def test_a_model_of_two_inputs_cannot_be_scored(tmp_path):
    keras = KERASES["keras3"]

    def build(seed):
        a, b = keras.Input((6,)), keras.Input((6,))
        hidden = keras.layers.Dense(8, name="hidden")(keras.layers.Concatenate()([a, b]))
        return keras.Model([a, b], keras.layers.Dense(3, name="output")(hidden))
    x, y = toy_data(40)
    data = tf.data.Dataset.from_tensor_slices(((x[:, :6], x[:, 6:]), y)).batch(20)
    with pytest.raises(tfl.SettingError, match="the controls snip, synflow score models of one "
                                               "input and one output.*Leave"):
        tfl.LotteryTicketSearch(build, SCHEDULE, tmp_path / "run", controls=("snip", "synflow"),
                                verbose=0, batch_size=20).run(data, data, data)
    assert not (tmp_path / "run").exists()
