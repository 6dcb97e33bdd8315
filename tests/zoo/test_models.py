import numpy as np
import pytest

from tf_lottery.zoo import models


def _kernel_weights(model):
    return sum(int(np.prod(v.shape)) for v in model.weights if "kernel" in v.name)


@pytest.mark.parametrize("name, shape, millions", [
    ("lenet_300_100", (784,), 0.266), ("lenet_300_100", (28, 28, 1), 0.266),
    ("conv2", (32, 32, 3), 4.3), ("conv4", (32, 32, 3), 2.4),
    # the paper's table says 1.7M for Conv-6, but the architecture it describes (and this
    # one) has 1.14M convolution and 1.12M fully connected weights
    ("conv6", (32, 32, 3), 2.26),
])
def test_zoo_models_have_the_papers_sizes(name, shape, millions):
    model = models.build(name, shape, classes=10, seed=0)
    assert _kernel_weights(model) / 1e6 == pytest.approx(millions, abs=0.05)
    assert model.layers[-1].name == "output" and model.output_shape == (None, 10)


def test_gaussian_glorot_initialisation_is_seeded():
    a = models.build("lenet_300_100", (784,), 10, seed=1).get_weights()[0]
    b = models.build("lenet_300_100", (784,), 10, seed=1).get_weights()[0]
    c = models.build("lenet_300_100", (784,), 10, seed=2).get_weights()[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.std() == pytest.approx(np.sqrt(2 / (784 + 300)), rel=0.05)  # Glorot normal
    # truncated at two standard deviations of the untruncated normal (Keras' GlorotNormal)
    assert np.abs(a).max() <= 2 * np.sqrt(2 / (784 + 300)) / 0.87962566 + 1e-6


def test_unknown_model_suggests_the_nearest():
    with pytest.raises(ValueError, match="unknown model 'conv5'.*Did you mean"):
        models.build("conv5", (32, 32, 3), 10)
