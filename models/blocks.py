"""Building blocks shared by every model of the zoo (docs/METHOD.md §6).

Every model is assembled from these functions, so a CBCN model, its XNOR baseline and its
full-precision twin differ only in the ``BinaryConv`` they are given:

- ``BinaryConv``: one spec -> ``CBConv2D`` ("cbcn"), XNOR ``QuantConv2D`` ("xnor") or a float
  ``Conv2D`` ("float", the ``binary=False`` twin), always at the same feature width;
- ``stem``: the full-precision first conv -> BN -> activation (-> max-pool);
- ``residual_block``: one conv per shortcut (CBCN / Bi-Real "doubled shortcuts") or two (the
  normal basic block), BN before the conv (CIFAR) or after it (ImageNet), PReLU after the add;
- ``shortcut``: identity, or conv1x1 (full precision) -> BN -> AvgPool2D on a width/stride change;
- ``head``: global average pool -> (dropout) -> float32 Dense with softmax.

Example:
    >>> import cbcn_tf
    >>> import tensorflow as tf
    >>> from cbcn_tf.models import blocks
    >>> inputs = tf.keras.Input((32, 32, 3))
    >>> x = blocks.stem(inputs, 16, "cifar")
    >>> x = blocks.residual_block(x, 32, 2, conv=blocks.BinaryConv("cbcn", orientations=4),
    ...                           name="block")
    >>> blocks.head(x, 10).shape
    TensorShape([None, 10])
"""
from __future__ import annotations

import dataclasses
from typing import Any

import larq as lq
import tensorflow as tf

from cbcn_tf.layers import CBConv2D

CONV_KINDS = ("cbcn", "xnor", "float")


def conv_initializer() -> tf.keras.initializers.Initializer:
    """normal(0, sqrt(2 / fan_in)) for every conv, as in the released code and CBConv2D.

    A new instance per layer: Keras warns about (and repeats the values of) a reused one.
    """
    return tf.keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")


@dataclasses.dataclass(frozen=True)
class BinaryConv:
    """Factory of a model's binary convs; called with the FEATURE width (output channels).

    Kinds:
        "cbcn": ``CBConv2D`` learning ``width / orientations`` maps (output ``width``).
        "xnor": ``larq.layers.QuantConv2D``; the default "magnitude_aware_sign" kernel
            quantizer keeps XNOR-Net's per-output-channel mean|W| scale (METHOD §6.6).
        "float": plain ``Conv2D`` of the same width (the full-precision twin); the quantizers
            are ignored.
    Binary convs pad with +1 after the input sign (``pad_values=1.0``), which LCE runs fastest.

    Example:
        >>> BinaryConv("cbcn", orientations=4)(64, 3).learned_filters
        16
    """

    kind: str = "cbcn"
    orientations: int = 1
    input_quantizer: Any = "approx_sign"
    kernel_quantizer: Any = "gaussian_sign"
    # CBConv2D only ("cbcn"): its output scale and W's initializer (None: CBConv2D's default).
    scale: Any = "layer_mean"
    kernel_initializer: Any = None

    def __post_init__(self):
        if self.kind not in CONV_KINDS:
            raise ValueError(f"Unknown conv kind {self.kind!r}; use one of {CONV_KINDS}.")

    def __call__(self, width: int, kernel_size=3, strides=1, name: str | None = None):
        common = dict(kernel_size=kernel_size, strides=strides, padding="same", use_bias=False,
                      name=name)
        if self.kind == "float":
            return tf.keras.layers.Conv2D(width, kernel_initializer=conv_initializer(), **common)
        quantizers = dict(input_quantizer=self.input_quantizer,
                          kernel_quantizer=self.kernel_quantizer, pad_values=1.0)
        if self.kind == "xnor":
            return lq.layers.QuantConv2D(width, kernel_constraint="weight_clip",
                                         kernel_initializer=conv_initializer(),
                                         **quantizers, **common)
        if width % self.orientations:
            raise ValueError(f"{name}: width {width} is not a multiple of "
                             f"orientations={self.orientations}.")
        return CBConv2D(width // self.orientations, orientations=self.orientations,
                        scale=self.scale, kernel_initializer=self.kernel_initializer,
                        **quantizers, **common)


def feature_widths(kernel_stage, orientations: int, length: int) -> tuple:
    """Feature widths = kernel stage (learned maps, the paper's notation) x orientations."""
    kernel_stage = tuple(kernel_stage)
    if len(kernel_stage) != length or not all(isinstance(c, int) and c > 0 for c in kernel_stage):
        raise ValueError(f"kernel_stage must be {length} positive integers, got {kernel_stage!r}.")
    if not isinstance(orientations, int) or orientations < 1:
        raise ValueError(f"orientations must be a positive integer, got {orientations!r}.")
    return tuple(c * orientations for c in kernel_stage)


