"""CBCN LeNet for MNIST (docs/METHOD.md §6.4): four 3x3 convs, ReLU, max-pool, dropout, dense."""
from __future__ import annotations

import tensorflow as tf

from cbcn_tf.invariance import make_invariant
from cbcn_tf.models import blocks
from cbcn_tf.models.registry import Cost, load_weights, register_model

MNIST_INPUT_SHAPE = (28, 28, 1)


@register_model(min_input_size=8)  # three 2x2 max-pools
def cbcn_lenet(*, input_shape=None, num_classes=10, orientations=4, binary=True, weights=None,
               kernel_stage=(5, 10, 20, 40), input_quantizer="approx_sign",
               kernel_quantizer="gaussian_sign", dropout=0.5,
               invariant=False) -> tf.keras.Model:
    """CBCN LeNet: a full-precision conv, three CBConv2D, each ReLU'd, max-pooled, then a head.

    Layout (28x28 input, 'same' padding): conv 28x28 -> pool 14 -> CBConv 14 -> pool 7 ->
    CBConv 7 -> pool 4 -> CBConv 4 -> global average pool -> dropout -> dense. Each CBConv
    sees ``BN(x)``: its input comes out of a ReLU, and the sign of a non-negative tensor is
    constant +1, so BN re-centres it first.

    All convs are 3x3, the first one too: the released code's MNIST network (ORN's) uses 3x3,
    and 3x3 keeps K = 8 available (CBConv2D allows only 1x1 / 3x3 for K = 8). Kernel stages
    in the paper: 5-10-20-40 (default) and 10-20-40-80, feature widths x K.
    ORN's network ends in a 1024-unit fully connected layer; here global average pooling feeds
    one dense classifier, so the float head stays small and any input size works.

    Args: as ``cbcn_tf.models.resnet.cbcn_resnet18``; input_shape defaults to (28, 28, 1);
        ``dropout`` is the rate before the classifier; ``invariant`` as there (any fixed
        input size is exact, 28x28 included: the 2x2 pool of the 7x7 map becomes 3x3).

    Published (MNIST error, LeNet 5-10-20-40, METHOD §10): CBCN 1.91, XNOR 3.76, full
    precision 0.91; MNIST-rot: 5.76, 17.26, 2.77.
    """
    conv = blocks.BinaryConv("cbcn" if binary else "float", orientations, input_quantizer,
                             kernel_quantizer)
    return _lenet("cbcn_lenet" if binary else "cbcn_lenet_float", conv, input_shape=input_shape,
                  num_classes=num_classes, orientations=orientations, weights=weights,
                  kernel_stage=kernel_stage, dropout=dropout, invariant=invariant)


@register_model(min_input_size=8)  # three 2x2 max-pools
def xnor_lenet(*, input_shape=None, num_classes=10, orientations=4, binary=True, weights=None,
               kernel_stage=(5, 10, 20, 40), input_quantizer="ste_sign",
               kernel_quantizer="magnitude_aware_sign", dropout=0.5) -> tf.keras.Model:
    """XNOR LeNet baseline (Table 2): ``cbcn_lenet``'s layout with XNOR ``QuantConv2D``, K = 1.

    ``orientations`` only sets the width: feature widths are ``kernel_stage * orientations``,
    those of the CBCN with K = ``orientations`` (default 20-40-80-160), so both have the same
    binary MACs. Quantizers as ``xnor_resnet18`` (XNOR-Net's per-channel mean|W| scale).

    Args: as ``cbcn_lenet``.

    Published (MNIST error, LeNet 5-10-20-40, METHOD §10): XNOR 3.76; MNIST-rot: 17.26.
    """
    conv = blocks.BinaryConv("xnor" if binary else "float", 1, input_quantizer, kernel_quantizer)
    return _lenet("xnor_lenet" if binary else "xnor_lenet_float", conv, input_shape=input_shape,
                  num_classes=num_classes, orientations=orientations, weights=weights,
                  kernel_stage=kernel_stage, dropout=dropout)


def _document(fn, cost: Cost) -> None:
    """Append the cost paragraph and example (checked against cbcn_tf.summary by the tests)."""
    fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n" + cost.paragraph(
        fn.__name__, MNIST_INPUT_SHAPE, "orientations=2")


_document(cbcn_lenet, Cost(40_230, 4_665_600, 142_720, 153_630, 4_808_320))
_document(xnor_lenet, Cost(153_630, 4_665_600, 142_720, 153_630, 4_808_320))


def _lenet(name, conv, *, input_shape, num_classes, orientations, weights, kernel_stage,
           dropout, invariant=False):
    widths = blocks.feature_widths(kernel_stage, orientations, 4)
    inputs = tf.keras.Input(input_shape or MNIST_INPUT_SHAPE)
    x = blocks.stem(inputs, widths[0], "lenet")
    for index, width in enumerate(widths[1:], start=2):
        x = blocks.conv_bn(x, conv(width, 3, name=f"conv{index}"), name=f"conv{index}")
        x = blocks.activation("relu", name=f"conv{index}_act")(x)
        if index < len(widths):
            x = tf.keras.layers.MaxPool2D(2, padding="same", name=f"conv{index}_pool")(x)
    outputs = blocks.head(x, num_classes, dropout=dropout)
    model = tf.keras.Model(inputs, outputs, name=name)
    if invariant:  # docs/METHOD.md §12
        model = make_invariant(model, orientations, invariant)
    return load_weights(model, weights)
