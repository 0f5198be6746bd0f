"""The original MNIST files (IDX format, gzipped), read offline with NumPy (docs/METHOD.md §7).

``cbcn_tf.data`` uses this when ``dataset: mnist`` comes with a ``data_dir`` holding the four
files, e.g. ``../shared/datasets/mnist``; each file's md5 is checked against the published one.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os

import numpy as np

from cbcn_tf.errors import DataError

# The original MNIST release (LeCun, Cortes, Burges): split -> (images file, labels file), and
# the md5 of each gzip file as published with it.
MNIST_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MNIST_IDX_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def has_idx_files(data_dir) -> bool:
    """Whether ``data_dir`` holds MNIST IDX files (else it is a TFDS data dir)."""
    folder = os.path.expanduser(data_dir)
    return any(os.path.exists(os.path.join(folder, name))
               for names in MNIST_IDX_FILES.values() for name in names)


def read_idx(path, *, md5: str | None = None) -> np.ndarray:
    """Read one IDX file (gzipped when the name ends in ``.gz``) into a NumPy array.

    IDX: two zero bytes, a type code (0x08 = uint8), the number of dimensions, one big-endian
    uint32 per dimension, then the data. ``md5`` (of the file as stored) is checked first.
    A missing, truncated or corrupt file raises `DataError` naming it.

    Example::

        read_idx("../shared/datasets/mnist/t10k-labels-idx1-ubyte.gz").shape   # (10000,)
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise DataError(f"Cannot read MNIST file {path}: {exc.strerror}. Put the four original "
                         "IDX .gz files in data_dir.") from None
    if md5 is not None and hashlib.md5(raw).hexdigest() != md5:
        raise DataError(f"MNIST file {path} is damaged (md5 {hashlib.md5(raw).hexdigest()}, "
                         f"expected {md5}); download it again.")
    try:
        data = gzip.decompress(raw) if path.endswith(".gz") else raw
    except (OSError, EOFError) as exc:
        raise DataError(f"MNIST file {path} is not a valid gzip file ({exc}); download it "
                         "again.") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes; expected the original "
                         "MNIST files.")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(data[4:header], ">u4"))
    if len(data) != header + int(np.prod(shape)):
        raise DataError(f"{path} holds {len(data) - header} data bytes but its header announces "
                         f"shape {shape}; the file is truncated, download it again.")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=4)
def load_split(folder, split):
    """(uint8 images (N, 28, 28, 1), int64 labels) of one split read from the IDX files."""
    image_file, label_file = MNIST_IDX_FILES[split]
    paths = [os.path.join(folder, name) for name in (image_file, label_file)]
    for path in paths:
        if not os.path.exists(path):
            names = ", ".join(n for pair in MNIST_IDX_FILES.values() for n in pair)
            raise DataError(f"MNIST file {path} is missing; data_dir must hold the four "
                             f"original IDX files ({names}).")
    images, labels = (read_idx(path, md5=MNIST_IDX_MD5.get(os.path.basename(path)))
                      for path in paths)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise DataError(f"{paths[0]} and {paths[1]} do not fit together (images "
                         f"{images.shape}, labels {labels.shape}).")
    return images[..., None], labels.astype(np.int64)
