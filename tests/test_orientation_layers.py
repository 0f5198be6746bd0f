"""Orientation layers of the quarter-turn invariant CBCN (docs/METHOD.md §12,
`cbcn_tf.orientation_layers` through `cbcn_tf.invariance`) against NumPy references: the lifting
stem, circulant shortcuts, orientation BN / PReLU / pooling, ORAlign, and the symmetric
sampling grid."""
import itertools
import math

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf import cif
from cbcn_tf import invariance as inv
from tests.reference import rotate, rotate_oriented


@pytest.fixture(autouse=True)
def _seed():
    tf.keras.utils.set_random_seed(0)


# ------------------------------------------------------------------------ layer references
def test_lift_kernel_is_k_rotated_copies():
    w = np.random.default_rng(0).normal(size=(3, 3, 2, 5)).astype(np.float32)
    lifted = inv.lift_kernel(w, 4).numpy()
    for o, r in itertools.product(range(5), range(4)):
        np.testing.assert_array_equal(lifted[:, :, :, o * 4 + r], np.rot90(w[:, :, :, o], -r))


def test_lifting_conv_equivariance_and_binary_form():
    x = np.random.default_rng(1).normal(size=(2, 9, 9, 3)).astype(np.float32)
    for kwargs in ({}, dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                            scale="layer_mean", pad_values=1.0), dict(use_bias=True)):
        layer = inv.LiftingConv2D(3, 3, orientations=4, **kwargs)
        layer.build(x.shape)
        if layer.bias is not None:
            layer.bias.assign([0.5, -1.0, 2.0])
        np.testing.assert_allclose(layer(rotate(x, 1)).numpy(),
                                   rotate_oriented(layer(x).numpy(), 1), atol=1e-5)
    # binary: the kernel it convolves with is alpha * sign(lifted W), input signed, +1 padding
    w = layer_w = inv.LiftingConv2D(2, 3, orientations=4, input_quantizer="ste_sign",
                                    kernel_quantizer="ste_sign", scale="layer_mean",
                                    pad_values=1.0)
    layer_w.build(x.shape)
    kernel = layer_w.kernel.latent_variable.numpy()
    expected_kernel = inv.lift_kernel(np.where(kernel >= 0, 1.0, -1.0), 4).numpy() * np.abs(
        kernel).mean()
    padded = np.pad(np.where(x >= 0, 1.0, -1.0), ((0, 0), (1, 1), (1, 1), (0, 0)),
                    constant_values=1.0)
    expected = tf.nn.conv2d(padded.astype(np.float32), expected_kernel.astype(np.float32), 1,
                            "VALID").numpy()
    np.testing.assert_allclose(w(x).numpy(), expected, atol=1e-5)


def test_circulant_conv_is_the_float_cif():
    x = np.random.default_rng(2).normal(size=(2, 5, 5, 8)).astype(np.float32)
    layer = inv.CirculantConv2D(3, 3, orientations=4, use_bias=True)
    layer.build(x.shape)
    layer.bias.assign([0.1, 0.2, 0.3])
    kernel = layer.kernel.numpy()
    assert kernel.shape == (3, 3, 2, 4, 3)
    expected = tf.nn.conv2d(x, cif.expand_kernel(kernel, 4), 1, "SAME").numpy()
    np.testing.assert_allclose(layer(x).numpy(), expected + np.repeat([0.1, 0.2, 0.3], 4),
                               atol=1e-5)
    np.testing.assert_allclose(layer(rotate_oriented(x, 1)).numpy(),
                               rotate_oriented(layer(x).numpy(), 1), atol=1e-5)


