"""MNIST-format datasets read from their original IDX .gz files, checksums verified.

The repository embeds MNIST under ``examples/data/mnist`` so the main job runs offline.
Every file is checked against the MD5 published with the dataset before it is parsed:
a truncated or altered download is an error, never a silently wrong experiment.

Example::

    from tf_lottery.zoo.data import load_mnist, load_dataset
    (x_train, y_train), (x_test, y_test) = load_mnist()   # float32 in [0, 1], (N, 784)
    splits = load_dataset("mnist")   # images (N, 28, 28, 1), 5,000 held out for validation
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import numbers
import os
import pickle
import struct
from pathlib import Path

import numpy as np

from tf_lottery.foundations.errors import DataError

# MD5 of the compressed files, as published with the datasets.
_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

EMBEDDED_MNIST_DIR = Path(__file__).resolve().parents[2] / "examples" / "data" / "mnist"
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801


def _verified_bytes(path: Path, md5: str) -> bytes:
    if not path.is_file():
        raise DataError(
            f"dataset file {path} does not exist; pass data_dir= pointing at the folder "
            f"that holds {path.name}")
    compressed = path.read_bytes()
    actual = hashlib.md5(compressed).hexdigest()
    if actual != md5:
        raise DataError(
            f"{path} has MD5 {actual}, expected {md5}: the file is damaged or not the "
            "published one; replace it with an intact copy")
    return gzip.decompress(compressed)


def read_idx(path: str | os.PathLike, md5: str) -> np.ndarray:
    """Read one IDX .gz file after checking its MD5: uint8 images (N, rows, cols) or labels (N,)."""
    path = Path(path)
    raw = _verified_bytes(path, md5)
    magic, count = struct.unpack(">II", raw[:8])
    if magic == _IMAGES_MAGIC:
        rows, cols = struct.unpack(">II", raw[8:16])
        shape, offset = (count, rows, cols), 16
    elif magic == _LABELS_MAGIC:
        shape, offset = (count,), 8
    else:
        raise DataError(f"{path} has IDX magic {magic:#010x}, expected an image or label file")
    data = np.frombuffer(raw, dtype=np.uint8, offset=offset)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} holds {data.size} bytes of data, its header says {shape}")
    return data.reshape(shape)


def _load_idx_dataset(data_dir: str | os.PathLike, checksums: dict[str, str]):
    """Load an MNIST-format dataset: ((x_train, y_train), (x_test, y_test)).

    Images come back as float32 in [0, 1] flattened to (N, rows * cols), labels as int64.
    """
    data_dir = Path(data_dir)

    def split(prefix):
        images = read_idx(data_dir / f"{prefix}-images-idx3-ubyte.gz",
                          checksums[f"{prefix}-images-idx3-ubyte.gz"])
        labels = read_idx(data_dir / f"{prefix}-labels-idx1-ubyte.gz",
                          checksums[f"{prefix}-labels-idx1-ubyte.gz"])
        if len(images) != len(labels):
            raise DataError(f"{data_dir}: {len(images)} {prefix} images but {len(labels)} labels")
        flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
        return flat, labels.astype(np.int64)

    return split("train"), split("t10k")


def load_mnist(data_dir: str | os.PathLike | None = None):
    """MNIST from the repository's embedded copy (or ``data_dir``), checksums verified."""
    return _load_idx_dataset(data_dir or EMBEDDED_MNIST_DIR, _MNIST_FILES)


def load_fashion_mnist(data_dir: str | os.PathLike):
    """Fashion-MNIST from a folder holding its four IDX .gz files, checksums verified."""
    return _load_idx_dataset(data_dir, _FASHION_MNIST_FILES)


def load_cifar10(data_dir: str | os.PathLike):
    """CIFAR-10 from its Python batches (``data_batch_1`` .. ``5``, ``test_batch``).

    Images come back as float32 in [0, 1], shaped (N, 32, 32, 3); labels as int64.
    """
    data_dir = Path(data_dir)

    def read(names):
        images, labels = [], []
        for name in names:
            path = data_dir / name
            if not path.is_file():
                raise DataError(f"CIFAR-10 file {path} does not exist; pass data_dir= pointing "
                                "at the extracted cifar-10-batches-py folder")
            with open(path, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            data, batch_labels = batch[b"data"], batch[b"labels"]
            if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(batch_labels):
                raise DataError(f"{path} is not a CIFAR-10 batch: data {data.shape}, "
                                f"{len(batch_labels)} labels")
            images.append(data)
            labels.extend(batch_labels)
        x = np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return x.astype(np.float32) / 255.0, np.asarray(labels, dtype=np.int64)

    return read([f"data_batch_{i}" for i in range(1, 6)]), read(["test_batch"])


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train, validation and test arrays of one dataset; images keep their shape."""

    name: str
    train: tuple
    validation: tuple
    test: tuple
    classes: int

    @property
    def input_shape(self) -> tuple:
        return self.train[0].shape[1:]


_IMAGE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1)}
_LOADERS = {"mnist": load_mnist, "fashion_mnist": load_fashion_mnist, "cifar10": load_cifar10}
DATASETS = tuple(_LOADERS)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 validation_size: int = 5000, train_size: int | None = None,
                 seed: int = 0) -> Splits:
    """A dataset split three ways: ``validation_size`` training images (a seeded random
    choice) are held out for validation, as the paper does; ``train_size`` keeps only that
    many of the rest (for quick runs)."""
    if name not in _LOADERS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if name != "mnist" and data_dir is None:
        raise DataError(f"dataset {name!r} needs data_dir: the folder holding its files")
    (x_train, y_train), (x_test, y_test) = _LOADERS[name](data_dir)
    if name in _IMAGE_SHAPES:
        x_train = x_train.reshape((-1,) + _IMAGE_SHAPES[name])
        x_test = x_test.reshape((-1,) + _IMAGE_SHAPES[name])
    if isinstance(validation_size, bool) or not isinstance(validation_size, numbers.Integral) \
            or not 0 <= validation_size < len(x_train):
        raise DataError(f"validation_size must be a whole number in [0, {len(x_train)}), got "
                        f"{validation_size!r}")
    if train_size is not None and (isinstance(train_size, bool) or not isinstance(
            train_size, numbers.Integral) or train_size < 1):
        raise DataError(f"train_size must be a whole number >= 1 (or left out for all the "
                        f"training data), got {train_size!r}")
    order = np.random.default_rng(seed).permutation(len(x_train))
    held, kept = order[:validation_size], order[validation_size:]
    if train_size is not None:
        kept = kept[:train_size]
    return Splits(name=name, train=(x_train[kept], y_train[kept]),
                  validation=(x_train[held], y_train[held]), test=(x_test, y_test),
                  classes=int(max(y_train.max(), y_test.max())) + 1)
