"""Sign gradients (docs/METHOD.md §5) as Larq quantizers.

The forward pass is always larq's ``sign`` (``sign(sign(x) + 0.1)``, sign(0) = +1), which the
LCE converter recognises as a binariser. Only the backward pass differs:

- ``gaussian_sign`` (paper Eq. 10): ``A / (sigma * sqrt(pi)) * exp(-x^2 / sigma^2)``,
  sigma = 1 and A = 3 * sqrt(2 * pi) by default (about 4.243 * exp(-x^2)).
- ``approx_sign`` (Bi-Real, ``2 - 2|x|`` on |x| <= 1) and ``ste_sign`` (1 on |x| <= 1) are
  larq's own and are used as they are: pass the strings ``"approx_sign"`` / ``"ste_sign"``.
"""
from __future__ import annotations

import math

import larq as lq
import tensorflow as tf

DEFAULT_SIGMA = 1.0
DEFAULT_AMPLITUDE = 3.0 * math.sqrt(2.0 * math.pi)


def gaussian_sign(x, sigma: float = DEFAULT_SIGMA, amplitude: float = DEFAULT_AMPLITUDE):
    """Binarise with larq's sign; backward with the paper's Gaussian (Eq. 10).

    Example:
        >>> x = tf.constant([-0.5, 0.0, 2.0])
        >>> gaussian_sign(x).numpy()
        array([-1.,  1.,  1.], dtype=float32)
    """
    if sigma <= 0:
        raise ValueError(f"gaussian_sign needs sigma > 0, got {sigma}.")

    @tf.custom_gradient
    def _call(x):
        def grad(dy):
            scale = amplitude / (sigma * math.sqrt(math.pi))
            return dy * scale * tf.exp(-tf.square(x) / (sigma * sigma))

        return lq.math.sign(x), grad

    return _call(x)


# larq's own registration, as for its "ste_sign": the alias resolves the string, the class name
# serves legacy (.h5) loading, which looks nested quantizers up by bare class name.
@lq.utils.register_alias("gaussian_sign")
@lq.utils.register_keras_custom_object
@tf.keras.utils.register_keras_serializable(package="cbcn_tf")
class GaussianSign(lq.quantizers.Quantizer):
    """Serialisable binary quantizer with the Gaussian sign gradient (alias ``"gaussian_sign"``).

    Example:
        >>> layer = lq.layers.QuantConv2D(8, 3, kernel_quantizer="gaussian_sign")
    """

    precision = 1

    def __init__(self, sigma: float = DEFAULT_SIGMA, amplitude: float = DEFAULT_AMPLITUDE,
                 **kwargs):
        if sigma <= 0:
            raise ValueError(f"GaussianSign needs sigma > 0, got {sigma}.")
        self.sigma = float(sigma)
        self.amplitude = float(amplitude)
        super().__init__(**kwargs)

    def call(self, inputs):
        return gaussian_sign(inputs, sigma=self.sigma, amplitude=self.amplitude)

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma, "amplitude": self.amplitude}


# CBConv2D's defaults (weights, inputs): listed first in messages, as the usual choices.
DEFAULT_QUANTIZERS = ("gaussian_sign", "approx_sign")


def known_quantizers() -> list[str]:
    """The quantizer names larq resolves: every lowercase alias of a larq ``Quantizer`` class.

    Derived from Keras' custom objects, where ``larq.utils.register_alias`` puts larq's own
    ("ste_sign", ...) and ``"gaussian_sign"``, so a newly registered quantizer is listed as is.
    ``DEFAULT_QUANTIZERS`` come first, the others in alphabetical order.

    Example:
        >>> known_quantizers()[:3]
        ['gaussian_sign', 'approx_sign', 'dorefa_quantizer']
    """
    names = [name for name, obj in tf.keras.utils.get_custom_objects().items()
             if name.islower() and isinstance(obj, type)
             and issubclass(obj, lq.quantizers.Quantizer)]
    rank = {name: i for i, name in enumerate(DEFAULT_QUANTIZERS)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def get(identifier):
    """Resolve a quantizer like larq does, with an error that lists the valid names."""
    try:
        return lq.quantizers.get(identifier)
    except ValueError as exc:
        raise ValueError(
            f"Unknown quantizer {identifier!r}. Use one of {', '.join(known_quantizers())}, "
            "a larq quantizer object, or a callable."
        ) from exc
