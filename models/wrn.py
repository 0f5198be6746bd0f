"""CBCN Wide ResNets WRN-22 and WRN-40 for CIFAR (SPEC 4), from the shared ``resnet`` builder.

WRN-d has n = (d - 4) / 6 two-conv blocks per stage. As in the CBCN ResNet18, every binary conv
gets its own shortcut ("doubled shortcuts"), so a stage holds 2n one-conv blocks
``PReLU(CBConv(BN(x)) + shortcut(x))``. The kernel stage 16-16-32-64 is (stem, stage 1,
stage 2, stage 3); with K = 4 the feature widths 64-64-128-256 are those of WRN-d-4.
"""
from __future__ import annotations

import tensorflow as tf

from cbcn_tf.models import blocks
from cbcn_tf.models.registry import load_weights, register_model
from cbcn_tf.models.resnet import CIFAR_INPUT_SHAPE, resnet


def _wrn(depth, *, input_shape, num_classes, orientations, binary, weights, kernel_stage,
         input_quantizer, kernel_quantizer):
    widths = blocks.feature_widths(kernel_stage, orientations, 4)
    conv = blocks.BinaryConv("cbcn" if binary else "float", orientations, input_quantizer,
                             kernel_quantizer)
    name = f"cbcn_wrn{depth}" if binary else f"cbcn_wrn{depth}_float"
    model = resnet(name=name, input_shape=input_shape or CIFAR_INPUT_SHAPE,
                   num_classes=num_classes, conv=conv, stem="cifar", stem_width=widths[0],
                   stage_widths=widths[1:], strides=(1, 2, 2),
                   blocks_per_stage=2 * (depth - 4) // 6)
    return load_weights(model, weights)


@register_model
def cbcn_wrn22(*, input_shape=None, num_classes=10, orientations=4, binary=True, weights=None,
               kernel_stage=(16, 16, 32, 64), input_quantizer="approx_sign",
               kernel_quantizer="gaussian_sign") -> tf.keras.Model:
    """CBCN WRN-22 for CIFAR: stem + 3 stages of 6 one-conv blocks (18 CBConv2D), strides
    (1, 2, 2), global average pool, dense.

    Args: as ``cbcn_tf.models.resnet.cbcn_resnet18``; ``kernel_stage`` = (stem, stage 1-3).

    Published: the paper trains WRN-22 / WRN-40 on CIFAR (SPEC 4); SPEC 6 lists no number.
    Cost at the defaults (32x32x3 input, cbcn_tf.summary): 1,128,842 parameters,
    641,728,512 BOPs (binary MACs), 18,549,248 FLOPs (float MACs); the binary=False
    twin: 4,336,010 parameters, 660,277,760 FLOPs.

    Example:
        >>> cbcn_wrn22(orientations=2, kernel_stage=(8, 8, 16, 32)).output_shape
        (None, 10)
    """
    return _wrn(22, input_shape=input_shape, num_classes=num_classes, orientations=orientations,
                binary=binary, weights=weights, kernel_stage=kernel_stage,
                input_quantizer=input_quantizer, kernel_quantizer=kernel_quantizer)


@register_model
def cbcn_wrn40(*, input_shape=None, num_classes=10, orientations=4, binary=True, weights=None,
               kernel_stage=(16, 16, 32, 64), input_quantizer="approx_sign",
               kernel_quantizer="gaussian_sign") -> tf.keras.Model:
    """CBCN WRN-40 for CIFAR: stem + 3 stages of 12 one-conv blocks (36 CBConv2D), strides
    (1, 2, 2), global average pool, dense.

    Args: as ``cbcn_tf.models.resnet.cbcn_resnet18``; ``kernel_stage`` = (stem, stage 1-3).

    Published: the paper trains WRN-22 / WRN-40 on CIFAR (SPEC 4); SPEC 6 lists no number.
    Cost at the defaults (32x32x3 input, cbcn_tf.summary): 2,303,498 parameters,
    1,321,205,760 BOPs (binary MACs), 18,549,248 FLOPs (float MACs); the binary=False
    twin: 8,994,314 parameters, 1,339,755,008 FLOPs.

    Example:
        >>> cbcn_wrn40(orientations=2, kernel_stage=(8, 8, 16, 32)).output_shape
        (None, 10)
    """
    return _wrn(40, input_shape=input_shape, num_classes=num_classes, orientations=orientations,
                binary=binary, weights=weights, kernel_stage=kernel_stage,
                input_quantizer=input_quantizer, kernel_quantizer=kernel_quantizer)
