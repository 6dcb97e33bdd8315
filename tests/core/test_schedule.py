import pytest
import tensorflow as tf

import tf_lottery as tfl
from tf_lottery.core.masks import kept_count
from tf_lottery.core.schedule import check_schedule


def test_kept_fraction_follows_one_minus_p_to_the_k():
    schedule = tfl.RewindingSchedule(rounds=18, steps_per_round=10, prune_rate=0.2,
                                     layer_rates={"output": 0.1})
    # The paper's Lenet table: weights remaining after k rounds (hidden layers at 20%).
    for k, percent in {1: 80.0, 3: 51.2, 7: 20.97, 9: 13.42, 15: 3.52, 18: 1.80}.items():
        assert schedule.kept_fraction("hidden", k) * 100 == pytest.approx(percent, abs=0.01)
    assert schedule.kept_fraction("output", 2) == pytest.approx(0.81)
    assert schedule.sparsity("hidden", 0) == 0.0
    assert schedule.kept_fraction("hidden", 25) == schedule.kept_fraction("hidden", 18)


def test_round_boundaries():
    schedule = tfl.RewindingSchedule(rounds=3, steps_per_round=100)
    assert schedule.total_steps == 400
    assert [schedule.round_at(s) for s in (0, 99, 100, 299, 300, 399, 400, 10_000)] == \
        [0, 0, 1, 2, 3, 3, 3, 3]


def test_tf_mot_s_wrappers_are_never_told_to_prune():
    from tf_lottery.engines.tfmot import RoundsSchedule
    schedule = RoundsSchedule(tfl.RewindingSchedule(rounds=2, steps_per_round=5, prune_rate=0.5))
    for step in range(0, 20):
        should_prune, sparsity = schedule(tf.constant(step, tf.int64))
        assert not bool(should_prune)
        assert float(sparsity) == pytest.approx(schedule.schedule.sparsity("any", step // 5))
    traced = tf.function(lambda s: schedule(s))
    assert not bool(traced(tf.constant(7, tf.int64))[0])


def test_config_round_trip():
    schedule = tfl.RewindingSchedule(rounds=4, steps_per_round=50, prune_rate=0.3,
                                     layer_rates={"output": 0.15})
    config = schedule.get_config()
    assert config["class_name"] == "RewindingSchedule"
    restored = tfl.RewindingSchedule.from_config(config)
    assert restored == schedule and hash(restored) == hash(schedule)
    assert tfl.RewindingSchedule.from_config(config["config"]) == schedule


@pytest.mark.parametrize("kwargs, message", [
    (dict(rounds=0, steps_per_round=10), "rounds must be a whole number >= 1"),
    (dict(rounds=2.5, steps_per_round=10), "rounds must be a whole number >= 1"),
    (dict(rounds=2, steps_per_round=0), "steps_per_round must be a whole number >= 1"),
    (dict(rounds=2, steps_per_round=10, prune_rate=0.0), "prune_rate must be a fraction"),
    (dict(rounds=2, steps_per_round=10, prune_rate=1.0), "prune_rate must be a fraction"),
    (dict(rounds=2, steps_per_round=10, prune_rate=-0.2), "prune_rate must be a fraction"),
    (dict(rounds=2, steps_per_round=10, prune_rate=20), "prune_rate must be a fraction"),
    (dict(rounds=2, steps_per_round=10, layer_rates={"out": 1.5}),
     r"layer_rates\['out'\] must be a fraction"),
])
def test_bad_values_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfl.RewindingSchedule(**kwargs)


def test_kept_count_rounds_to_nearest_and_keeps_one():
    assert kept_count(1000, 0.8 ** 3) == 512
    assert kept_count(10, 0.25) == 3  # 2.5 rounds half up
    assert kept_count(10, 1e-6) == 1


def test_schedules_copy_and_pickle_as_equal_values():
    import copy
    import pickle
    schedule = tfl.RewindingSchedule(rounds=3, steps_per_round=7, prune_rate=0.3,
                                     layer_rates={"output": 0.1})
    for twin in (copy.deepcopy(schedule), copy.copy(schedule),
                 pickle.loads(pickle.dumps(schedule))):
        assert twin == schedule and hash(twin) == hash(schedule)
        assert dict(twin.layer_rates) == {"output": 0.1}


def test_numpy_scalars_are_numbers():
    import numpy as np
    schedule = tfl.RewindingSchedule(rounds=np.int64(2), steps_per_round=np.int32(5),
                                     prune_rate=np.float32(0.25),
                                     layer_rates={"output": np.float64(0.1)})
    assert schedule.rounds == 2 and type(schedule.rounds) is int
    assert schedule.prune_rate == 0.25 and type(schedule.prune_rate) is float
    settings = tfl.ImpSettings(rewind_to=np.int64(3), block_size=np.int64(4), seed=np.int64(1))
    assert settings.rewind_to == 3 and type(settings.rewind_to) is int
    assert settings.block_size == 4 and settings.seed == 1


@pytest.mark.parametrize("make, sparsity", [
    (lambda s: s.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=1000), 0.9),
    (lambda s: s.ConstantSparsity(0.5, begin_step=0), 0.5),
    (lambda s: s.PolynomialDecay(0.3, 0.97, begin_step=100, end_step=4000), 0.97)])
def test_a_tfmot_schedule_maps_to_a_rewinding_schedule_of_its_sparsity(make, sparsity):
    """Issue 31, item 13: the RewindingSchedule the refusal names reaches TF-MOT's sparsity."""
    import re

    import tensorflow_model_optimization as tfmot
    with pytest.raises(TypeError, match="must be a tf_lottery.RewindingSchedule") as refused:
        check_schedule(make(tfmot.sparsity.keras))
    rounds, rate = re.search(r"RewindingSchedule\(rounds=(\d+), steps_per_round=[^,]+, "
                             r"prune_rate=([\d.]+)\)", str(refused.value)).groups()
    suggested = tfl.RewindingSchedule(rounds=int(rounds), steps_per_round=1,
                                      prune_rate=float(rate))
    assert suggested.sparsity("any", int(rounds)) == pytest.approx(sparsity, abs=0.005)
    assert 0.15 < suggested.prune_rate < 0.25


def test_tfmot_s_block_of_n_inputs_is_block_size_n():
    """Issue 31, item 13: TF-MOT's (n, 1) blocks of a Dense kernel are tf_lottery's n."""
    assert tfl.ImpSettings(block_size=(4, 1)).block_size == 4
    assert tfl.ImpSettings(block_size=[16, 1]).block_size == 16
    with pytest.raises(ValueError, match=r"got \(1, 4\).*Pass block_size=4"):
        tfl.ImpSettings(block_size=(1, 4))
