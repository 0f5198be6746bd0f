"""ResNet18: CBCN (CIFAR and ImageNet), its XNOR baselines and their full-precision twins.

All of them come from one ``resnet`` builder, parameterised by the binary conv kind, the block
(convs per shortcut, BN before/after the conv), the stem and the feature widths (SPEC 4).
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from cbcn_tf.models import blocks
from cbcn_tf.models.registry import load_weights, register_model

CIFAR_INPUT_SHAPE = (32, 32, 3)
IMAGENET_INPUT_SHAPE = (224, 224, 3)


def resnet(*, name: str, input_shape, num_classes: int, conv: blocks.BinaryConv,
           stem: str, stem_width: int, stage_widths: Sequence[int], strides: Sequence[int],
           blocks_per_stage: int, convs_per_block: int = 1, bn: str = "before") -> tf.keras.Model:
    """Stem -> stages of residual blocks -> head; widths are feature channels (x K already).

    Example:
        >>> model = resnet(name="tiny", input_shape=(16, 16, 3), num_classes=10,
        ...                conv=blocks.BinaryConv("xnor", input_quantizer="ste_sign",
        ...                                       kernel_quantizer="magnitude_aware_sign"),
        ...                stem="cifar", stem_width=8, stage_widths=(8, 16), strides=(1, 2),
        ...                blocks_per_stage=2)
        >>> model.output_shape
        (None, 10)
    """
    inputs = tf.keras.Input(input_shape)
    x = blocks.stem(inputs, stem_width, stem)
    for stage, (width, stride) in enumerate(zip(stage_widths, strides), start=1):
        for block in range(1, blocks_per_stage + 1):
            x = blocks.residual_block(x, width, stride if block == 1 else 1, conv=conv,
                                      convs=convs_per_block, bn=bn,
                                      name=f"stage{stage}_block{block}")
    return tf.keras.Model(inputs, blocks.head(x, num_classes), name=name)


def _cifar_resnet18(name, *, conv, input_shape, num_classes, orientations, binary, weights,
                    kernel_stage, blocks_per_stage, convs_per_block, bn="before"):
    widths = blocks.feature_widths(kernel_stage, orientations, 4)
    model = resnet(name=name if binary else f"{name}_float",
                   input_shape=input_shape or CIFAR_INPUT_SHAPE, num_classes=num_classes,
                   conv=conv, stem="cifar", stem_width=widths[0], stage_widths=widths,
                   strides=(1, 2, 2, 2), blocks_per_stage=blocks_per_stage,
                   convs_per_block=convs_per_block, bn=bn)
    return load_weights(model, weights)


@register_model
def cbcn_resnet18(*, input_shape=None, num_classes=10, orientations=4, binary=True,
                  weights=None, kernel_stage=(16, 16, 32, 64), input_quantizer="approx_sign",
                  kernel_quantizer="gaussian_sign", scale="layer_mean", kernel_initializer=None,
                  bn="before") -> tf.keras.Model:
    """CBCN ResNet18 for CIFAR (SPEC 4): 16 blocks ``PReLU(CBConv(BN(x)) + shortcut(x))``.

    Stem conv3x3 -> ``kernel_stage[0] * K`` (full precision), BN, PReLU; four stages of four
    one-conv blocks ("doubled shortcuts") with ``kernel_stage`` learned maps (x K feature
    channels) and strides (1, 2, 2, 2); global average pool; dense. The paper's kernel stages:
    (16, 16, 32, 64) (default), (32, 32, 64, 128), (32, 64, 128, 256).

    Args:
        input_shape: default (32, 32, 3).
        num_classes: classifier width.
        orientations: K in {1, 2, 4, 8}.
        binary: False gives the full-precision twin (float Conv2D at the same widths).
        weights: path of a ``save_weights`` file to load.
        kernel_stage: learned maps per stage (the stem uses the first).
        input_quantizer / kernel_quantizer: sign gradients of the CBConv2D layers.
        scale / kernel_initializer: of the CBConv2D layers (see ``CBConv2D``; None: its
            default He normal on W's fan-in, the released code's).
        bn: "before" (``CBConv(BN(x))``, released code) or "after" (``BN(CBConv(x))``).

    Published (CIFAR-10 accuracy, 16-16-32-64, K = 4, SPEC 6): 89.10 with ApproxSign weights,
    90.22 with the Gaussian (this default), 90.83 with center loss fine-tuning; K = 2: 85.79,
    K = 8: 90.80; full precision 94.84. Rotated test set error: 19.68 (FP 19.07).
    Cost at the defaults (32x32x3 input, cbcn_tf.summary): 779,786 parameters,
    254,803,968 BOPs (binary MACs), 10,160,640 FLOPs (float MACs); the binary=False
    twin: 2,936,330 parameters, 264,964,608 FLOPs.

    Example:
        >>> model = cbcn_resnet18(orientations=2, kernel_stage=(8, 8, 16, 32))
        >>> model.output_shape
        (None, 10)
    """
    conv = blocks.BinaryConv("cbcn" if binary else "float", orientations, input_quantizer,
                             kernel_quantizer, scale=scale, kernel_initializer=kernel_initializer)
    return _cifar_resnet18("cbcn_resnet18", conv=conv, input_shape=input_shape,
                           num_classes=num_classes, orientations=orientations, binary=binary,
                           weights=weights, kernel_stage=kernel_stage, blocks_per_stage=4,
                           convs_per_block=1, bn=bn)


@register_model
def xnor_resnet18(*, input_shape=None, num_classes=10, orientations=4, binary=True,
                  weights=None, kernel_stage=(16, 16, 32, 64), input_quantizer="ste_sign",
                  kernel_quantizer="magnitude_aware_sign") -> tf.keras.Model:
    """XNOR-style binary CIFAR ResNet18 baseline: K = 1, normal two-conv basic blocks.

    Same stem, widths, strides and head as ``cbcn_resnet18``, but plain binary
    ``QuantConv2D`` layers and four stages of two blocks
    ``PReLU(conv(BN(PReLU(conv(BN(x))))) + shortcut(x))`` (16 binary convs, 8 shortcuts).
    ``orientations`` only sets the width: feature widths are ``kernel_stage * orientations``,
    those of the CBCN with K = ``orientations`` (default 64-64-128-256), so
    ``cbcnify(xnor_resnet18(), 4)`` has the same binary MACs.
    The "magnitude_aware_sign" kernel quantizer keeps XNOR-Net's mean|W| per output channel;
    unscaled binary convs diverged in this block (SPEC 4).

    Args: as ``cbcn_resnet18``.

    Published (CIFAR-10 accuracy, SPEC 6): XNOR 76.3; rotated test set error 40.75.
    Cost at the defaults (32x32x3 input, cbcn_tf.summary): 2,936,330 parameters,
    254,803,968 BOPs (binary MACs), 10,160,640 FLOPs (float MACs); the binary=False
    twin: 2,936,330 parameters, 264,964,608 FLOPs.

    Example:
        >>> xnor_resnet18(kernel_stage=(8, 8, 16, 32)).output_shape
        (None, 10)
    """
    conv = blocks.BinaryConv("xnor" if binary else "float", 1, input_quantizer, kernel_quantizer)
    return _cifar_resnet18("xnor_resnet18", conv=conv, input_shape=input_shape,
                           num_classes=num_classes, orientations=orientations, binary=binary,
                           weights=weights, kernel_stage=kernel_stage, blocks_per_stage=2,
                           convs_per_block=2)


@register_model
def xnor_resnet18_doubled(*, input_shape=None, num_classes=10, orientations=4, binary=True,
                          weights=None, kernel_stage=(16, 16, 32, 64), input_quantizer="ste_sign",
                          kernel_quantizer="magnitude_aware_sign") -> tf.keras.Model:
    """XNOR-style binary CIFAR ResNet18 with doubled shortcuts (Bi-Real style), K = 1.

    Exactly the topology of ``cbcn_resnet18`` (16 one-conv blocks) with XNOR ``QuantConv2D``
    layers at the CBCN's feature widths ``kernel_stage * orientations`` (default
    64-64-128-256); ``cbcnify(xnor_resnet18_doubled(), 4)`` gives a ``cbcn_resnet18``.

    Args: as ``cbcn_resnet18``.

    Published (CIFAR-10 accuracy, SPEC 6): 80.53.
    Cost at the defaults (32x32x3 input, cbcn_tf.summary): 2,936,330 parameters,
    254,803,968 BOPs (binary MACs), 10,160,640 FLOPs (float MACs); the binary=False
    twin: 2,936,330 parameters, 264,964,608 FLOPs.

    Example:
        >>> xnor_resnet18_doubled(kernel_stage=(8, 8, 16, 32)).output_shape
        (None, 10)
    """
    conv = blocks.BinaryConv("xnor" if binary else "float", 1, input_quantizer, kernel_quantizer)
    return _cifar_resnet18("xnor_resnet18_doubled", conv=conv, input_shape=input_shape,
                           num_classes=num_classes, orientations=orientations, binary=binary,
                           weights=weights, kernel_stage=kernel_stage, blocks_per_stage=4,
                           convs_per_block=1)


@register_model
def cbcn_resnet18_imagenet(*, input_shape=None, num_classes=1000, orientations=4, binary=True,
                           weights=None, kernel_stage=(64, 128, 256, 512),
                           input_quantizer="approx_sign",
                           kernel_quantizer="gaussian_sign") -> tf.keras.Model:
    """CBCN ResNet18 for ImageNet (SPEC 4): 16 blocks ``PReLU(BN(CBConv(x)) + shortcut(x))``.

    Stem conv7x7/2 -> ``kernel_stage[0] * K`` (full precision), BN, PReLU, maxpool3x3/2; four
    stages of four one-conv blocks, strides (1, 2, 2, 2); global average pool; dense
    ``kernel_stage[-1] * K -> num_classes``.

    Args: as ``cbcn_resnet18``; input_shape defaults to (224, 224, 3).

    Published (ImageNet top-1 / top-5, SPEC 6): 61.4 / 82.8 (61.0 top-1 without center loss);
    Bi-Real 56.4, XNOR 51.2, full precision 69.3 top-1.
    Cost at the defaults (224x224x3 input, cbcn_tf.summary): 48,873,448 parameters,
    26,820,476,928 BOPs (binary MACs), 1,707,229,184 FLOPs (float MACs); the binary=False
    twin: 180,699,112 parameters, 28,527,706,112 FLOPs.

    Example:
        >>> model = cbcn_resnet18_imagenet(input_shape=(64, 64, 3), num_classes=10,
        ...                                orientations=2, kernel_stage=(8, 8, 16, 16))
        >>> model.output_shape
        (None, 10)
    """
    widths = blocks.feature_widths(kernel_stage, orientations, 4)
    conv = blocks.BinaryConv("cbcn" if binary else "float", orientations, input_quantizer,
                             kernel_quantizer)
    name = "cbcn_resnet18_imagenet" if binary else "cbcn_resnet18_imagenet_float"
    model = resnet(name=name, input_shape=input_shape or IMAGENET_INPUT_SHAPE,
                   num_classes=num_classes, conv=conv, stem="imagenet", stem_width=widths[0],
                   stage_widths=widths, strides=(1, 2, 2, 2), blocks_per_stage=4, bn="after")
    return load_weights(model, weights)
