"""tfl.xnnpack_sparse_settings: only the 1x1 convolutions XNNPACK runs sparse are pruned,
to 2/3 or more; models and schedules that cannot qualify are refused with the fix."""

import pytest

import tf_lottery as tfl
from tf_lottery.core.settings import ImpSettings
from tf_lottery.engines import engine_for
from tf_lottery.imp.wrap import pruned_paths

from helpers import mobilenet_like

SCHEDULE = tfl.RewindingSchedule(rounds=5, steps_per_round=10, prune_rate=0.2)  # 67.2%


def test_only_the_1x1_convolutions_after_the_stem_are_pruned(K):
    model = mobilenet_like(K)
    settings = tfl.xnnpack_sparse_settings(model, SCHEDULE)
    assert settings == {"exclude": ["stem", "head"]}  # IMP prunes no depthwise kernel
    paths = pruned_paths(engine_for(model), model, SCHEDULE, ImpSettings(**settings))
    assert sorted(paths) == ["pw1/kernel", "pw2/kernel"]


def _channels_first(K):
    return K.Sequential([K.Input((3, 16, 16)), K.layers.ZeroPadding2D(1),
                         K.layers.Conv2D(8, 3, strides=2, data_format="channels_first")])


@pytest.mark.parametrize("build, expected", [
    (_channels_first, "is channels_first"),
    (lambda K: K.Sequential([K.Input((4,)), K.layers.Dense(2)]), "is not a Conv2D"),
    (lambda K: mobilenet_like(K, stem_padding="same"), "padding 'same'"),
    (lambda K: mobilenet_like(K, keepdims=False), "build it with keepdims=True"),
    (lambda K: mobilenet_like(K, middle=K.layers.Conv2D(16, 3, padding="same", name="c3")),
     "layer 'c3' (Conv2D) between the first convolution and the GlobalAveragePooling2D is "
     "not a 1x1 convolution"),
    (lambda K: mobilenet_like(K, middle=K.layers.Activation("tanh", name="act")),
     "layer 'act' (Activation)"),
])
def test_a_model_xnnpack_cannot_run_sparse_is_refused_with_the_fix(K, build, expected):
    with pytest.raises(tfl.SettingError, match="XNNPACK") as refused:
        tfl.xnnpack_sparse_settings(build(K), SCHEDULE)
    assert expected in str(refused.value)


def test_a_model_without_global_average_pooling_is_refused():
    import keras

    x = inputs = keras.Input((16, 16, 3))
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.Conv2D(8, 3, strides=2, name="stem")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(tfl.SettingError, match="no GlobalAveragePooling2D.*keepdims=True"):
        tfl.xnnpack_sparse_settings(model, SCHEDULE)


def test_a_schedule_short_of_two_thirds_is_refused_with_the_rounds_that_reach_it():
    import keras

    short = tfl.RewindingSchedule(rounds=4, steps_per_round=10, prune_rate=0.2)  # 59.0%
    with pytest.raises(tfl.SettingError) as refused:
        tfl.xnnpack_sparse_settings(mobilenet_like(keras), short)
    assert "'pw1' 59.0% zeros after its 4 rounds" in str(refused.value)
    assert "rounds=5 at its prune rate 0.2 reaches it" in str(refused.value)
    faster = tfl.RewindingSchedule(rounds=2, steps_per_round=10, prune_rate=0.2,
                                   layer_rates={"pw1": 0.5, "pw2": 0.5})  # 75%
    assert tfl.xnnpack_sparse_settings(mobilenet_like(keras), faster)["exclude"][-1] == "head"
