"""Materialising sign(E): each CBConv2D becomes a plain binary conv and a ``ChannelScale``.

The LCE converter then sees the same graph as for any Larq binary conv (it folds the rank-1
scale into the ``LceBconv2d``), whatever K and kernel size.
"""
from __future__ import annotations

import larq as lq
import numpy as np
import tensorflow as tf

from cbcn_tf import rewrite
from cbcn_tf.errors import ExportError
from cbcn_tf.layers import CBConv2D
from cbcn_tf.rewrite import is_binary_layer, iter_layers

# Suffix of the binary conv that replaces a CBConv2D; the ChannelScale keeps the CBConv's name
# so every consumer stays wired to it.
BINARY_SUFFIX = "_binary"


@tf.keras.utils.register_keras_serializable(package="cbcn_tf")
class ChannelScale(tf.keras.layers.Layer):
    """``activation(x * scale + bias)`` with rank-1 ``(C,)`` constants.

    The tail of a materialised CBConv2D: LCE fuses a per-channel multiply (and bias) that
    directly follows a binary conv into the ``LceBconv2d``. The scale must be rank-1; a
    ``(1, 1, 1, C)`` multiplier converts but fails at ``AllocateTensors``.

    Example:
        >>> layer = ChannelScale()
        >>> layer(tf.ones((1, 2, 2, 3))).shape
        TensorShape([1, 2, 2, 3])
    """

    def __init__(self, use_bias: bool = False, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.use_bias = bool(use_bias)
        self.activation = tf.keras.activations.get(activation)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.scale = self.add_weight(name="scale", shape=(channels,), initializer="ones",
                                     trainable=False)
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros",
                                    trainable=False) if self.use_bias else None
        super().build(input_shape)

    def call(self, inputs):
        outputs = inputs * self.scale
        if self.bias is not None:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def get_config(self):
        return {**super().get_config(), "use_bias": self.use_bias,
                "activation": tf.keras.activations.serialize(self.activation)}


def is_binary_conv2d(layer) -> bool:
    return isinstance(layer, lq.layers.QuantConv2D) and is_binary_layer(layer)


def _binary_kernel_and_scale(layer: CBConv2D):
    """sign(E) and the per-channel multiplier alpha * |quantised E| as NumPy arrays."""
    quantized = layer.expanded_kernel(quantized=True).numpy()
    magnitude = np.abs(quantized).max(axis=(0, 1, 2))
    if not np.allclose(np.abs(quantized), magnitude, rtol=1e-6, atol=0.0):
        raise ExportError(
            f"{layer.name}: kernel quantizer {layer.kernel_quantizer!r} does not give +-m per "
            "output channel, so it has no 1-bit deployment; use a sign-type kernel quantizer."
        )
    alpha = layer.output_scale()
    alpha = 1.0 if alpha is None else alpha.numpy()
    multiplier = magnitude * np.broadcast_to(alpha, magnitude.shape)  # scalar -> (C,)
    kernel = np.where(quantized >= 0, 1.0, -1.0)  # larq: sign(0) = +1
    return kernel.astype(np.float32), multiplier.astype(np.float32)


def _replacement(layer, calls):
    """A CBConv2D's binary conv and scale (which keeps its name); None for other layers."""
    if not isinstance(layer, CBConv2D):
        return None
    conv = lq.layers.QuantConv2D(
        layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
        pad_values=layer.pad_values, input_quantizer=layer.input_quantizer,
        kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",  # irrelevant for export; silences larq's warning
        use_bias=False, name=layer.name + BINARY_SUFFIX,
    )
    return [conv, ChannelScale(use_bias=layer.use_bias, activation=layer.activation,
                               name=layer.name)]


def _carry(layer: CBConv2D, new_layers) -> None:
    conv, scale = new_layers
    kernel, multiplier = _binary_kernel_and_scale(layer)
    conv.set_weights([kernel])
    scale.set_weights([multiplier] + ([layer.bias.numpy()] if layer.use_bias else []))


def _has_cbconv(model) -> bool:
    return any(isinstance(layer, CBConv2D) for layer in iter_layers(model))


def materialize_cbconv(model: tf.keras.Model) -> tf.keras.Model:
    """A copy of ``model`` in which every CBConv2D is a plain binary conv holding sign(E).

    CBConv2D ``name`` becomes ``QuantConv2D(name + "_binary", kernel=sign(E),
    kernel_quantizer="ste_sign", same input quantizer, TF-SAME padding with pad_values)``
    followed by ``ChannelScale(name)`` holding alpha as a rank-1 ``(C,)`` multiplier (and the
    bias / activation). Outputs are identical; other layers are copied with their weights.
    Returns ``model`` itself when it has no CBConv2D.

    Example:
        >>> x = tf.keras.Input((8, 8, 4))
        >>> model = tf.keras.Model(x, CBConv2D(2, 3, orientations=4, name="cb")(x))
        >>> [type(layer).__name__ for layer in materialize_cbconv(model).layers[1:]]
        ['QuantConv2D', 'ChannelScale']
    """
    if not _has_cbconv(model):
        return model
    rewrite.require_graph_model(model, "exporting CBConv2D layers", ExportError, nested=True)
    return rewrite.rewrite(model, _replacement, _carry, nested=True)
