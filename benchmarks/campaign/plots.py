"""The figures of BENCHMARKS.md, each written atomically (`cbcn_tf.files.atomic_write`).

Learning curves: each ledger row keeps the accuracy after every epoch on the split it was
scored on (``val_curve``: validation or test split, as the row's ``score_split`` says). For
each table one figure, one panel per (kernel stage, protocol, epochs, recipe) setting (the
recipe of arms named ``ARM_CANDIDATE``, `campaign.cells.arm_recipe`), one line per arm, one
colour per plain arm: the mean over seeds with the seeds' range as a band, so a curve still
rising at its last epoch shows a net that had not converged. Also the slow-start ablation's validation curves and
the invariance tables' accuracy against rotation angle.
"""
from __future__ import annotations

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from campaign.cells import RECIPE_CANDIDATES, arm_recipe
from cbcn_tf import files


def curve(row) -> list:
    """A ledger row's ``val_curve`` as floats ([] if it has none)."""
    return [float(v) for v in (row.get("val_curve") or "").split()]


def _figure(**kwargs) -> Figure:
    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path, dpi) -> None:
    files.atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi))


# --- learning curves --------------------------------------------------------------------------


def settings(rows) -> dict:
    """{(table, kernel stage, protocol, epochs, recipe): {arm: [curves]}}, smoke runs left
    out."""
    out = {}
    for row in rows:
        if row.get("steps_per_epoch") or row.get("status", "ok") != "ok" or not curve(row):
            continue
        key = (row["table"], row["kernel_stage"], row["protocol"], int(row["epochs"]),
               arm_recipe(row["arm"])[1])
        out.setdefault(key, {}).setdefault(row["arm"], []).append(curve(row))
    return out


def plot_table(table, panels: dict, path) -> None:
    """One figure for ``table``: ``panels`` maps (stage, protocol, epochs, recipe) to {arm:
    curves}."""
    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    figure = _figure(figsize=(5.2 * columns, 3.9 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    plain = sorted({arm_recipe(arm)[0] for arms in panels.values() for arm in arms})
    for axis, ((stage, protocol, epochs, recipe), arms) in zip(
            axes, sorted(panels.items(), key=_panel_order)):
        for arm, curves in sorted(arms.items()):
            index = plain.index(arm_recipe(arm)[0])
            length = min(len(c) for c in curves)
            epochs_axis = range(1, length + 1)
            columns_ = list(zip(*(c[:length] for c in curves)))
            mean = [100 * sum(col) / len(col) for col in columns_]
            axis.plot(epochs_axis, mean, color=f"C{index}", label=f"{arm} (n={len(curves)})")
            if len(curves) > 1:
                axis.fill_between(epochs_axis, [100 * min(col) for col in columns_],
                                  [100 * max(col) for col in columns_], color=f"C{index}",
                                  alpha=0.2, linewidth=0)
        axis.set_title(f"{stage}, {protocol}, {epochs} epochs" + (f", {recipe}" if recipe else ""),
                       fontsize="medium")
        axis.set_xlabel("epoch")
        axis.set_ylabel("top-1 % (scored split)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small", loc="lower right")
    for axis in axes[len(panels):]:
        axis.set_visible(False)
    figure.suptitle(f"{table}: mean over seeds, band = seed range")
    _save(figure, path, dpi=80)


def _panel_order(item):
    stage, protocol, epochs, recipe = item[0]
    return ([int(v) for v in stage.split("-")], protocol != "upright", epochs,
            ["", *RECIPE_CANDIDATES].index(recipe))


def curves_section(rows, results_dir) -> list:
    """Write ``curves_<table>.png`` for every table of ``rows``; the BENCHMARKS.md lines."""
    tables = {}
    for (table, *setting), arms in settings(rows).items():
        tables.setdefault(table, {})[tuple(setting)] = arms
    if not tables:
        return []
    lines = ["## Learning curves", "",
             "Accuracy on each cell's scored split after every epoch (the ledgers' `val_curve`: "
             "the test split for Table 2, the validation split elsewhere), mean over seeds with "
             "the seeds' range as a band. A curve still climbing at its last epoch is a net that "
             "had not converged. Each point is scored as the run scored it then: runs trained "
             "with precise BN statistics (the default) re-estimate them before every "
             "validation; runs whose ledger rows also hold a moving-average score (column "
             "`top1_moving_bn`) used Keras' moving averages, which is why their binary nets' "
             "curves swing. Arms named `ARM_CANDIDATE` (Table 2's adopted recipe, the recipe "
             "check's candidates) have a panel of their recipe, in their plain arm's colour. "
             "Written by "
             "`python benchmarks/report.py`.", ""]
    for table in sorted(tables):
        name = f"curves_{table}.png"
        plot_table(table, tables[table], os.path.join(results_dir, name))
        lines += [f"![{table}](benchmarks/results/{name})", ""]
    return lines


# --- ablations and invariance -----------------------------------------------------------------

# The arms drawn solid in the slow-start figure: the paper-faithful CBCN and the references.
_REFERENCE_ARMS = ("cbcn", "k1_same_widths", "xnor_doubled", "fp")


def plot_slow_start(arms, png) -> None:
    """Validation curves of the slow-start ablation: ``arms`` maps arm -> (stage, epochs,
    ledger rows); the first epochs of every seed beside all epochs."""
    from matplotlib import colormaps

    fig = _figure(figsize=(13, 5))
    axes = fig.subplots(1, 2)
    cmap = colormaps["tab20"]
    for index, (arm, (_, _, arm_rows)) in enumerate(arms.items()):
        color = cmap(index % 20)
        style = "-" if arm in _REFERENCE_ARMS else "--"
        for ax, last in zip(axes, (5, None)):
            for n, row in enumerate(arm_rows):
                points = curve(row)[:last]
                ax.plot(range(1, len(points) + 1), points, style, color=color, alpha=0.8,
                        linewidth=2.2 if arm == "cbcn" else 1.2, label=arm if n == 0 else None)
    axes[0].set(title="first epochs (every seed)", xlabel="epoch", ylabel="validation top-1")
    axes[1].set(title="all epochs", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Digits, CBCN K = 4 ablations (validation split)")
    fig.tight_layout()
    _save(fig, png, dpi=100)


def plot_angles(plotted, titles, bold_arms, png) -> None:
    """Top-1 against rotation angle, one panel per table: ``plotted`` maps table -> {arm:
    (angles, mean top-1 per angle, seeds)}, ``titles`` table -> panel title; the arms in
    ``bold_arms`` drawn thicker."""
    fig = _figure(figsize=(max(5.5 * len(plotted), 7.0), 4.4))
    axes = fig.subplots(1, len(plotted), squeeze=False)
    for ax, (table, arms) in zip(axes[0], plotted.items()):
        for arm, (angles, points, n) in arms.items():
            if angles and angles[0] == 0:  # close the circle at 360 degrees
                angles, points = angles + [360], points + [points[0]]
            ax.plot(angles, [100 * v for v in points], marker="o", markersize=3,
                    linewidth=2.2 if arm in bold_arms else 1.3, label=f"{arm} (n = {n})")
        ax.set(title=titles[table], xlabel="rotation angle (degrees)", ylabel="top-1 %",
               xlim=(0, 360), xticks=range(0, 361, 45))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Accuracy against rotation angle, upright-trained (mean over seeds)")
    fig.tight_layout()
    _save(fig, png, dpi=100)
