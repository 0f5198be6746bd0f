"""Orientation-aware layers for quarter-turn invariant CBCNs (docs/METHOD.md §12).

Channel layout c * K + k (orientation minor, METHOD §2.2). ``cbcn_tf.invariance.make_invariant``
puts these into a model; they are usable on their own as well:

- :class:`LiftingConv2D`: a stem whose learned filter is expanded into K rotated copies (a CiF
  without orientation spin), float or binary;
- :class:`CirculantConv2D`: a full-precision circulant conv (a float CiF with orientation spin);
- :class:`OrientationBatchNormalization`, :class:`OrientationPReLU`: statistics, parameters and
  slopes shared by the K orientation channels of each map;
- :class:`OrientationPooling`: max or mean over the K orientation channels of each map;
- :class:`OrientationAlign`: ORN's ORAlign on pooled features: each map's K orientation
  responses rolled so that the largest comes first (keeps all C * K features).
"""
from __future__ import annotations

import larq as lq
import tensorflow as tf

from cbcn_tf import cif
from cbcn_tf import quantizers as cbcn_quantizers
from cbcn_tf.layers import SCALES

_register = tf.keras.utils.register_keras_serializable(package="cbcn_tf")
POOLS = ("max", "mean")
HEADS = (*POOLS, "align")  # orientation heads of `cbcn_tf.invariance.Invariance.pool`
STEMS = ("float", "binary")


def lift_kernel(kernel, orientations: int):
    """(h, w, C_in, C_out) -> (h, w, C_in, C_out * K): output ``o * K + r`` sees rot_cw(W, r).

    The CiF of METHOD §2.3 for an input without orientation channels (no spin), built from
    ``cif.rotate_kernel``; autodiff of the copies is circulant back propagation.
    """
    kernel = tf.convert_to_tensor(kernel)
    h, w, c_in, c_out = kernel.shape
    copies = [cif.rotate_kernel(kernel, orientations, r) for r in range(orientations)]
    return tf.reshape(tf.stack(copies, axis=-1), [h, w, c_in, c_out * orientations])


def _check_kernel(orientations, kernel_size):
    cif.check_orientations(orientations, kernel_size)


def _shape(input_shape) -> tf.TensorShape:
    """A build argument as a TensorShape (some Keras call paths pass the input tensor)."""
    return tf.TensorShape(getattr(input_shape, "shape", input_shape))


def _check_channels(layer, input_shape):
    channels = _shape(input_shape)[-1]
    if channels is None or channels % layer.orientations:
        raise ValueError(f"{layer.name}: input channels ({channels}) must be a multiple of "
                         f"orientations={layer.orientations} (layout c * K + k).")
    return channels


def _repeat(values, orientations):
    """(C,) -> (C * K,): one value for the K orientation channels c * K + k of each map."""
    return tf.repeat(values, orientations)


class _OrientedFilters:
    """What the orientation convs share: ``filters`` learned maps, each output K times (channel
    ``o * K + r``), an optional bias shared by the K copies, He-normal initial W by default."""

    def _init_oriented(self, orientations, use_bias, kernel_initializer):
        self.orientations = int(orientations)
        self.shared_bias = bool(use_bias)
        return kernel_initializer or tf.keras.initializers.VarianceScaling(
            2.0, "fan_in", "untruncated_normal")

    @property
    def learned_filters(self) -> int:
        return self.filters // self.orientations

    def _build_shared_bias(self):
        self.bias = self.add_weight(
            name="bias", shape=(self.learned_filters,), initializer="zeros",
            trainable=True) if self.shared_bias else None

    def _add_shared_bias(self, outputs):
        if self.bias is not None:
            outputs = outputs + _repeat(self.bias, self.orientations)
        return outputs

    def _oriented_config(self, config, **extra):
        config.update(filters=self.learned_filters, orientations=self.orientations,
                      use_bias=self.shared_bias, **extra)
        return config


