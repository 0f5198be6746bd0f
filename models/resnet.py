"""ResNets: CBCN ResNet18 (CIFAR and ImageNet), its XNOR baselines, WRNs and float twins.

All of them come from one ``resnet`` builder, parameterised by the binary conv kind, the block
(convs per shortcut, BN before/after the conv), the stem and the feature widths
(docs/METHOD.md §6). Each registered model is one row of a table (a ``ResNetVariant``) turned
into a keyword-only model function by ``resnet_variant``; ``cbcn_tf.models.wrn`` adds its rows.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import tensorflow as tf

from cbcn_tf.invariance import make_invariant
from cbcn_tf.models import blocks
from cbcn_tf.models.registry import Cost, load_weights, register_model

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


@dataclasses.dataclass(frozen=True)
class ResNetVariant:
    """One row of the ResNet table: architecture, defaults of the model function, docstring.

    ``conv`` is "cbcn" (CBConv2D with K = ``orientations``) or "xnor" (K = 1 ``QuantConv2D`` at
    the same feature widths ``kernel_stage * orientations``). ``kernel_stage`` has four
    entries: the stem's width, then one per stage (the last ``len(strides)`` entries).
    ``doc`` describes the model; the cost paragraph and the example are appended from
    ``cost`` and ``example`` (keyword arguments that build a small 10-class version).
    """

    name: str
    doc: str
    cost: Cost
    example: str = "orientations=2, kernel_stage=(8, 8, 16, 32)"
    conv: str = "cbcn"
    stem: str = "cifar"
    strides: tuple = (1, 2, 2, 2)
    blocks_per_stage: int = 4
    convs_per_block: int = 1
    bn: str = "before"
    input_shape: tuple = CIFAR_INPUT_SHAPE
    num_classes: int = 10
    kernel_stage: tuple = (16, 16, 32, 64)
    input_quantizer: str = "approx_sign"
    kernel_quantizer: str = "gaussian_sign"

    @property
    def docstring(self) -> str:
        return self.doc.rstrip() + "\n" + self.cost.paragraph(self.name, self.input_shape,
                                                              self.example)

    @property
    def min_input_size(self) -> int:
        """Product of the stem's and the stages' strides (see ``register_model``)."""
        stem = blocks.STEMS[self.stem]
        return stem["strides"] * (stem["pool"] or (1, 1))[1] * math.prod(self.strides)

    def build(self, *, input_shape, num_classes, orientations, binary, kernel_stage,
              input_quantizer, kernel_quantizer, scale="layer_mean", kernel_initializer=None,
              bn=None) -> tf.keras.Model:
        widths = blocks.feature_widths(kernel_stage, orientations, 4)
        conv = blocks.BinaryConv(self.conv if binary else "float",
                                 orientations if self.conv == "cbcn" else 1,
                                 input_quantizer, kernel_quantizer, scale=scale,
                                 kernel_initializer=kernel_initializer)
        return resnet(name=self.name if binary else f"{self.name}_float",
                      input_shape=input_shape or self.input_shape, num_classes=num_classes,
                      conv=conv, stem=self.stem, stem_width=widths[0],
                      stage_widths=widths[-len(self.strides):], strides=self.strides,
                      blocks_per_stage=self.blocks_per_stage,
                      convs_per_block=self.convs_per_block, bn=bn or self.bn)


def resnet_variant(variant: ResNetVariant):
    """The registered keyword-only model function of a table row, named and documented by it."""

    def model_fn(*, input_shape=None, num_classes=variant.num_classes, orientations=4,
                 binary=True, weights=None, kernel_stage=variant.kernel_stage,
                 input_quantizer=variant.input_quantizer,
                 kernel_quantizer=variant.kernel_quantizer, scale="layer_mean",
                 kernel_initializer=None, bn=variant.bn, invariant=False) -> tf.keras.Model:
        model = variant.build(input_shape=input_shape, num_classes=num_classes,
                              orientations=orientations, binary=binary,
                              kernel_stage=kernel_stage, input_quantizer=input_quantizer,
                              kernel_quantizer=kernel_quantizer, scale=scale,
                              kernel_initializer=kernel_initializer, bn=bn)
        if invariant:  # quarter-turn invariant variant, docs/METHOD.md §12
            model = make_invariant(model, orientations, invariant)
        return load_weights(model, weights)

    model_fn.__name__ = model_fn.__qualname__ = variant.name
    model_fn.__doc__ = variant.docstring
    return register_model(model_fn, min_input_size=variant.min_input_size)


XNOR = dict(conv="xnor", input_quantizer="ste_sign", kernel_quantizer="magnitude_aware_sign")

cbcn_resnet18 = resnet_variant(ResNetVariant("cbcn_resnet18", """\
CBCN ResNet18 for CIFAR (METHOD §6.2): 16 blocks ``PReLU(CBConv(BN(x)) + shortcut(x))``.

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
        invariant: True (or a dict of ``cbcn_tf.invariance.Invariance`` switches) gives the
            variant invariant to quarter turns (K = 4) of any fixed square input size: lifting
            stem, orientation-shared BN / PReLU, circulant shortcuts, symmetric downsampling,
            ORAlign head (``{"pool": "max"}``: orientation max-pooling instead; docs/METHOD.md
            §12). CBCN models only.
        scale / kernel_initializer: of the CBConv2D layers (see ``CBConv2D``; None: its
            default He normal on W's fan-in, the released code's). CBCN models only.
        bn: "before" (``CBConv(BN(x))``, released code) or "after" (``BN(CBConv(x))``).

    Published (CIFAR-10 accuracy, 16-16-32-64, K = 4, METHOD §10): 89.10 with ApproxSign
    weights, 90.22 with the Gaussian (this default), 90.83 with center loss fine-tuning; K = 2:
    85.79, K = 8: 90.80; full precision 94.84. Rotated test set error: 19.68 (FP 19.07).
    """, cost=Cost(779_786, 254_803_968, 10_160_640, 2_936_330, 264_964_608)))

xnor_resnet18 = resnet_variant(ResNetVariant("xnor_resnet18", """\
XNOR-style binary CIFAR ResNet18 baseline: K = 1, normal two-conv basic blocks.

    Same stem, widths, strides and head as ``cbcn_resnet18``, but plain binary
    ``QuantConv2D`` layers and four stages of two blocks
    ``PReLU(conv(BN(PReLU(conv(BN(x))))) + shortcut(x))`` (16 binary convs, 8 shortcuts).
    ``orientations`` only sets the width: feature widths are ``kernel_stage * orientations``,
    those of the CBCN with K = ``orientations`` (default 64-64-128-256), so
    ``cbcnify(xnor_resnet18(), 4)`` has the same binary MACs.
    The "magnitude_aware_sign" kernel quantizer keeps XNOR-Net's mean|W| per output channel;
    unscaled binary convs diverged in this block (METHOD §6.6).

    Args: as ``cbcn_resnet18``.

    Published (CIFAR-10 accuracy, METHOD §10): XNOR 76.3; rotated test set error 40.75.
    """, cost=Cost(2_936_330, 254_803_968, 10_160_640, 2_936_330, 264_964_608),
    blocks_per_stage=2, convs_per_block=2, **XNOR))

xnor_resnet18_doubled = resnet_variant(ResNetVariant("xnor_resnet18_doubled", """\
XNOR-style binary CIFAR ResNet18 with doubled shortcuts (Bi-Real style), K = 1.

    Exactly the topology of ``cbcn_resnet18`` (16 one-conv blocks) with XNOR ``QuantConv2D``
    layers at the CBCN's feature widths ``kernel_stage * orientations`` (default
    64-64-128-256); ``cbcnify(xnor_resnet18_doubled(), 4)`` gives a ``cbcn_resnet18``.

    Args: as ``cbcn_resnet18``.

    Published (CIFAR-10 accuracy, METHOD §10): 80.53.
    """, cost=Cost(2_936_330, 254_803_968, 10_160_640, 2_936_330, 264_964_608), **XNOR))

cbcn_resnet18_imagenet = resnet_variant(ResNetVariant("cbcn_resnet18_imagenet", """\
CBCN ResNet18 for ImageNet (METHOD §6.3): 16 blocks ``PReLU(BN(CBConv(x)) + shortcut(x))``.

    Stem conv7x7/2 -> ``kernel_stage[0] * K`` (full precision), BN, PReLU, maxpool3x3/2; four
    stages of four one-conv blocks, strides (1, 2, 2, 2); global average pool; dense
    ``kernel_stage[-1] * K -> num_classes``.

    Args: as ``cbcn_resnet18``; input_shape defaults to (224, 224, 3).

    Published (ImageNet top-1 / top-5, METHOD §10): 61.4 / 82.8 (61.0 top-1 without center
    loss); Bi-Real 56.4, XNOR 51.2, full precision 69.3 top-1.
    """, cost=Cost(48_873_448, 26_820_476_928, 1_707_229_184, 180_699_112, 28_527_706_112),
    example="input_shape=(64, 64, 3), num_classes=10, orientations=2, kernel_stage=(8, 8, 16, 16)",
    stem="imagenet", bn="after", input_shape=IMAGENET_INPUT_SHAPE, num_classes=1000,
    kernel_stage=(64, 128, 256, 512)))
