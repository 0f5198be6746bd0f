"""Why do the binary LeNets reach only about 90% on MNIST in the campaign's 8 epochs?

A budget question or a defect of the model? This check trains the Table 2 LeNets (kernel
stage 5-10-20-40, K = 4, upright, seed 0) for a few epochs twice, changing only the optimizer:
the campaign's reading of the paper's recipe (SGD momentum 0.9, lr 0.01) and Adam lr 0.001
(the usual optimizer of binary networks, e.g. larq's examples). If the same model, data and
batch reach near-paper accuracy in a few epochs under Adam, the layout can learn and the 8-epoch
SGD numbers are limited by the budget, not by a defect.

Every cell is a `campaign.cells.Cell` trained and scored by `campaign.runner.run_cell`, i.e.
by `cbcn train --config benchmarks/recipes/mnist_lenet.yaml --set ...` with the arm's
overrides (the command is in the output). Finished cells (model file and identical config in
the run folder) are not retrained.
Writes ``benchmarks/results/optimizer_check.csv``: one row per (arm, optimizer, epoch) with
the training-split accuracy (dropout on, as Keras logs it) and the test-split accuracy.

Usage:
    python benchmarks/optimizer_check.py --runs-dir /tmp/optimizer_check --data-root DIR
    python benchmarks/optimizer_check.py --epochs 1 --steps-per-epoch 2 --out /tmp/o.csv  # smoke
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from campaign.cells import DATA_ENV, MNIST_ARMS, MNIST_RECIPE, Cell  # noqa: E402
from campaign.runner import run_cell  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "optimizer_check.csv")
OPTIMIZERS = {"sgd": (), "adam": ("optimizer=adam", "lr=0.001")}  # sgd: the recipe as it is
ARMS = ("cbcn", "xnor")
COLUMNS = ("arm", "optimizer", "epoch", "train_accuracy", "test_accuracy", "command")


def cells(epochs=3, steps_per_epoch=None):
    return [(optimizer, Cell(
        "mnist", "optimizer_check", f"{arm}_{optimizer}", MNIST_RECIPE,
        MNIST_ARMS[arm] + overrides, (5, 10, 20, 40), "upright", 0, epochs, steps_per_epoch,
        data_folder="mnist"))
        for optimizer, overrides in OPTIMIZERS.items() for arm in ARMS]


def row_cells(rows) -> dict:
    """{(arm, optimizer): Cell} of this script's CSV ``rows``, each cell trained for the last
    epoch its rows reach."""
    last = {}
    for row in rows:
        key = (row["arm"], row["optimizer"])
        last[key] = max(last.get(key, 0), int(row["epoch"]))
    found = {}
    for epochs in set(last.values()):
        for optimizer, cell in cells(epochs):
            key = (cell.arm.rsplit("_", 1)[0], optimizer)
            if last.get(key) == epochs:
                found[key] = cell
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default=os.path.join("/tmp", "cbcn_optimizer_check"))
    parser.add_argument("--data-root", default=os.environ.get(DATA_ENV) or None,
                        help="folder holding mnist/ (as reproduce.py; default: $CBCN_DATA)")
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    import cbcn_tf  # noqa: F401  (Keras 2 before anything touches tf.keras)
    from cbcn_tf import files, training

    rows = []
    for optimizer, cell in cells(args.epochs, args.steps_per_epoch):
        run_dir = os.path.join(os.path.abspath(args.runs_dir), cell.run_name())
        print(f"=== {cell.run_name()} -> {run_dir}", flush=True)
        ledger_row = run_cell(cell, args.runs_dir, data_root=args.data_root,
                              verbose=args.verbose)
        history = training.read_history(os.path.join(run_dir, training.HISTORY_FILE))
        for epoch, entry in enumerate(history, start=1):
            rows.append(dict(arm=cell.arm.rsplit("_", 1)[0], optimizer=optimizer, epoch=epoch,
                             train_accuracy=f"{entry['accuracy']:.4f}",
                             test_accuracy=f"{entry['val_accuracy']:.4f}",
                             command=ledger_row["command"]))
        print(f"  test top-1 {ledger_row['top1']}", flush=True)

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    files.atomic_write(args.out, write)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
