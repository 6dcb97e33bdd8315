"""Channel groups traced through real Sequential and functional models of both Kerases."""

import numpy as np
import pytest

from tf_lottery.core.channels import ChannelGroup
from tf_lottery.engines.channel_graph import channel_plan
from tf_lottery.foundations.errors import SettingError

from helpers import concat_net, conv_sequential, inverted_residual_net, residual_net

OUTPUT = "its channels reach the model's output through 'output' (Dense)"


def group(size, scored, *members):
    return ChannelGroup(size, scored, [(path, -1) if isinstance(path, str) else path
                                       for path in members])


def test_a_sequential_conv_net_has_a_group_per_convolution(K):
    plan = channel_plan(conv_sequential(K))
    assert plan.groups == (
        group(8, ["conv1/kernel"], "conv1/kernel", "conv1/bias", "bn1/gamma", "bn1/beta"),
        group(6, ["conv2/kernel"], "conv2/kernel", "conv2/bias"))
    assert dict(plan.left_dense) == {"output/kernel": OUTPUT}


def test_an_add_merges_the_groups_it_joins(K):
    plan = channel_plan(residual_net(K))
    assert plan.groups == (
        group(6, ["stem/kernel", "conv_b/kernel"], "stem/kernel", "stem/bias",
              "conv_b/kernel", "conv_b/bias", "bn_b/gamma", "bn_b/beta"),
        group(10, ["conv_a/kernel"], "conv_a/kernel", "conv_a/bias"))
    assert dict(plan.left_dense) == {"output/kernel": OUTPUT}


def test_concatenated_groups_stay_apart_in_the_order_of_the_layers(K):
    model = concat_net(K)
    plan = channel_plan(model)
    assert set(plan.groups) == {
        group(4, ["left/kernel"], "left/kernel", "left/bias"),
        group(6, ["right/kernel"], "right/kernel", "right/bias", "bn_right/gamma",
              "bn_right/beta"),
        group(8, ["merge/pointwise_kernel"], "merge/pointwise_kernel", "merge/bias"),
        group(4, ["hidden/kernel"], "hidden/kernel", "hidden/bias")}
    producers = [group.scored[0].split("/")[0] for group in plan.groups]
    assert producers == [layer.name for layer in model.layers if layer.name in producers]


def test_an_inverted_residual_block_carries_channels_through_the_depthwise_conv(K):
    plan = channel_plan(inverted_residual_net(K))
    depthwise = "depthwise/depthwise_kernel" if K.__name__ == "tf_keras" else "depthwise/kernel"
    assert plan.groups == (
        group(8, ["stem/kernel", "project/kernel"], "stem/kernel", "stem/bias",
              "stem_bn/gamma", "stem_bn/beta", "project/kernel", "project_bn/gamma",
              "project_bn/beta"),
        group(16, ["expand/kernel"], "expand/kernel", "expand_bn/gamma", "expand_bn/beta",
              (depthwise, -2), "depthwise_bn/gamma", "depthwise_bn/beta"))


def test_channels_that_would_not_stay_zero_or_lose_their_layout_are_left_dense(K):
    layers = K.layers
    x = K.Input((8, 8, 3))
    gate = layers.Conv2D(4, 1, activation="sigmoid", name="gate")(x)
    soft = layers.Activation("softplus", name="soft")(layers.Conv2D(4, 1, name="smooth")(x))
    y = layers.Conv2D(4, 3, padding="same", activation="relu", name="kept")(
        layers.Multiply(name="gated")([gate, soft]))
    y = layers.Conv2D(2, 1, name="folded")(y)
    y = layers.Reshape((128,), name="reshape")(y)
    plan = channel_plan(K.Model(x, layers.Dense(3, name="output")(y)))
    assert plan.groups == (group(4, ["kept/kernel"], "kept/kernel", "kept/bias"),)
    assert dict(plan.left_dense) == {
        "gate/kernel": "'gate' (Conv2D) has activation sigmoid, which is 0.5 at 0: a pruned "
                       "channel would not be zero",
        "smooth/kernel": "its channels go into 'soft' (Activation), whose softplus(0) = "
                         "0.693147: a pruned channel would not stay zero",
        "folded/kernel": "its channels go into 'reshape' (Reshape), whose channel layout "
                         "tf_lottery cannot follow",
        "output/kernel": OUTPUT}


def test_nested_models_and_shared_layers_are_left_dense(K):
    layers = K.layers
    block = K.Sequential([K.Input((8, 8, 4)), layers.Conv2D(4, 3, padding="same",
                                                            name="inner")], name="block")
    x = K.Input((8, 8, 3))
    y = block(layers.Conv2D(4, 1, name="before")(x))
    shared = layers.Conv2D(4, 1, name="shared")
    y = layers.Conv2D(4, 1, name="after")(shared(shared(y)))
    plan = channel_plan(K.Model(x, layers.GlobalAveragePooling2D(name="pool")(y)))
    assert plan.groups == ()
    assert dict(plan.left_dense) == {
        "before/kernel": "its channels go into 'block' (Sequential), a nested model, which "
                         "channel tickets do not descend into",
        "block/inner/kernel": "it is inside the nested model 'block', which channel tickets do "
                              "not descend into",
        "shared/kernel": "'shared' (Conv2D) is not a layer whose channels tf_lottery follows",
        "after/kernel": "its channels reach the model's output through 'pool' "
                        "(GlobalAveragePooling2D)"}


def subclassed(K):
    class Net(K.Model):
        def __init__(self):
            super().__init__()
            self.conv = K.layers.Conv2D(4, 3, name="conv")
            self.pool = K.layers.GlobalAveragePooling2D()
            self.out = K.layers.Dense(2, name="output")

        def call(self, x):
            return self.out(self.pool(self.conv(x)))

    net = Net()
    net(np.zeros((1, 8, 8, 3), np.float32))
    return net


def test_a_subclassed_model_is_refused_unless_its_groups_are_named(K):
    net = subclassed(K)
    with pytest.raises(SettingError, match="cannot be traced through its Python code.*groups="):
        channel_plan(net)
    named = group(4, ["conv/kernel"], "conv/kernel", "conv/bias")
    assert channel_plan(net, groups=[named]).groups == (named,)
    with pytest.raises(SettingError, match=r"'conv/bias' \(shape \(4,\)\) has no axis -1 of 5"):
        channel_plan(net, groups=[group(5, ["conv/kernel"], "conv/bias")])
    with pytest.raises(SettingError, match="scored kernels must be among its members"):
        channel_plan(net, groups=[group(4, ["conv/kernel"], "conv/bias")])
    with pytest.raises(SettingError, match="'conv/gamma' is not a weight of the model"):
        channel_plan(net, groups=[group(4, ["conv/gamma"], "conv/gamma")])