def activation(kind: str, name: str | None = None) -> tf.keras.layers.Layer:
    """"prelu": per-channel PReLU with initial slope 0.25 (released code), or "relu"."""
    if kind == "prelu":
        return tf.keras.layers.PReLU(alpha_initializer=tf.keras.initializers.Constant(0.25),
                                     shared_axes=[1, 2], name=name)
    if kind == "relu":
        return tf.keras.layers.ReLU(name=name)
    raise ValueError(f"Unknown activation {kind!r}; use 'prelu' or 'relu'.")


def batch_norm(name: str | None = None) -> tf.keras.layers.Layer:
    """BN with PyTorch's defaults (the released code's), not Keras' slower momentum 0.99."""
    return tf.keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


# kernel size, stride, activation and max-pool (size, stride) of the full-precision stems.
STEMS = {
    "cifar": dict(kernel_size=3, strides=1, activation="prelu", pool=None),
    "imagenet": dict(kernel_size=7, strides=2, activation="prelu", pool=(3, 2)),
    "lenet": dict(kernel_size=3, strides=1, activation="relu", pool=(2, 2)),
}


def stem(x, width: int, kind: str = "cifar"):
    """Full-precision first conv -> BN -> activation (-> max-pool), see ``STEMS``."""
    if kind not in STEMS:
        raise ValueError(f"Unknown stem {kind!r}; use one of {tuple(STEMS)}.")
    spec = STEMS[kind]
    x = tf.keras.layers.Conv2D(width, spec["kernel_size"], strides=spec["strides"],
                               padding="same", use_bias=False,
                               kernel_initializer=conv_initializer(), name="stem_conv")(x)
    x = batch_norm("stem_bn")(x)
    x = activation(spec["activation"], name="stem_act")(x)
    if spec["pool"]:
        size, stride = spec["pool"]
        x = tf.keras.layers.MaxPool2D(size, stride, padding="same", name="stem_pool")(x)
    return x


def conv_bn(x, conv_layer, bn: str = "before", name: str = "unit"):
    """``conv(BN(x))`` (CIFAR: BN centres the input of the sign) or ``BN(conv(x))`` (ImageNet)."""
    if bn == "before":
        return conv_layer(batch_norm(f"{name}_bn")(x))
    if bn == "after":
        return batch_norm(f"{name}_bn")(conv_layer(x))
    raise ValueError(f"bn must be 'before' or 'after', got {bn!r}.")


def shortcut(x, width: int, strides: int = 1, name: str = "shortcut"):
    """Identity, or conv1x1 (full precision) -> BN -> AvgPool2D(strides) (METHOD §6.1).

    'same' pooling so odd feature sizes keep their last row/column, as a stride-2 conv does.
    """
    if strides == 1 and x.shape[-1] == width:
        return x
    x = tf.keras.layers.Conv2D(width, 1, use_bias=False, kernel_initializer=conv_initializer(),
                               name=f"{name}_conv")(x)
    x = batch_norm(f"{name}_bn")(x)
    if strides > 1:
        x = tf.keras.layers.AveragePooling2D(strides, strides, padding="same",
                                             name=f"{name}_pool")(x)
    return x


def residual_block(x, width: int, strides: int = 1, *, conv: BinaryConv, convs: int = 1,
                   bn: str = "before", name: str = "block"):
    """``PReLU(body(x) + shortcut(x))`` with ``convs`` binary convs in the body.

    ``convs=1`` is the CBCN / Bi-Real block with "doubled shortcuts" (METHOD §6.1):
    ``PReLU(conv(BN(x)) + shortcut(x))`` (``bn="before"``) or ``PReLU(BN(conv(x)) + ...)``
    (``bn="after"``). ``convs=2`` is the normal basic block, a PReLU between its two convs.
    The first conv and the shortcut carry the stride.
    """
    residual = shortcut(x, width, strides, name=f"{name}_shortcut")
    for i in range(1, convs + 1):
        if i > 1:
            x = activation("prelu", name=f"{name}_act{i - 1}")(x)
        layer = conv(width, 3, strides=strides if i == 1 else 1, name=f"{name}_conv{i}")
        x = conv_bn(x, layer, bn, name=f"{name}_conv{i}")
    x = tf.keras.layers.Add(name=f"{name}_add")([x, residual])
    return activation("prelu", name=f"{name}_out")(x)


def head(x, num_classes: int, dropout: float = 0.0):
    """Global average pool -> (dropout) -> full-precision Dense with a float32 softmax."""
    x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = tf.keras.layers.Dropout(dropout, name="dropout")(x)
    return tf.keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                 name="predictions")(x)
