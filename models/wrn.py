"""CBCN Wide ResNets WRN-22 and WRN-40 for CIFAR (docs/METHOD.md §6.5): ResNet table rows.

WRN-d has n = (d - 4) / 6 two-conv blocks per stage. As in the CBCN ResNet18, every binary conv
gets its own shortcut ("doubled shortcuts"), so a stage holds 2n one-conv blocks
``PReLU(CBConv(BN(x)) + shortcut(x))``. The kernel stage 16-16-32-64 is (stem, stage 1,
stage 2, stage 3); with K = 4 the feature widths 64-64-128-256 are those of WRN-d-4.
"""
from __future__ import annotations

from cbcn_tf.models.resnet import Cost, ResNetVariant, resnet_variant

_DOC = """\
CBCN WRN-{depth} for CIFAR: stem + 3 stages of {blocks} one-conv blocks ({convs} CBConv2D),
    strides (1, 2, 2), global average pool, dense.

    Args: as ``cbcn_tf.models.resnet.cbcn_resnet18``; ``kernel_stage`` = (stem, stage 1-3).

    Published: the paper trains WRN-22 / WRN-40 on CIFAR (METHOD §6.5) and reports no number
    for them (METHOD §10).
    """


def wrn_variant(depth: int, cost: Cost):
    """The registered CBCN WRN-``depth``: 3 stages of (depth - 4) / 3 one-conv blocks."""
    blocks = 2 * (depth - 4) // 6
    doc = _DOC.format(depth=depth, blocks=blocks, convs=3 * blocks)
    model_fn = resnet_variant(ResNetVariant(f"cbcn_wrn{depth}", doc, cost, strides=(1, 2, 2),
                                            blocks_per_stage=blocks))
    model_fn.__module__ = __name__  # where its name lives (help, pickling, doctests)
    return model_fn


cbcn_wrn22 = wrn_variant(22, Cost(1_128_842, 641_728_512, 18_549_248, 4_336_010, 660_277_760))
cbcn_wrn40 = wrn_variant(
    40, Cost(2_303_498, 1_321_205_760, 18_549_248, 8_994_314, 1_339_755_008))
