"""CiF expansion and CBP against the NumPy references of docs/METHOD.md §2 and §4."""
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf import cif
from tests import reference as ref

CASES = [(k, size) for k in (1, 2, 4, 8) for size in (1, 3, 5) if not (k == 8 and size == 5)]


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("k,size", CASES)
def test_expansion_matches_plain_loop_reference(k, size, tied):
    rng = np.random.default_rng(k * 10 + size)
    shape = (size, size, 2, 3) if tied else (size, size, 2, k, 3)
    w = rng.normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(cif.expand_kernel(w, k, tied=tied).numpy(),
                                  ref.expand(w, k, tied=tied))


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_rotation_steps_are_the_method_rotations(k):
    grid = np.arange(9.0).reshape(3, 3)
    for r in range(k):
        rotated = cif.rotate_kernel(tf.constant(grid), k, r).numpy()
        np.testing.assert_array_equal(rotated, ref.rot_cw(grid, r, k))
        np.testing.assert_array_equal(cif.rotate_kernel(tf.constant(rotated), k, r, inverse=True),
                                      grid)
    if k == 8:  # two 45-degree steps are a quarter turn
        np.testing.assert_array_equal(cif.rotate_kernel(tf.constant(grid), 8, 2), np.rot90(grid, -1))


def test_k1_expansion_is_identity():
    w = np.random.default_rng(0).normal(size=(3, 3, 5, 1, 7)).astype(np.float32)
    np.testing.assert_array_equal(cif.expand_kernel(w, 1).numpy(), w[:, :, :, 0, :])


@pytest.mark.parametrize("k,size", CASES)
def test_every_weight_appears_k_times_and_mean_abs_is_kept(k, size):
    w = np.random.default_rng(1).normal(size=(size, size, 2, k, 3)).astype(np.float32)
    e = cif.expand_kernel(w, k).numpy()
    values, counts = np.unique(e, return_counts=True)
    np.testing.assert_array_equal(np.sort(values), np.unique(w))
    assert set(counts) == {k}
    np.testing.assert_allclose(np.abs(e).mean(), np.abs(w).mean(), rtol=1e-6)


def _rot_input(x):
    """Rotate a NHWC batch 90 degrees clockwise and roll its orientation channels by +1."""
    n, h, w, c = x.shape
    rotated = np.rot90(x, -1, axes=(1, 2))
    k = 4
    return np.roll(rotated.reshape(n, w, h, c // k, k), 1, axis=-1).reshape(n, w, h, c)


def test_rotation_equivariance_k4_exact():
    rng = np.random.default_rng(2)
    k = 4
    w = rng.normal(size=(3, 3, 3, k, 5)).astype(np.float32)
    sign_e = np.sign(cif.expand_kernel(w, k).numpy())
    x = np.where(rng.normal(size=(2, 9, 9, 3 * k)) >= 0, 1.0, -1.0).astype(np.float32)

    def conv(inp):
        return tf.nn.conv2d(inp, sign_e, 1, "SAME").numpy()

    np.testing.assert_array_equal(conv(_rot_input(x)), _rot_input(conv(x)))
    # Sanity: the property is not trivially true for an arbitrary (non-circulant) kernel.
    other = np.sign(rng.normal(size=sign_e.shape)).astype(np.float32)
    assert not np.array_equal(tf.nn.conv2d(_rot_input(x), other, 1, "SAME").numpy(),
                              _rot_input(tf.nn.conv2d(x, other, 1, "SAME").numpy()))


@pytest.mark.parametrize("k,size", CASES)
def test_cbp_equals_autodiff_and_eq8_reference(k, size):
    rng = np.random.default_rng(3)
    w = tf.constant(rng.normal(size=(size, size, 2, k, 3)).astype(np.float32))
    upstream = rng.normal(size=(size, size, 2 * k, 3 * k)).astype(np.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(w)
        custom = tf.reduce_sum(cif.expand_kernel(w, k) * upstream)
        plain = tf.reduce_sum(cif._expand(w, k) * upstream)
    grad_custom = tape.gradient(custom, w).numpy()
    grad_autodiff = tape.gradient(plain, w).numpy()
    np.testing.assert_allclose(grad_custom, grad_autodiff, atol=1e-6)
    np.testing.assert_allclose(grad_custom, ref.cbp(upstream, k), atol=1e-6)


def test_tied_gradient_sums_over_input_orientations():
    rng = np.random.default_rng(4)
    k = 4
    w = tf.constant(rng.normal(size=(3, 3, 2, 3)).astype(np.float32))
    upstream = rng.normal(size=(3, 3, 2 * k, 3 * k)).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(w)
        loss = tf.reduce_sum(cif.expand_kernel(w, k, tied=True) * upstream)
    np.testing.assert_allclose(tape.gradient(loss, w).numpy(),
                               ref.cbp(upstream, k).sum(axis=3), atol=1e-5)


@pytest.mark.parametrize("k,size,message", [
    (3, 3, "orientations=3"), (8, 5, "orientations=8"), (4, 2, "odd square"),
    (4, (3, 5), "odd square"), (16, 3, "orientations=16"),
])
def test_unsupported_combinations_raise(k, size, message):
    with pytest.raises(ValueError, match=message):
        cif.check_orientations(k, size)


def test_wrong_kernel_rank_raises():
    with pytest.raises(ValueError, match="kernel with K=4"):
        cif.expand_kernel(np.zeros((3, 3, 2, 2, 3), np.float32), 4)