def test_orientation_batch_norm_shares_statistics_and_parameters():
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, size=(4, 3, 3, 8)).astype(np.float32)
    layer = inv.OrientationBatchNormalization(4, momentum=0.5)
    layer.build(x.shape)
    gamma, beta = rng.uniform(0.5, 2, 2), rng.normal(size=2)
    layer.set_weights([gamma, beta, np.zeros(2), np.ones(2)])
    grouped = x.reshape(4, 3, 3, 2, 4)
    mean, var = grouped.mean(axis=(0, 1, 2, 4)), grouped.var(axis=(0, 1, 2, 4))
    expected = ((grouped - mean[:, None]) / np.sqrt(var[:, None] + 1e-5) * gamma[:, None]
                + beta[:, None]).reshape(x.shape)
    np.testing.assert_allclose(layer(x, training=True).numpy(), expected, atol=1e-4)
    moving_mean, moving_var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    np.testing.assert_allclose(moving_mean, 0.5 * mean, rtol=1e-5)
    np.testing.assert_allclose(moving_var, 0.5 + 0.5 * var, rtol=1e-4)
    expected = ((grouped - moving_mean[:, None]) / np.sqrt(moving_var[:, None] + 1e-5)
                * gamma[:, None] + beta[:, None]).reshape(x.shape)
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected, atol=1e-4)


def test_orientation_prelu_and_pooling_references():
    x = np.random.default_rng(4).normal(size=(2, 3, 3, 8)).astype(np.float32)
    prelu = inv.OrientationPReLU(4)
    prelu.build(x.shape)
    prelu.set_weights([np.array([0.1, 0.7])])
    slopes = np.repeat([0.1, 0.7], 4)
    np.testing.assert_allclose(prelu(x).numpy(), np.where(x > 0, x, slopes * x), atol=1e-6)
    grouped = x.reshape(2, 3, 3, 2, 4)
    np.testing.assert_array_equal(inv.OrientationPooling(4)(x).numpy(), grouped.max(-1))
    np.testing.assert_allclose(inv.OrientationPooling(4, "mean")(x).numpy(), grouped.mean(-1),
                               atol=1e-6)


def test_orientation_align_reference():
    """Each map's K responses rolled so its largest comes first (NumPy loop reference), and
    invariant to a roll of every map's orientations."""
    x = np.random.default_rng(7).normal(size=(3, 20)).astype(np.float32)
    expected = np.empty_like(x)
    for n in range(3):
        for c in range(5):
            values = x[n, c * 4:(c + 1) * 4]
            first = int(np.argmax(values))
            expected[n, c * 4:(c + 1) * 4] = [values[(first + j) % 4] for j in range(4)]
    layer = inv.OrientationAlign(4)
    np.testing.assert_array_equal(layer(x).numpy(), expected)
    rolled = np.roll(x.reshape(3, 5, 4), 1, axis=-1).reshape(3, 20)
    np.testing.assert_array_equal(layer(rolled).numpy(), expected)
    with tf.GradientTape() as tape:  # the gradient reaches the selected responses only
        tensor = tf.constant(x)
        tape.watch(tensor)
        total = tf.reduce_sum(layer(tensor) * np.arange(20, dtype=np.float32))
    grad = tape.gradient(total, tensor).numpy()
    assert sorted(grad[0, :4].tolist()) == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="after global pooling"):
        inv.OrientationAlign(4)(np.zeros((1, 2, 2, 8), np.float32))


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_grid_is_symmetric_against_window_sets(padding):
    """Brute force: the windows TF samples, as index sets, are closed under i -> n - 1 - i."""
    for size, window, stride in itertools.product(range(1, 20), range(1, 6), range(1, 4)):
        if padding == "same":
            out = math.ceil(size / stride)
            before = max((out - 1) * stride + window - size, 0) // 2
        else:
            out = (size - window) // stride + 1
            before = 0
        if out < 1:
            continue
        windows = {tuple(i for i in range(j * stride - before, j * stride - before + window)
                         if 0 <= i < size) for j in range(out)}
        # padding cells are outside [0, size); a window is symmetric only with its padding
        padded = {(j * stride - before, j * stride - before + window - 1) for j in range(out)}
        mirrored = {(size - 1 - b, size - 1 - a) for a, b in padded}
        expected = padded == mirrored
        assert inv.grid_is_symmetric(size, window, stride, padding) == expected, (
            size, window, stride, windows)
