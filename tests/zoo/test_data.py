import gzip
import hashlib
import shutil

import numpy as np
import pytest

from tf_lottery.zoo import data


def test_embedded_mnist_loads_with_published_shapes_and_label_counts():
    (x_train, y_train), (x_test, y_test) = data.load_mnist()
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert x_train.dtype == np.float32 and 0.0 == x_train.min() and x_train.max() == 1.0
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265,
                                             5851, 5949]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974,
                                            1009]


def _copy_embedded(tmp_path):
    target = tmp_path / "mnist"
    shutil.copytree(data.EMBEDDED_MNIST_DIR, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def test_a_damaged_file_is_named_and_refused(tmp_path):
    folder = _copy_embedded(tmp_path)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(raw[:-1] + bytes([(raw[-1] + 1) % 10])))
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz has MD5 .* damaged"):
        data.load_mnist(folder)


def test_a_missing_file_says_where_it_was_looked_for(tmp_path):
    folder = _copy_embedded(tmp_path)
    (folder / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(data.DataError, match=f"{folder}/train-images-idx3-ubyte.gz does not"):
        data.load_mnist(folder)


def test_read_idx_checks_the_header(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x09\x99" + b"\x00" * 12))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(data.DataError, match="IDX magic"):
        data.read_idx(path, md5)
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02"))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(data.DataError, match="holds 2 bytes"):
        data.read_idx(path, md5)


def test_load_dataset_holds_out_a_seeded_validation_split():
    splits = data.load_dataset("mnist", validation_size=5000)
    assert splits.input_shape == (28, 28, 1) and splits.classes == 10
    assert len(splits.train[0]) == 55000 and len(splits.validation[0]) == 5000
    assert len(splits.test[0]) == 10000
    again = data.load_dataset("mnist", validation_size=5000, train_size=100)
    assert np.array_equal(again.validation[1], splits.validation[1])
    assert np.array_equal(again.train[0], splits.train[0][:100])
    # held-out images are not in the training split
    train_rows = {row.tobytes() for row in splits.train[0][:2000].reshape(2000, -1)}
    assert not any(row.tobytes() in train_rows
                   for row in splits.validation[0][:500].reshape(500, -1))


def test_cifar10_batches_are_read_into_images(tmp_path):
    import pickle
    rng = np.random.default_rng(0)
    for name, count in [*[(f"data_batch_{i}", 4) for i in range(1, 6)], ("test_batch", 3)]:
        batch = {b"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, size=count))}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    (x, y), (xt, yt) = data.load_cifar10(tmp_path)
    assert x.shape == (20, 32, 32, 3) and xt.shape == (3, 32, 32, 3) and y.dtype == np.int64
    raw = pickle.loads((tmp_path / "data_batch_1").read_bytes())[b"data"][0]
    assert x[0, 0, 0, 0] == pytest.approx(raw[0] / 255) and \
        x[0, 0, 0, 1] == pytest.approx(raw[1024] / 255)  # R and G planes interleaved
    (tmp_path / "test_batch").unlink()
    with pytest.raises(data.DataError, match="test_batch does not exist"):
        data.load_cifar10(tmp_path)


def test_unknown_dataset_and_missing_data_dir():
    with pytest.raises(data.DataError, match="unknown dataset 'mnits'"):
        data.load_dataset("mnits")
    with pytest.raises(data.DataError, match="'cifar10' needs data_dir"):
        data.load_dataset("cifar10")
