"""The original MNIST files (IDX format, gzipped or gunzipped), read offline with NumPy
(docs/METHOD.md §7).

``cbcn_tf.data`` uses this when ``dataset: mnist`` comes with a ``data_dir`` holding IDX
files. Each file may be as published (``train-images-idx3-ubyte.gz``) or gunzipped
(``train-images-idx3-ubyte``, or ``train-images.idx3-ubyte`` as some mirrors name it); its md5
is checked against the published one of that form. A split needs only its own two files, so a
folder with the ``t10k-*`` files alone serves the test split.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os

import numpy as np

from cbcn_tf.errors import DataError

# The original MNIST release (LeCun, Cortes, Burges): split -> (images file, labels file) as
# published, and the md5 of each file: gzipped as published, and of its gunzipped content.
MNIST_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MNIST_IDX_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
_GZIP_MAGIC = b"\x1f\x8b"


def idx_names(name: str) -> tuple:
    """The file names accepted for the published file ``name``: as published, gunzipped, and
    gunzipped with the ``.idx`` spelling of some mirrors.

    Example:
        >>> idx_names("t10k-labels-idx1-ubyte.gz")
        ('t10k-labels-idx1-ubyte.gz', 't10k-labels-idx1-ubyte', 't10k-labels.idx1-ubyte')
    """
    raw = name[:-len(".gz")]
    return name, raw, raw.replace("-idx", ".idx")


def has_idx_files(data_dir) -> bool:
    """Whether ``data_dir`` holds IDX-like files (``*idx1-ubyte*``, ``*idx3-ubyte*``, gzipped
    or not); else it is a TFDS data dir. A folder with some of them is an IDX folder, so a
    missing or misnamed file is an error naming it, never a TFDS download."""
    try:
        names = os.listdir(os.path.expanduser(data_dir))
    except OSError:
        return False
    return any("idx1-ubyte" in name or "idx3-ubyte" in name for name in names)


def read_idx(path, *, md5: str | None = None) -> np.ndarray:
    """Read one IDX file, gzipped or not (told by its first bytes), into a NumPy array.

    IDX: two zero bytes, a type code (0x08 = uint8), the number of dimensions, one big-endian
    uint32 per dimension, then the data. ``md5`` (of the file as stored) is checked first.
    A missing, truncated or corrupt file raises `DataError` naming it.

    Example::

        read_idx("mnist/t10k-labels-idx1-ubyte.gz").shape   # (10000,)
    """
    stored = _read_bytes(path)
    _check_md5(path, stored, md5)
    return _parse(path, _gunzip(path, stored))


@functools.lru_cache(maxsize=4)
def load_split(folder, split):
    """(uint8 images (N, 28, 28, 1), int64 labels) of one split read from its two IDX files
    (the other split's files need not be in ``folder``)."""
    paths = [_find(folder, name, split) for name in MNIST_IDX_FILES[split]]
    images, labels = (_read_original(path, name)
                      for path, name in zip(paths, MNIST_IDX_FILES[split]))
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise DataError(f"{paths[0]} and {paths[1]} do not fit together (images "
                        f"{images.shape}, labels {labels.shape}).")
    return images[..., None], labels.astype(np.int64)


def _find(folder, name, split) -> str:
    """The path of the published file ``name`` (of ``split``) in ``folder``, in any accepted
    form."""
    for candidate in idx_names(name):
        path = os.path.join(folder, candidate)
        if os.path.exists(path):
            return path
    names = " and ".join(MNIST_IDX_FILES[split])
    raise DataError(f"MNIST file {os.path.join(folder, name)} is missing (also looked for "
                    f"{' and '.join(idx_names(name)[1:])}); the {split!r} split reads the "
                    f"original IDX files {names} (gzipped or not): put them in {folder}.")


def _read_original(path, name) -> np.ndarray:
    """Read the published file ``name`` found at ``path``, checking the md5 of its form."""
    stored = _read_bytes(path)
    gzipped = stored[:2] == _GZIP_MAGIC
    _check_md5(path, stored, MNIST_IDX_MD5.get(name if gzipped else idx_names(name)[1]),
               form="gzipped" if gzipped else "gunzipped")
    return _parse(path, _gunzip(path, stored))


def _read_bytes(path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise DataError(f"Cannot read MNIST file {path}: {exc.strerror}. Put the original IDX "
                        "files in data_dir.") from None


def _check_md5(path, stored: bytes, md5: str | None, form: str = "") -> None:
    digest = hashlib.md5(stored).hexdigest()
    if md5 is not None and digest != md5:
        original = f" of the {form} original" if form else ""
        raise DataError(f"MNIST file {path} is damaged (md5 {digest}, expected {md5}"
                        f"{original}); download it again.")


def _gunzip(path, stored: bytes) -> bytes:
    if stored[:2] != _GZIP_MAGIC:
        return stored
    try:
        return gzip.decompress(stored)
    except (OSError, EOFError) as exc:
        raise DataError(f"MNIST file {path} is not a valid gzip file ({exc}); download it "
                        "again.") from None


def _parse(path, data: bytes) -> np.ndarray:
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes; expected the original "
                        "MNIST files.")
    header = 4 + 4 * data[3]
    if len(data) < header:
        raise DataError(f"{path} ends inside its IDX header; the file is truncated, download it "
                        "again.")
    shape = tuple(int(v) for v in np.frombuffer(data[4:header], ">u4"))
    if len(data) != header + int(np.prod(shape)):
        raise DataError(f"{path} holds {len(data) - header} data bytes but its header announces "
                        f"shape {shape}; the file is truncated, download it again.")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)
