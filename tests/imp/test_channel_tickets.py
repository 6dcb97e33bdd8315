"""Channel tickets through the one-call path on both engines: whole channels pruned with
their bias and BatchNormalization (exact zeros out of a pruned channel), rewinds bit for
bit, refill, a residual group, save/load, and tfl.shrink of the trained ticket."""

import numpy as np
import pytest

import tf_lottery as tfl
from tf_lottery.foundations.errors import SettingError

from helpers import StepProbe, compile_for_classification, weights_by_path

STEPS = 10
SCHEDULE = tfl.RewindingSchedule(rounds=2, steps_per_round=STEPS, prune_rate=0.5)


def _residual_net(keras):
    """conv1 -> BN -> ReLU, conv2 -> BN added to it (one group), a depthwise convolution,
    pooling and a Dense output (left dense: its channels are the classes)."""
    keras.utils.set_random_seed(3)
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = layers.ReLU(name="relu1")(layers.BatchNormalization(name="bn1")(
        layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)))
    y = layers.BatchNormalization(name="bn2")(layers.Conv2D(8, 3, padding="same",
                                                            name="conv2")(x))
    x = layers.Add(name="add")([x, y])
    x = layers.ReLU(name="relu2")(layers.DepthwiseConv2D(3, padding="same", name="dw")(x))
    outputs = layers.Dense(4, name="output")(layers.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inputs, outputs)


def _data(n=100):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    return x, (x[:, :, :, 0].mean(axis=(1, 2)) > 0).astype("int64") + \
        2 * (x[:, 0, 0, 1] > 0).astype("int64")


def _kept_channels(mask, axis=-1):
    moved = np.moveaxis(mask, axis, -1).reshape(-1, mask.shape[axis])
    assert np.array_equal(moved.all(axis=0), moved.any(axis=0)), "a channel is cut in part"
    return moved.any(axis=0)


@pytest.mark.parametrize("refill", [False, True], ids=["channel", "refill"])
def test_channel_ticket_prunes_whole_channels_rewinds_exactly_and_shrinks(tmp_path, K, refill):
    model = _residual_net(K)
    theta0 = weights_by_path(model)
    pruned = compile_for_classification(tfl.prune_with_rewinding(
        model, SCHEDULE, checkpoint_dir=tmp_path / "ckpt", granularity="channel",
        refill=refill))
    plan = pruned.channel_plan
    assert [group.scored for group in plan.groups] == [("conv1/kernel", "conv2/kernel")]
    assert "output/kernel" in plan.left_dense
    assert set(pruned.masks) == set(plan.paths())  # bias, gamma, beta, depthwise included

    def at_round_start(step):
        if step % STEPS or not 0 < step < SCHEDULE.total_steps:
            return
        masks, weights = pruned.masks, weights_by_path(pruned)
        kept = _kept_channels(masks["conv1/kernel"])
        assert kept.sum() == 8 // 2 ** (step // STEPS)
        for path, axis in plan.groups[0].members:
            assert np.array_equal(_kept_channels(masks[path], axis), kept), path
            np.testing.assert_array_equal(weights[path][masks[path]],
                                          theta0[path][masks[path]])  # rewound bit for bit
            assert np.all(weights[path][~masks[path]] == 0)
    x, y = _data()
    pruned.fit(x, y, batch_size=20, epochs=pruned.epochs(5), verbose=0,
               callbacks=[StepProbe(at_round_start)])
    assert [r.weights_remaining for r in pruned.rounds] == [1.0, 0.5, 0.25]

    ticket = tfl.strip_pruning(pruned)
    kept = _kept_channels(pruned.masks["conv1/kernel"])
    for name in ("bn1", "bn2", "relu2"):  # a pruned channel outputs exact zeros
        out = K.Model(ticket.inputs, ticket.get_layer(name).output).predict(x[:8], verbose=0)
        assert np.all(out[..., ~kept] == 0) and np.any(out[..., kept] != 0), name

    small = tfl.shrink(ticket)
    assert tfl.shrink_summary(ticket, small) == {"conv1": (8, 2), "conv2": (8, 2),
                                                 "output": (4, 4)}
    assert small.count_params() < ticket.count_params() / 4
    np.testing.assert_allclose(small.predict(x, verbose=0), ticket.predict(x, verbose=0),
                               atol=1e-5)


def test_a_saved_channel_ticket_loads_with_its_groups_and_masks(tmp_path, K):
    pruned = compile_for_classification(tfl.prune_with_rewinding(
        _residual_net(K), SCHEDULE, checkpoint_dir=tmp_path / "ckpt", granularity="channel"))
    x, y = _data()
    pruned.fit(x, y, batch_size=20, epochs=2, verbose=0)  # to round 1: half the channels
    path = tmp_path / ("net.keras" if K.__name__ == "keras" else "net_tf")
    pruned.save(path)
    loaded = tfl.load_model(path)
    assert loaded.channel_plan == pruned.channel_plan
    assert {p: m.tolist() for p, m in loaded.masks.items()} == \
        {p: m.tolist() for p, m in pruned.masks.items()}
    assert _kept_channels(loaded.masks["bn2/gamma"]).sum() == 4


def test_models_whose_channels_cannot_be_traced_are_refused_with_the_reason(K):
    keras = K
    mlp_out_only = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, name="output")])
    with pytest.raises(SettingError, match="finds no channel to prune.*model's output"):
        tfl.prune_with_rewinding(mlp_out_only, SCHEDULE, granularity="channel")
    with pytest.raises(SettingError, match="finds no channel.*exclude names 'conv2'"):
        tfl.prune_with_rewinding(_residual_net(K), SCHEDULE, granularity="channel",
                                 exclude=["conv2"])


def test_a_subclassed_model_prunes_the_channel_groups_it_is_given():
    import keras

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(6, 3, name="conv")
            self.head = keras.layers.Dense(4, name="head")

        def call(self, x):
            return self.head(keras.ops.mean(keras.ops.relu(self.conv(x)), axis=(1, 2)))

    net = Net()
    net(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(SettingError, match="no functional graph.*channel_groups="):
        tfl.prune_with_rewinding(net, SCHEDULE, granularity="channel")
    group = tfl.ChannelGroup(6, ["conv/kernel"], [("conv/kernel", -1), ("conv/bias", -1)])
    with pytest.raises(SettingError, match="no axis 0 of 6 channels"):
        tfl.prune_with_rewinding(net, SCHEDULE, granularity="channel", channel_groups=[
            tfl.ChannelGroup(6, ["conv/kernel"], [("conv/kernel", 0)])])
    pruned = compile_for_classification(tfl.prune_with_rewinding(
        net, SCHEDULE, granularity="channel", channel_groups=[group]))
    x, y = _data()
    pruned.fit(x, y, batch_size=20, epochs=pruned.epochs(5), verbose=0)
    assert _kept_channels(pruned.masks["conv/kernel"]).sum() == 2  # 6 * 0.25, rounded
    assert np.array_equal(_kept_channels(pruned.masks["conv/bias"]),
                          _kept_channels(pruned.masks["conv/kernel"]))
