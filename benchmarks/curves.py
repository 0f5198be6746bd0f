"""Learning curves of the ledgers: per table, accuracy on the scored split against epoch.

Each ledger row keeps the accuracy after every epoch on the split it was scored on
(``val_curve``: validation or test split, as the row's ``score_split`` says). For each table
one figure, one panel per (kernel stage, protocol, epochs) setting, one line per arm: the mean
over seeds with the seeds' range as a band, so a curve still rising at its last epoch shows a
net that had not converged. Used by ``benchmarks/report.py``.
"""
from __future__ import annotations

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def curve(row) -> list:
    return [float(v) for v in row.get("val_curve", "").split()]


def settings(rows) -> dict:
    """{(table, kernel stage, protocol, epochs): {arm: [curves]}}, smoke runs left out."""
    out = {}
    for row in rows:
        if row.get("steps_per_epoch") or row.get("status", "ok") != "ok" or not curve(row):
            continue
        key = (row["table"], row["kernel_stage"], row["protocol"], int(row["epochs"]))
        out.setdefault(key, {}).setdefault(row["arm"], []).append(curve(row))
    return out


def plot_table(table, panels: dict, path) -> None:
    """One figure for ``table``: ``panels`` maps (stage, protocol, epochs) to {arm: curves}."""
    from cbcn_tf import files

    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(5.2 * columns, 3.9 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis, ((stage, protocol, epochs), arms) in zip(axes, sorted(panels.items(),
                                                                    key=_panel_order)):
        for index, (arm, curves) in enumerate(sorted(arms.items())):
            length = min(len(c) for c in curves)
            epochs_axis = range(1, length + 1)
            columns_ = list(zip(*(c[:length] for c in curves)))
            mean = [100 * sum(col) / len(col) for col in columns_]
            axis.plot(epochs_axis, mean, color=f"C{index}", label=f"{arm} (n={len(curves)})")
            if len(curves) > 1:
                axis.fill_between(epochs_axis, [100 * min(col) for col in columns_],
                                  [100 * max(col) for col in columns_], color=f"C{index}",
                                  alpha=0.2, linewidth=0)
        axis.set_title(f"{stage}, {protocol}, {epochs} epochs", fontsize="medium")
        axis.set_xlabel("epoch")
        axis.set_ylabel("top-1 % (scored split)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small", loc="lower right")
    for axis in axes[len(panels):]:
        axis.set_visible(False)
    figure.suptitle(f"{table}: mean over seeds, band = seed range")
    files.atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=80))


def _panel_order(item):
    stage, protocol, epochs = item[0]
    return ([int(v) for v in stage.split("-")], protocol != "upright", epochs)


def curves_section(rows, results_dir) -> list:
    """Write ``curves_<table>.png`` for every table of ``rows``; the BENCHMARKS.md lines."""
    tables = {}
    for (table, stage, protocol, epochs), arms in settings(rows).items():
        tables.setdefault(table, {})[(stage, protocol, epochs)] = arms
    if not tables:
        return []
    lines = ["## Learning curves", "",
             "Accuracy on each cell's scored split after every epoch (the ledgers' `val_curve`: "
             "the test split for Table 2, the validation split elsewhere), mean over seeds with "
             "the seeds' range as a band. A curve still climbing at its last epoch is a net that "
             "had not converged. Each point is scored as the run scored it then: runs trained "
             "with precise BN statistics (the default) re-estimate them before every "
             "validation, earlier runs (ledger column `precise_bn` filled in by a rescore) used "
             "Keras' moving averages, which is why their binary nets' curves swing. Written by "
             "`python benchmarks/report.py`.", ""]
    for table in sorted(tables):
        name = f"curves_{table}.png"
        plot_table(table, tables[table], os.path.join(results_dir, name))
        lines += [f"![{table}](benchmarks/results/{name})", ""]
    return lines
