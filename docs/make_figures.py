"""Draw the figures of docs/METHOD.md from cbcn_tf.cif itself, so they show what the code does.

    .venv/bin/python docs/make_figures.py      # writes docs/figures/*.png

- ``cif_rotations.png``: a 3x3 filter with taps a..i and its K rotated copies, K = 4 and K = 8
  (METHOD §2.1).
- ``cif_expansion.png``: the expanded kernel E of one learned filter (C_in = C_out = 1, K = 4)
  as a K x K grid of 3x3 blocks, input orientation down, output orientation across; each tap
  is labelled with its letter and the plane p of W it comes from (METHOD §2.3, orientation
  spin).
"""
from __future__ import annotations

import os
import string
import tempfile

import cbcn_tf  # noqa: F401  (selects Keras 2 before tensorflow is imported)
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cbcn_tf import cif  # noqa: E402

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures")
LETTERS = string.ascii_lowercase[:9]


def _code(tap: int, plane: int) -> float:
    """A kernel value that encodes (tap, plane), read back from E after the expansion."""
    return 1.0 + tap + 10.0 * plane


def _decode(value: float) -> str:
    plane, tap = divmod(int(round(value)) - 1, 10)
    return f"{LETTERS[tap]}{plane}"


def _draw_grid(ax, labels, title, colors=None):
    ax.set_xlim(0, 3)
    ax.set_ylim(3, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    for y in range(3):
        for x in range(3):
            face = colors[y][x] if colors is not None else "white"
            ax.add_patch(plt.Rectangle((x, y), 1, 1, facecolor=face, edgecolor="black"))
            ax.text(x + 0.5, y + 0.5, labels[y][x], ha="center", va="center", fontsize=9)


def draw_rotations(path: str) -> None:
    taps = np.array([_code(t, 0) for t in range(9)], np.float32).reshape(3, 3, 1, 1)
    fig, axes = plt.subplots(2, 8, figsize=(12, 3.6))
    for row, k in enumerate((4, 8)):
        for r in range(8):
            ax = axes[row, r]
            if r >= k:
                ax.axis("off")
                continue
            rotated = np.asarray(cif.rotate_kernel(tf.constant(taps), k, r))[:, :, 0, 0]
            labels = [[_decode(v)[0] for v in line] for line in rotated]
            colors = [["#ffe9a8" if labels[y][x] == "a" else "white" for x in range(3)]
                      for y in range(3)]
            _draw_grid(ax, labels, f"K={k}, r={r}: {r * 360 // k} deg cw", colors)
    fig.suptitle("rot_cw(w, r): the 8 outer taps shift clockwise by r * 8 / K; the centre e "
                 "stays (K <= 4: np.rot90(w, -r))", fontsize=10)
    _save(fig, path)


def draw_expansion(path: str, k: int = 4) -> None:
    w = np.array([[_code(t, p) for p in range(k)] for t in range(9)], np.float32)
    w = w.reshape(3, 3, 1, k, 1)  # (h, w, C_in, K, C_out): plane p holds taps "a_p".."i_p"
    expanded = cif.expand_kernel(w, k).numpy()  # (3, 3, K, K)
    fig, axes = plt.subplots(k, k, figsize=(2.1 * k, 2.2 * k))
    palette = ["#cfe8ff", "#ffd9cf", "#d9f2d0", "#eadcf7"]
    for q in range(k):
        for r in range(k):
            block = expanded[:, :, q, r]
            labels = [[_decode(v) for v in line] for line in block]
            plane = int(labels[1][1][1:])
            colors = [[palette[plane % len(palette)]] * 3 for _ in range(3)]
            _draw_grid(axes[q, r], labels, f"in q={q}, out r={r}: W_p={plane}, rot {r}",
                       colors)
    fig.suptitle(f"E[:, :, i*K + (p + r) % K, o*K + r] = rot_cw(W[:, :, i, p, o], r), K={k}\n"
                 "down: input orientation q; across: output orientation r; colour: plane p "
                 "of W (orientation spin)", fontsize=10)
    _save(fig, path)


def _save(fig, path: str) -> None:
    """Write ``path`` atomically: a temporary file next to it, then a rename."""
    fig.tight_layout()
    handle, tmp = tempfile.mkstemp(suffix=".png", dir=os.path.dirname(path))
    os.close(handle)
    try:
        fig.savefig(tmp, dpi=110)
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


def main() -> None:
    os.makedirs(FIGURES, exist_ok=True)
    draw_rotations(os.path.join(FIGURES, "cif_rotations.png"))
    draw_expansion(os.path.join(FIGURES, "cif_expansion.png"))
    print(f"wrote {FIGURES}/cif_rotations.png and cif_expansion.png")


if __name__ == "__main__":
    main()
