"""cost_estimate: multiply-adds per layer, and where sparsity can pay on this machine."""

import pytest

import tf_lottery as tfl


def _conv_net(K):
    inputs = K.Input((8, 8, 3))
    x = K.layers.Conv2D(4, 3, name="conv")(inputs)                          # 6x6x4
    x = K.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)     # 6x6x4
    x = K.layers.SeparableConv2D(8, 3, name="separable")(x)                 # 4x4x8
    x = K.layers.BatchNormalization(name="norm")(x)
    return K.Model(inputs, K.layers.Dense(10, name="output")(K.layers.Flatten()(x)),
                   name="convnet")


def test_multiply_adds_per_layer_match_hand_counts(K):
    sequence = K.Input((10, 2))
    conv1d = K.Model(sequence, K.layers.Conv1D(3, 4, name="conv1d")(sequence))
    assert [layer.multiply_adds for layer in tfl.cost_estimate(conv1d).layers] == [7 * 4 * 2 * 3]

    estimate = tfl.cost_estimate(_conv_net(K))
    assert [(layer.name, layer.multiply_adds) for layer in estimate.layers] == [
        ("conv", 6 * 6 * 3 * 3 * 3 * 4),           # positions x kernel size: 3,888
        ("depthwise", 6 * 6 * 3 * 3 * 4),          # 1,296
        ("separable", 4 * 4 * (3 * 3 * 4 + 4 * 8)),  # depthwise and pointwise: 1,088
        ("output", 128 * 10)]
    assert estimate.multiply_adds == 7552 and estimate.skipped == ("norm (BatchNormalization)",)
    # unstructured and 1x4 blocks never pay in convolutions here; 1x4 pays in Dense at 95%
    assert estimate.cannot_pay("unstructured") == ["conv", "depthwise", "separable", "output"]
    assert estimate.cannot_pay("1x4") == ["conv", "depthwise", "separable"]
    assert estimate.skippable("1x4", 0.95) == pytest.approx(0.95 * 1280 / 7552)
    assert estimate.skippable("1x4", 0.9) == 0 and estimate.skippable("channels", 0.5) == 0.5
    table = str(estimate)
    assert "this machine (x86 with AVX-512" in table and "another CPU" in table
    assert "Unstructured sparsity cannot pay in: conv, depthwise, separable, output" in table
    assert "slower/even/faster" in table  # the output layer's 1x4 verdicts at 80/90/95%


def test_bad_input_is_refused_with_the_fix(K):
    model = _conv_net(K)
    with pytest.raises(ValueError, match="granularity must be one of.*'1x4'"):
        tfl.cost_estimate(model, granularity="1x8")
    with pytest.raises(ValueError, match=r"sparsities must be fractions.*got \(0.9, 1.5\)"):
        tfl.cost_estimate(model, sparsities=(0.9, 1.5))
    images = K.Input((None, None, 3))
    dynamic = K.Model(images, K.layers.Conv2D(2, 3, name="conv")(images))
    with pytest.raises(ValueError, match=r"layer 'conv' \(Conv2D\) has no static output "
                                         r"shape.*keras.Input\(shape=...\)"):
        tfl.cost_estimate(dynamic)
