"""Circulant filters (docs/METHOD.md §2 and §4): rotation tables, the CiF expansion and CBP.

Layout (METHOD §2.2-§2.4): the learned kernel ``W`` has shape ``(h, w, C_in, K, C_out)`` (one
plane per input orientation, "untied") or ``(h, w, C_in, C_out)`` ("tied"). Channels are laid out as
``c * K + k`` (orientation minor). The expanded kernel is

    E[:, :, i*K + (p + r) % K, o*K + r] = rot_cw(W[:, :, i, p, o], r)

Output orientation ``r`` sees the learned filter rotated clockwise by ``r`` steps of ``360 / K``
degrees and the input-orientation planes cyclically shifted by ``r``.

Circulant back propagation (METHOD §4, paper Eq. 8) sums the gradients of the K rotated copies,
each read back through its inverse rotation:

    dW[:, :, i, p, o] = sum_r rot_cw^-1(dE[:, :, i*K + (p + r) % K, o*K + r], r)

Everything here uses ops that TensorFlow constant-folds (reshape, unstack/stack, roll), so an
exported graph can fold the expansion; the LCE exporter materialises sign(E) anyway.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

ORIENTATIONS = (1, 2, 4, 8)

# The 8 outer taps of a 3x3 grid, clockwise from the top-left; the centre (1, 1) never moves.
RING_3X3 = ((0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0))


def check_orientations(orientations, kernel_size) -> None:
    """Raise ValueError unless (K, kernel_size) is a combination METHOD §2.1 defines."""
    if orientations not in ORIENTATIONS:
        raise ValueError(
            f"orientations={orientations!r} is not supported; use one of {ORIENTATIONS}."
        )
    h, w = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if h != w or h % 2 == 0:
        raise ValueError(
            f"Circulant filters need an odd square kernel (1x1, 3x3, 5x5, ...), got {h}x{w}: "
            "a rotation maps the tap grid onto itself only around a centre tap."
        )
    if orientations == 8 and h not in (1, 3):
        raise ValueError(
            f"orientations=8 (45-degree steps) is defined for 1x1 and 3x3 kernels only, got "
            f"{h}x{w}; use orientations <= 4 for larger kernels or kernel_size=3."
        )


def _ring_step_permutation() -> tuple:
    """Taps of a 3x3 grid after one 45-degree clockwise step: ring shift by 1, centre fixed."""
    taps = np.arange(9).reshape(3, 3)
    rotated = taps.copy()
    for j, (y, x) in enumerate(RING_3X3):
        ty, tx = RING_3X3[(j + 1) % 8]
        rotated[ty, tx] = taps[y, x]
    return tuple(int(t) for t in rotated.ravel())


RING_STEP = _ring_step_permutation()


def _permute_taps(x, perm):
    """Reorder the (h, w) tap grid of ``x`` (leading axes) by ``perm``, with foldable ops."""
    shape = x.shape.as_list()  # kernels always have static shapes
    taps = tf.unstack(tf.reshape(x, [shape[0] * shape[1], *shape[2:]]), axis=0)
    return tf.reshape(tf.stack([taps[t] for t in perm], axis=0), shape)


def _quarter_turns_cw(x, turns: int):
    """np.rot90(x, -turns) on the two leading axes, as reverse/transpose."""
    swap = [1, 0, *range(2, x.shape.rank)]
    turns %= 4
    if turns == 1:
        return tf.transpose(tf.reverse(x, [0]), swap)
    if turns == 2:
        return tf.reverse(x, [0, 1])
    if turns == 3:
        return tf.reverse(tf.transpose(x, swap), [0])
    return x


def rotate_kernel(x, orientations: int, r: int, inverse: bool = False):
    """``rot_cw(x, r)`` (or its inverse) on the two leading (spatial) axes of ``x``.

    Rotation index ``r`` turns by ``r * 360 / K`` degrees clockwise, i.e. ``s = r * 8 / K``
    steps of 45 degrees: a cyclic shift by ``s`` of the 3x3 ring, which for an even ``s``
    (every K <= 4) is ``s / 2`` quarter turns, ``np.rot90(w, -s / 2)``, on any odd square grid.
    """
    steps = (r * 8 // orientations) % 8
    if inverse:
        steps = -steps % 8
    if x.shape[0] == 1 or steps == 0:  # 1x1 kernels rotate trivially
        return x
    quarter_turns, odd_step = divmod(steps, 2)
    if odd_step:  # K = 8 on a 3x3 kernel (checked by check_orientations)
        x = _permute_taps(x, RING_STEP)
    return _quarter_turns_cw(x, quarter_turns)


def tie(kernel, orientations: int):
    """The tied variant: copy one (h, w, C_in, C_out) plane to all K input orientations."""
    return tf.stack([kernel] * orientations, axis=3)


def _expand(kernel, orientations: int):
    """E from an untied W (h, w, C_in, K, C_out) -> (h, w, C_in*K, C_out*K). Plain autodiff."""
    h, w, c_in, k, c_out = kernel.shape
    copies = [
        # roll by r: input orientation (p + r) % K receives plane p ("orientation spin")
        rotate_kernel(tf.roll(kernel, shift=r, axis=3) if r else kernel, orientations, r)
        for r in range(orientations)
    ]
    expanded = tf.stack(copies, axis=-1)  # (h, w, C_in, K_in, C_out, K_out)
    return tf.reshape(expanded, [h, w, c_in * k, c_out * orientations])


def circulant_backprop(grad_expanded, orientations: int):
    """Paper Eq. 8: dW from dE, summing the K rotated copies read back through rot^-1."""
    h, w, c_in_k, c_out_k = grad_expanded.shape
    k = orientations
    grad = tf.reshape(grad_expanded, [h, w, c_in_k // k, k, c_out_k // k, k])
    total = None
    for r in range(k):
        back = rotate_kernel(grad[..., r], k, r, inverse=True)
        back = tf.roll(back, shift=-r, axis=3) if r else back
        total = back if total is None else total + back
    return total


def expand_kernel(kernel, orientations: int, tied: bool = False):
    """Expand a learned kernel W into the circulant kernel E, with CBP as its gradient.

    Args:
        kernel: W, shape (h, w, C_in, K, C_out), or (h, w, C_in, C_out) when ``tied``.
        orientations: K in {1, 2, 4, 8}.
        tied: share one plane across the K input orientations (the paper's text).

    Returns:
        E, shape (h, w, C_in*K, C_out*K).

    Example:
        >>> w = tf.random.normal((3, 3, 2, 4, 5))
        >>> expand_kernel(w, 4).shape
        TensorShape([3, 3, 8, 20])
    """
    kernel = tf.convert_to_tensor(kernel)
    check_orientations(orientations, tuple(kernel.shape[:2]))
    expected_rank = 4 if tied else 5
    if kernel.shape.rank != expected_rank or (not tied and kernel.shape[3] != orientations):
        raise ValueError(
            f"Expected a {'tied (h, w, C_in, C_out)' if tied else '(h, w, C_in, K, C_out)'} "
            f"kernel with K={orientations}, got shape {kernel.shape}."
        )
    if tied:
        kernel = tie(kernel, orientations)  # autodiff sums the K copies' gradients

    @tf.custom_gradient
    def _expand_with_cbp(w):
        return _expand(w, orientations), lambda d_e: circulant_backprop(d_e, orientations)

    return _expand_with_cbp(kernel)

