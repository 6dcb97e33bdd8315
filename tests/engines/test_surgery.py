"""Shrinking real models of both Kerases: the pruned channels go, the outputs stay, and the
smaller model runs in LiteRT."""

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import tf_lottery as tfl
from tf_lottery.engines import engine_for
from tf_lottery.engines.channel_graph import channel_plan
from tf_lottery.engines.surgery import shrink, shrink_summary
from tf_lottery.foundations.errors import SettingError

from helpers import CONV_NETS, conv_sequential

ATOL = 1e-5


def randomized(model, seed=0):
    """``model`` with every weight drawn at random (variances positive), so no bias or
    normalization is 0 or 1 by chance of its initializer."""
    rng = np.random.default_rng(seed)
    for path, variable in engine_for(model).model_weights(model).items():
        value = rng.normal(0, 0.5, variable.shape)
        variable.assign(np.abs(value) + 0.5 if path.endswith("variance") else value)
    return model


def zero_channels(weights, members, channels):
    """Zero ``channels`` of every member weight, as channel masks leave them."""
    for path, axis in members:
        value = np.array(weights[path].numpy())
        index = [slice(None)] * value.ndim
        index[axis] = channels
        value[tuple(index)] = 0
        weights[path].assign(value)


def prune_channels(model, keep=lambda size: size // 2 + 1):
    """Zero all but ``keep(size)`` channels (a random choice) of every group; the width
    each producer layer should shrink to."""
    rng = np.random.default_rng(1)
    weights = engine_for(model).model_weights(model)
    widths = {}
    for group in channel_plan(model).groups:
        kept = keep(group.size)
        zero_channels(weights, group.members, rng.permutation(group.size)[kept:])
        widths.update(dict.fromkeys((path.split("/")[0] for path in group.scored), kept))
    return widths


def inputs_for(model, n=6):
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(2).normal(size=(n, *shape)).astype(np.float32)


def litert_outputs(model, x, tmp_path):
    """``model`` converted to TFLite and run in LiteRT, one input at a time."""
    converter = engine_for(model).tflite_converter(model, tmp_path)
    interpreter = Interpreter(model_content=converter.convert(), num_threads=1)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    outputs = []
    for example in x:
        interpreter.set_tensor(inp["index"], example[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"])[0])
    return np.stack(outputs)


@pytest.mark.parametrize("net", list(CONV_NETS))
def test_shrinking_removes_the_zeroed_channels_and_keeps_the_outputs(K, net, tmp_path):
    model = randomized(CONV_NETS[net](K))
    widths = prune_channels(model)
    small = shrink(model)
    assert type(small) is type(model)
    summary = shrink_summary(model, small)
    assert {name: after for name, (_, after) in summary.items() if name in widths} == widths
    assert all(before == after for name, (before, after) in summary.items()
               if name not in widths)  # the output layer
    assert small.count_params() < model.count_params()
    assert [group.size for group in channel_plan(small).groups] == [
        widths[group.scored[0].split("/")[0]] for group in channel_plan(model).groups]
    x = inputs_for(model)
    expected = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(small(x, training=False)), expected, atol=ATOL)
    np.testing.assert_allclose(litert_outputs(small, x, tmp_path), expected, atol=ATOL)


def test_a_group_whose_channels_are_all_zero_keeps_one(K):
    model = randomized(conv_sequential(K))
    widths = prune_channels(model, keep=lambda size: 0)
    assert widths == {"conv1": 0, "conv2": 0}
    small = shrink(model)
    assert [small.get_layer(name).get_config()["filters"] for name in widths] == [1, 1]
    x = inputs_for(model)
    np.testing.assert_allclose(np.asarray(small(x)), np.asarray(model(x)), atol=ATOL)


def test_a_channel_with_one_nonzero_member_stays(K):
    model = randomized(conv_sequential(K))
    weights = engine_for(model).model_weights(model)
    zero_channels(weights, [("conv1/kernel", -1), ("conv1/bias", -1), ("bn1/gamma", -1)],
                  [0, 1])  # bn1/beta still shifts channels 0 and 1
    zero_channels(weights, [("bn1/beta", -1)], [1])
    assert shrink_summary(model, shrink(model))["conv1"] == (8, 7)


def test_tfl_shrink_applies_a_lottery_models_masks_first(K, tmp_path):
    model = randomized(conv_sequential(K))
    schedule = tfl.RewindingSchedule(rounds=1, steps_per_round=1, prune_rate=0.2)
    lottery = tfl.prune_with_rewinding(model, schedule, checkpoint_dir=tmp_path / "rewind")
    engine = engine_for(lottery)
    mask = engine.pruned_weights(lottery)["conv1/kernel"].mask
    dropped = [2, 5, 6]
    kept = np.ones(mask.shape, np.float32)
    kept[..., dropped] = 0
    mask.assign(kept)  # the kernel's columns stay nonzero: only the mask drops them
    zero_channels(engine.model_weights(lottery),
                  [("conv1/bias", -1), ("bn1/gamma", -1), ("bn1/beta", -1)], dropped)
    small = tfl.shrink(lottery)
    assert tfl.shrink_summary(lottery, small)["conv1"] == (8, 5)
    x = inputs_for(model)
    np.testing.assert_allclose(np.asarray(small(x)), np.asarray(tfl.strip_pruning(lottery)(x)),
                               atol=ATOL)


def test_a_subclassed_model_is_refused(K):
    class Net(K.Model):
        def __init__(self):
            super().__init__()
            self.conv = K.layers.Conv2D(4, 3, name="conv")

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(SettingError, match="cannot be traced through its Python code"):
        tfl.shrink(net)
