"""cbcn-tf: Circulant Binary Convolutional Networks (Liu et al., CVPR 2019) for Keras 2 / Larq.

Example:
    >>> import cbcn_tf
    >>> import tensorflow as tf
    >>> layer = cbcn_tf.layers.CBConv2D(8, 3, orientations=4)
    >>> layer(tf.zeros((1, 16, 16, 4))).shape
    TensorShape([1, 16, 16, 32])
"""
from cbcn_tf import _compat

_compat.ensure_keras2()  # must run before anything below touches tf.keras

from cbcn_tf import cif, invariance, layers, quantizers  # noqa: E402
from cbcn_tf.layers import CBConv2D  # noqa: E402
from cbcn_tf.quantizers import GaussianSign, gaussian_sign  # noqa: E402
from cbcn_tf.summary import summary  # noqa: E402

try:
    from importlib import metadata as _metadata

    __version__ = _metadata.version("cbcn-tf")
except Exception:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["CBConv2D", "GaussianSign", "cif", "gaussian_sign", "invariance", "layers", "quantizers", "summary"]
