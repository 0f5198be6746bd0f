"""CBConv2D: circulant binary convolution (docs/METHOD.md §3) as a Larq quantized layer."""
from __future__ import annotations

import larq as lq
import tensorflow as tf

from cbcn_tf import cif
from cbcn_tf import quantizers as cbcn_quantizers

SCALES = ("layer_mean", "channel_mean", None)


@tf.keras.utils.register_keras_serializable(package="cbcn_tf")
class CBConv2D(lq.layers.QuantConv2D):
    """Circulant binary 2D convolution: ``y = conv2d(sign(x), sign(E)) * alpha``.

    Only the learned kernel ``W`` of shape ``(h, w, C_in / K, K, filters)`` (or
    ``(h, w, C_in / K, filters)`` when ``tied``) is stored and trained; the circulant kernel
    ``E`` with ``filters * K`` output channels is derived on every call (``cbcn_tf.cif``), and
    its gradient reaches ``W`` through circulant back propagation.

    Because sign commutes with the CiF permutation, the kernel quantizer runs on ``W`` before
    the expansion (METHOD §3.3), so Larq sees a 1-bit kernel of the learned size.

    Args:
        filters: learned feature maps; the layer outputs ``filters * orientations`` channels.
        kernel_size: odd square kernel (K = 8 needs 1x1 or 3x3).
        strides, padding: as in ``larq.layers.QuantConv2D``, in the same positions; the
            arguments below are keyword-only.
        orientations: K in {1, 2, 4, 8}; input channels must be a multiple of K.
        tied: one plane shared by all K input orientations (paper text) instead of K planes.
        scale: "layer_mean" (one scalar mean|W| per layer, released code, default),
            "channel_mean" (mean|E| per output channel, XNOR style) or None.
        pad_values: value of SAME padding after the input sign; 1.0 is what LCE runs fastest.
        input_quantizer / kernel_quantizer: larq quantizers or their names; defaults are the
            released code's ApproxSign for inputs and the paper's Gaussian for weights.

    Example:
        >>> layer = CBConv2D(16, 3, orientations=4)
        >>> layer(tf.zeros((2, 32, 32, 8))).shape
        TensorShape([2, 32, 32, 64])
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "same",
        pad_values: float = 1.0,
        *,
        orientations: int = 4,
        tied: bool = False,
        scale: str | None = "layer_mean",
        input_quantizer="approx_sign",
        kernel_quantizer="gaussian_sign",
        kernel_initializer=None,
        kernel_constraint="weight_clip",
        use_bias: bool = False,
        **kwargs,
    ):
        cif.check_orientations(orientations, _pair(kernel_size))
        if scale not in SCALES:
            raise ValueError(f"Unknown scale {scale!r}; use one of {SCALES}.")
        if kwargs.get("groups", 1) != 1 or _pair(kwargs.get("dilation_rate", 1)) != (1, 1):
            raise ValueError("CBConv2D supports neither grouped nor dilated convolutions.")
        if kwargs.get("data_format") not in (None, "channels_last"):
            raise ValueError("CBConv2D supports data_format='channels_last' only.")
        if kernel_initializer is None:
            # Released code: normal(0, sqrt(2 / (C_in * K * kh * kw))) == He on W's fan-in.
            kernel_initializer = tf.keras.initializers.VarianceScaling(
                2.0, "fan_in", "untruncated_normal")
        self.orientations = int(orientations)
        self.tied = bool(tied)
        self.scale = scale
        super().__init__(
            int(filters) * self.orientations,
            kernel_size,
            strides=strides,
            padding=padding,
            pad_values=pad_values,
            input_quantizer=cbcn_quantizers.get(input_quantizer),
            kernel_quantizer=cbcn_quantizers.get(kernel_quantizer),
            kernel_initializer=kernel_initializer,
            kernel_constraint=kernel_constraint,
            use_bias=use_bias,
            **kwargs,
        )

    @property
    def learned_filters(self) -> int:
        return self.filters // self.orientations

    def build(self, input_shape):
        channels = tf.TensorShape(input_shape)[-1]
        if channels is None or channels % self.orientations:
            raise ValueError(
                f"{self.name}: input channels ({channels}) must be a multiple of "
                f"orientations={self.orientations} (layout c * K + k). Feed the output of a "
                "layer with filters * K channels, e.g. a stem conv with C * K filters."
            )
        super().build(input_shape)

    def add_weight(self, name=None, shape=None, **kwargs):
        # Conv2D.build asks for (h, w, C_in, C_out * K); only the learned W is stored.
        if name == "kernel":
            h, w, c_in, _ = shape
            k = self.orientations
            shape = (h, w, c_in // k, self.learned_filters) if self.tied else (
                h, w, c_in // k, k, self.learned_filters)
        return super().add_weight(name=name, shape=shape, **kwargs)

    def expanded_kernel(self, quantized: bool = True):
        """E = expand(W) (or sign(E) with ``quantized``), shape (h, w, C_in, filters * K)."""
        kernel = tf.convert_to_tensor(self.kernel.latent_variable)
        if quantized and self.kernel_quantizer is not None:
            kernel = self.kernel_quantizer(kernel)
        return cif.expand_kernel(kernel, self.orientations, tied=self.tied)

    def output_scale(self):
        """alpha: None, a scalar mean|W|, or a rank-1 (filters * K,) mean|E| per channel."""
        if self.scale is None:
            return None
        magnitude = tf.abs(tf.convert_to_tensor(self.kernel.latent_variable))
        if self.scale == "layer_mean":
            return tf.reduce_mean(magnitude)
        spatial_and_inputs = list(range(magnitude.shape.rank - 1))
        per_filter = tf.reduce_mean(magnitude, axis=spatial_and_inputs)
        return tf.repeat(per_filter, self.orientations)  # output channel o * K + r

    def convolution_op(self, inputs, kernel):
        # Inside larq's quantized scope, reading `kernel` yields sign(W) with its custom grad.
        expanded = cif.expand_kernel(tf.convert_to_tensor(kernel), self.orientations,
                                     tied=self.tied)
        alpha = self.output_scale()
        if alpha is not None:
            # conv(x, E) * alpha == conv(x, E * alpha) for a per-output-channel alpha; scaling
            # the small kernel is cheaper than scaling the output. Export keeps them apart.
            expanded = expanded * tf.cast(alpha, expanded.dtype)
        return super().convolution_op(inputs, expanded)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.learned_filters,
            orientations=self.orientations,
            tied=self.tied,
            scale=self.scale,
        )
        return config


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)