@_register
class LiftingConv2D(_OrientedFilters, lq.layers.QuantConv2D):
    """Equivariant stem: ``filters`` learned maps, each used in K rotated copies.

    The learned kernel W has shape (h, w, C_in, filters); the layer convolves with
    ``lift_kernel(W)`` and outputs ``filters * K`` channels, output orientation ``r`` of map ``o``
    at channel ``o * K + r``. Rotating the input by 360/K degrees clockwise rotates the output
    and rolls its orientation channels by +1. With quantizers (e.g. "ste_sign") it is a binary
    conv; ``scale`` as in ``CBConv2D``; a bias, if any, is shared by the K copies.

    Example:
        >>> LiftingConv2D(4, 3, orientations=4)(tf.zeros((1, 9, 9, 3))).shape
        TensorShape([1, 9, 9, 16])
    """

    def __init__(self, filters: int, kernel_size, orientations: int = 4, scale=None,
                 strides=(1, 1), padding: str = "same", pad_values: float = 0.0,
                 input_quantizer=None, kernel_quantizer=None, kernel_initializer=None,
                 kernel_constraint=None, use_bias: bool = False, **kwargs):
        _check_kernel(orientations, kernel_size)
        if scale not in SCALES:
            raise ValueError(f"Unknown scale {scale!r}; use one of {SCALES}.")
        kernel_initializer = self._init_oriented(orientations, use_bias, kernel_initializer)
        self.scale = scale
        super().__init__(
            int(filters) * self.orientations, kernel_size, strides=strides, padding=padding,
            pad_values=pad_values, input_quantizer=cbcn_quantizers.get(input_quantizer),
            kernel_quantizer=cbcn_quantizers.get(kernel_quantizer),
            kernel_initializer=kernel_initializer, kernel_constraint=kernel_constraint,
            use_bias=False, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_shared_bias()

    def add_weight(self, name=None, shape=None, **kwargs):
        if name == "kernel":
            shape = (*shape[:3], self.learned_filters)
        return super().add_weight(name=name, shape=shape, **kwargs)

    def convolution_op(self, inputs, kernel):
        expanded = lift_kernel(kernel, self.orientations)
        if self.scale is not None:
            magnitude = tf.abs(tf.convert_to_tensor(self.kernel.latent_variable
                                                    if hasattr(self.kernel, "latent_variable")
                                                    else self.kernel))
            alpha = (tf.reduce_mean(magnitude) if self.scale == "layer_mean" else
                     _repeat(tf.reduce_mean(magnitude, axis=(0, 1, 2)), self.orientations))
            expanded = expanded * tf.cast(alpha, expanded.dtype)
        return self._add_shared_bias(super().convolution_op(inputs, expanded))

    def get_config(self):
        return self._oriented_config(super().get_config(), scale=self.scale)


@_register
class CirculantConv2D(_OrientedFilters, tf.keras.layers.Conv2D):
    """Full-precision circulant conv (a float CiF with orientation spin, METHOD §2.3).

    ``filters`` learned maps; input channels a multiple of K; the learned kernel has shape
    (h, w, C_in / K, K, filters) and the layer convolves with ``cif.expand_kernel(W)``, so it is
    equivariant like ``CBConv2D``. The orientation-aware 1x1 shortcut of an invariant model.

    Example:
        >>> CirculantConv2D(2, 1, orientations=4)(tf.zeros((1, 5, 5, 8))).shape
        TensorShape([1, 5, 5, 8])
    """

    def __init__(self, filters: int, kernel_size, orientations: int = 4, strides=(1, 1),
                 padding: str = "same", use_bias: bool = False, kernel_initializer=None,
                 **kwargs):
        _check_kernel(orientations, kernel_size)
        if kwargs.get("groups", 1) != 1:
            raise ValueError("CirculantConv2D does not support grouped convolutions.")
        kernel_initializer = self._init_oriented(orientations, use_bias, kernel_initializer)
        super().__init__(int(filters) * self.orientations, kernel_size, strides=strides,
                         padding=padding, use_bias=False,
                         kernel_initializer=kernel_initializer, **kwargs)

    def build(self, input_shape):
        _check_channels(self, input_shape)
        super().build(input_shape)
        self._build_shared_bias()

    def add_weight(self, name=None, shape=None, **kwargs):
        if name == "kernel":
            h, w, c_in, _ = shape
            shape = (h, w, c_in // self.orientations, self.orientations, self.learned_filters)
        return super().add_weight(name=name, shape=shape, **kwargs)

    def convolution_op(self, inputs, kernel):
        return self._add_shared_bias(
            super().convolution_op(inputs, cif.expand_kernel(kernel, self.orientations)))

    def get_config(self):
        return self._oriented_config(super().get_config())


@_register
class OrientationBatchNormalization(tf.keras.layers.BatchNormalization):
    """BatchNormalization whose statistics and parameters are shared by the K orientation
    channels ``c * K + k`` of each map: C values for C * K channels.

    Training normalises over (batch, height, width, orientation); inference applies the
    moving statistics as one multiply-add per channel (repeated K times), which LCE fuses.
    Keyword arguments as ``BatchNormalization`` (defaults momentum 0.9, epsilon 1e-5, the
    released code's); the axis is always the last.

    Example:
        >>> OrientationBatchNormalization(4)(tf.zeros((2, 3, 3, 8))).shape
        TensorShape([2, 3, 3, 8])
    """

    def __init__(self, orientations: int = 4, momentum: float = 0.9, epsilon: float = 1e-5,
                 **kwargs):
        axis = kwargs.pop("axis", -1)
        if axis not in (-1, [-1], 3, [3]):
            raise ValueError("OrientationBatchNormalization normalises the channel axis (-1).")
        self.orientations = int(orientations)
        super().__init__(axis=-2, momentum=momentum, epsilon=epsilon, **kwargs)

    def build(self, input_shape):
        input_shape = _shape(input_shape)
        channels = input_shape[-1]
        if input_shape.rank != 4 or channels is None or channels % self.orientations:
            raise ValueError(f"{self.name}: needs NHWC inputs whose channels are a multiple of "
                             f"orientations={self.orientations}, got {input_shape}.")
        super().build(tf.TensorShape(
            [*input_shape[:-1], channels // self.orientations, self.orientations]))
        self.input_spec = tf.keras.layers.InputSpec(ndim=4, axes={-1: channels})

    def call(self, inputs, training=None):
        training = self._get_training_value(training)
        if training is False or (isinstance(training, bool) and not training):
            inv = tf.math.rsqrt(self.moving_variance + self.epsilon)
            if self.gamma is not None:
                inv = inv * self.gamma
            offset = -self.moving_mean * inv
            if self.beta is not None:
                offset = offset + self.beta
            scale, offset = (tf.cast(_repeat(v, self.orientations), inputs.dtype)
                             for v in (inv, offset))  # parameters stay float32 (mixed policy)
            return inputs * scale + offset
        shape = tf.shape(inputs)
        grouped = tf.reshape(inputs, tf.concat(
            [shape[:-1], [inputs.shape[-1] // self.orientations, self.orientations]], 0))
        return tf.reshape(super().call(grouped, training=training), shape)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.pop("axis", None)
        config["orientations"] = self.orientations
        return config


@_register
class OrientationPReLU(tf.keras.layers.Layer):
    """PReLU with one slope per map, shared by its K orientation channels (initial 0.25).

    Example:
        >>> OrientationPReLU(4)(tf.fill((1, 2, 2, 8), -1.0))[0, 0, 0, 0].numpy()
        -0.25
    """

    def __init__(self, orientations: int = 4, alpha_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.orientations = int(orientations)
        self.alpha_initializer = tf.keras.initializers.get(
            alpha_initializer or tf.keras.initializers.Constant(0.25))

    def build(self, input_shape):
        channels = _check_channels(self, input_shape)
        self.alpha = self.add_weight(name="alpha", shape=(channels // self.orientations,),
                                     initializer=self.alpha_initializer)
        super().build(input_shape)

    def call(self, inputs):
        alpha = _repeat(self.alpha, self.orientations)
        return tf.nn.relu(inputs) - alpha * tf.nn.relu(-inputs)  # Keras' PReLU form

    def get_config(self):
        return {**super().get_config(), "orientations": self.orientations,
                "alpha_initializer": tf.keras.initializers.serialize(self.alpha_initializer)}


@_register
class OrientationPooling(tf.keras.layers.Layer):
    """Max (or mean) over the K orientation channels of each map: (N, H, W, C*K) -> (N, H, W, C).

    Example:
        >>> x = tf.reshape(tf.range(8, dtype=tf.float32), (1, 1, 1, 8))
        >>> OrientationPooling(4)(x).numpy().ravel().tolist()
        [3.0, 7.0]
    """

    def __init__(self, orientations: int = 4, mode: str = "max", **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLS:
            raise ValueError(f"Unknown orientation pooling {mode!r}; use one of {POOLS}.")
        self.orientations = int(orientations)
        self.mode = mode

    def build(self, input_shape):
        _check_channels(self, input_shape)
        super().build(input_shape)

    def call(self, inputs):
        k = self.orientations
        channels = inputs.shape[-1] // k
        static = inputs.shape.as_list()
        shape = tf.shape(inputs)
        dims = [static[i] if static[i] is not None else shape[i] for i in range(4)]
        dims[0] = -1
        # rank 4 throughout (TFLite reduces rank-4 tensors everywhere)
        grouped = tf.reshape(inputs, [dims[0], dims[1], dims[2] * channels, k])
        reduce = tf.reduce_max if self.mode == "max" else tf.reduce_mean
        return tf.reshape(reduce(grouped, axis=-1), [dims[0], dims[1], dims[2], channels])

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        return input_shape[:-1].concatenate([input_shape[-1] // self.orientations])

    def get_config(self):
        return {**super().get_config(), "orientations": self.orientations, "mode": self.mode}


@_register
class OrientationAlign(tf.keras.layers.Layer):
    """ORAlign (ORN, Zhou et al. 2017) on globally pooled features: (N, C*K) -> (N, C*K).

    For each map c, its K orientation responses ``x[c * K + k]`` are rolled cyclically so the
    largest comes first: ``y[c * K + j] = x[c * K + (a_c + j) % K]`` with ``a_c`` the argmax.
    A quarter turn of the input rolls the orientations of every map by one, which moves every
    ``a_c`` by one and leaves ``y`` unchanged (a map whose maximum is tied between orientations,
    e.g. all zeros after a ReLU, gives the same ``y`` only when its values are all equal).
    Unlike :class:`OrientationPooling` it keeps all C * K features for the classifier. The
    gradient flows to the selected responses (the argmax itself has none). Built from
    reshape, argmax, one-hot, slices and products: TFLite builtins.

    Example:
        >>> x = tf.constant([[0.0, 2.0, 1.0, 0.5, 3.0, 1.0, 2.0, 0.0]])
        >>> OrientationAlign(4)(x).numpy().ravel().tolist()
        [2.0, 1.0, 0.5, 0.0, 3.0, 1.0, 2.0, 0.0]
    """

    def __init__(self, orientations: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.orientations = int(orientations)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 2:
            raise ValueError(f"{self.name}: OrientationAlign takes pooled features (N, C*K), "
                             f"got shape {input_shape}; put it after global pooling.")
        _check_channels(self, input_shape)
        super().build(input_shape)

    def call(self, inputs):
        k = self.orientations
        channels = inputs.shape[-1] // k
        grouped = tf.reshape(inputs, [-1, channels, k])
        first = tf.one_hot(tf.argmax(grouped, axis=-1), k, dtype=inputs.dtype)  # (N, C, K)
        aligned = tf.add_n([first[..., r:r + 1]
                            * tf.concat([grouped[..., r:], grouped[..., :r]], axis=-1)
                            for r in range(k)])
        return tf.reshape(aligned, [-1, channels * k])

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        return {**super().get_config(), "orientations": self.orientations}
