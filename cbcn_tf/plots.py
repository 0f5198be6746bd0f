"""Training-curve figures (PNG, matplotlib's Agg canvas: no display, no global backend change).

Example:
    >>> import os, tempfile
    >>> from cbcn_tf import plots
    >>> rows = [{"epoch": 0, "loss": 2.0, "val_loss": 1.9, "accuracy": 0.3, "val_accuracy": 0.35},
    ...         {"epoch": 1, "loss": 1.2, "val_loss": 1.3, "accuracy": 0.6, "val_accuracy": 0.55}]
    >>> path = os.path.join(tempfile.mkdtemp(), "curves.png")
    >>> plots.plot_curves({"cbcn": rows}, path)
    >>> os.path.getsize(path) > 0
    True
"""
from __future__ import annotations

import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cbcn_tf import files

PANELS = (("loss", "loss (cross-entropy)"), ("accuracy", "top-1 accuracy"))


def plot_curves(histories: dict, path, *, title: str | None = None) -> None:
    """Loss and accuracy per epoch for one or more runs on one figure, written atomically.

    ``histories`` maps a label (the legend entry) to history rows (dicts with "epoch" and
    metrics, as `cbcn_tf.training.read_history` returns). Each run has one colour; training
    curves are solid, validation (``val_*``) curves dashed.
    """
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(PANELS))
    for index, (label, rows) in enumerate(histories.items()):
        epochs = [int(row["epoch"]) + 1 for row in rows]
        for axis, (metric, _) in zip(axes, PANELS):
            for key, style, kind in ((metric, "-", "train"), (f"val_{metric}", "--", "val")):
                points = [(e, row[key]) for e, row in zip(epochs, rows)
                          if key in row and not math.isnan(row[key])]
                if points:
                    axis.plot(*zip(*points), style, color=f"C{index}", marker=".",
                              label=f"{label} ({kind})")
    for axis, (_, name) in zip(axes, PANELS):
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    files.atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
