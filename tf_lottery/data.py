"""MNIST-format datasets read from their original IDX .gz files, checksums verified.

The repository embeds MNIST under ``examples/data/mnist`` so the main job runs offline.
Every file is checked against the MD5 published with the dataset before it is parsed:
a truncated or altered download is an error, never a silently wrong experiment.

Example::

    from tf_lottery.data import load_mnist
    (x_train, y_train), (x_test, y_test) = load_mnist()   # float32 in [0, 1], (N, 784)
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np

# MD5 of the compressed files, as published with the datasets.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

EMBEDDED_MNIST_DIR = Path(__file__).resolve().parent.parent / "examples" / "data" / "mnist"
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801


class DataError(ValueError):
    """A dataset file is missing, damaged or not in IDX format."""


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


def load_idx_dataset(data_dir: str | os.PathLike, checksums: dict[str, str]):
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
    return load_idx_dataset(data_dir or EMBEDDED_MNIST_DIR, MNIST_FILES)


def load_fashion_mnist(data_dir: str | os.PathLike):
    """Fashion-MNIST from a folder holding its four IDX .gz files, checksums verified."""
    return load_idx_dataset(data_dir, FASHION_MNIST_FILES)
