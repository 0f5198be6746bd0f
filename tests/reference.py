"""Plain-loop NumPy references written from docs/METHOD.md §2-§5, independent of cbcn_tf.cif,
and where the tests find real data."""
import math
import os

import numpy as np

# --- real data -------------------------------------------------------------------------------
# $CBCN_DATA names a folder holding mnist/ (the four original IDX .gz files) and cifar10/train
# (a CIFAR-10 ImageFolder). The MNIST test split ships in tests/data/mnist, so the tests that
# read only that split run on every clone; the others skip with NEEDS_DATA without CBCN_DATA.
MNIST_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", *MNIST_TEST_FILES)
PACKAGED_MNIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "mnist")
NEEDS_DATA = ("set CBCN_DATA to a folder with mnist/ (the four IDX files) and cifar10/train "
              "(a CIFAR-10 ImageFolder) to run this test")


def _in_data(*parts):
    root = os.environ.get("CBCN_DATA")
    return os.path.join(os.path.expanduser(root), *parts) if root else None


def _holds(folder, names):
    return folder is not None and all(os.path.isfile(os.path.join(folder, n)) for n in names)


# The four MNIST files ($CBCN_DATA/mnist), or None: tests reading the training split skip.
MNIST_ROOT = _in_data("mnist") if _holds(_in_data("mnist"), MNIST_FILES) else None
# The MNIST test split: $CBCN_DATA/mnist when it holds the test files, else tests/data/mnist.
MNIST_TEST_ROOT = (_in_data("mnist") if _holds(_in_data("mnist"), MNIST_TEST_FILES)
                   else PACKAGED_MNIST)
# The CIFAR-10 ImageFolder root ($CBCN_DATA/cifar10, holding train/<class>/...), or None.
CIFAR_ROOT = (_in_data("cifar10") if _in_data("cifar10")
              and os.path.isdir(os.path.join(_in_data("cifar10"), "train")) else None)


def idx_bytes(array):
    """IDX encoding written here by hand: 0, 0, 0x08 (uint8), ndim, big-endian dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()

RING = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]


def rot_cw(plane: np.ndarray, r: int, k: int) -> np.ndarray:
    """Rotate a (h, w) tap grid clockwise by r steps of 360/k degrees."""
    if plane.shape[0] == 1:
        return plane.copy()
    if k == 8:
        out = plane.copy()
        for j, (y, x) in enumerate(RING):
            ty, tx = RING[(j + r) % 8]
            out[ty, tx] = plane[y, x]
        return out
    return np.rot90(plane, -(r * 4 // k)).copy()


def rot_ccw(plane, r, k):
    """Inverse of rot_cw: r steps counter-clockwise are k - r steps clockwise."""
    return rot_cw(plane, (-r) % k, k)


def expand(w: np.ndarray, k: int, tied: bool = False) -> np.ndarray:
    """E[:, :, i*K + (p + r) % K, o*K + r] = rot_cw(W[:, :, i, p, o], r)."""
    if tied:
        w = np.stack([w] * k, axis=3)
    h, ww, c_in, _, c_out = w.shape
    e = np.zeros((h, ww, c_in * k, c_out * k), w.dtype)
    for i in range(c_in):
        for p in range(k):
            for o in range(c_out):
                for r in range(k):
                    e[:, :, i * k + (p + r) % k, o * k + r] = rot_cw(w[:, :, i, p, o], r, k)
    return e


def cbp(d_e: np.ndarray, k: int) -> np.ndarray:
    """Paper Eq. 8: dW[:, :, i, p, o] = sum_r rot_cw^-1(dE[:, :, i*K + (p+r)%K, o*K + r], r)."""
    h, w, c_in_k, c_out_k = d_e.shape
    d_w = np.zeros((h, w, c_in_k // k, k, c_out_k // k), d_e.dtype)
    for i in range(c_in_k // k):
        for p in range(k):
            for o in range(c_out_k // k):
                for r in range(k):
                    d_w[:, :, i, p, o] += rot_ccw(d_e[:, :, i * k + (p + r) % k, o * k + r], r, k)
    return d_w


def larq_sign(x):
    return np.where(x >= 0, 1.0, -1.0).astype(np.float32)


def gaussian_grad(x, sigma=1.0, amplitude=3 * math.sqrt(2 * math.pi)):
    return amplitude / (sigma * math.sqrt(math.pi)) * np.exp(-x ** 2 / sigma ** 2)


def approx_sign_grad(x):
    return np.where(np.abs(x) <= 1, 2 - 2 * np.abs(x), 0.0)


def ste_grad(x):
    return np.where(np.abs(x) <= 1, 1.0, 0.0)


def same_pads(size, kernel, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def randomize_statistics(model, seed=0, slopes=(0.1, 0.4)):
    """Non-trivial BN statistics / parameters and PReLU slopes (uniform in ``slopes``), so the
    float layers between binary convs matter. Returns the model."""
    import tensorflow as tf

    from cbcn_tf.orientation_layers import OrientationPReLU

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            gamma, beta, mean, variance = (w.shape for w in layer.get_weights())
            layer.set_weights([rng.uniform(0.5, 1.5, gamma), rng.normal(0, 0.3, beta),
                               rng.normal(0, 0.3, mean), rng.uniform(0.5, 1.5, variance)])
        elif isinstance(layer, (tf.keras.layers.PReLU, OrientationPReLU)):
            layer.set_weights([rng.uniform(*slopes, w.shape) for w in layer.get_weights()])
    return model


def rotate(x, turns):
    """Images (N, H, W, C) turned clockwise by ``turns`` quarter turns."""
    return np.ascontiguousarray(np.rot90(x, -turns, axes=(1, 2)))


def rotate_oriented(x, turns, k=4):
    """Feature maps turned clockwise, orientation channels c * K + k rolled by turns * K / 4."""
    n, h, w, c = x.shape
    y = rotate(x, turns)
    return np.roll(y.reshape(*y.shape[:3], c // k, k), turns * k // 4, axis=-1).reshape(y.shape)
