import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tf_lottery.zoo.data import load_mnist  # noqa: E402

from helpers import KERASES  # noqa: E402


@pytest.fixture(params=list(KERASES))
def K(request):
    """The Keras module a parametrized test builds its models with: tf_keras, then Keras 3."""
    return KERASES[request.param]


@pytest.fixture(scope="session")
def mnist_slice():
    """600 training and 200 test MNIST images from the embedded, checksum-verified copy."""
    (x_train, y_train), (x_test, y_test) = load_mnist()
    return (x_train[:600], y_train[:600]), (x_test[:200], y_test[:200])

