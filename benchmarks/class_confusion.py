"""Where the upright errors of the invariance evidence go, class pair by class pair.

A classifier that is exactly invariant to quarter turns gives a digit and the same digit turned
by 180 degrees one answer, and a 9 turned by 180 degrees is drawn much like a 6. So on digit
datasets the invariant CBCN must confuse some 6s with 9s however well it is trained, while a
plain network need not. This script measures that: for every cell of the digit invariance
tables (``benchmarks/reproduce.py --only invariance``) that is in the ledger, it loads the
cell's saved model (never trains), scores it as saved (with the BN statistics `train` stored
in it) on the same upright split as its ledger row, and writes the errors, the 6 <-> 9
confusions and the most confused class pairs.

Usage:
    python benchmarks/class_confusion.py --runs-dir RUNS [--tables invariance_mnist ...]
        [--epochs N] [--steps-per-epoch N]  (the cells of another budget, as reproduce.py)
        [--data-root DIR]  (holding mnist/; default $CBCN_DATA, as reproduce.py)

Writes ``class_confusion.csv`` into --out (default benchmarks/results), one row per cell, with
the command that produced it. `benchmarks/report.py` puts it beside the invariance tables.
"""
import argparse
import os
import shlex
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # loaded by path (the tests): the campaign package lives beside it
    sys.path.insert(0, HERE)
from campaign import cells as campaign_cells  # noqa: E402
from campaign import ledger  # noqa: E402

TABLES = ("invariance_digits", "invariance_mnist")  # the digit datasets
PAIR = (6, 9)  # the classes a 180-degree turn maps onto each other (nearly)
COLUMNS = ("evidence", "table", "arm", "kernel_stage", "protocol", "seed", "epochs",
           "steps_per_epoch", "score_split", "n", "errors", "top1", "ledger_top1", "errors_6_9",
           "share_6_9", "top_pairs", "command")


def pair_counts(confusion: np.ndarray, top: int = 3) -> tuple:
    """(errors between the `PAIR` classes, both directions; the ``top`` most confused class
    pairs as ``[(i, j, count)]``, i < j, most first) of a confusion matrix (rows: labels).

    Example:
        >>> m = np.array([[5, 1, 0], [2, 7, 0], [0, 3, 9]])
        >>> pair_counts(np.pad(m, (0, 7)), top=2)[1]
        [(0, 1, 3), (1, 2, 3)]
    """
    off = confusion - np.diag(np.diag(confusion))
    both = off + off.T
    pairs = sorted(((int(both[i, j]), i, j) for i in range(len(both))
                    for j in range(i + 1, len(both)) if both[i, j]), key=lambda p: (-p[0], p[1:]))
    return int(both[PAIR]), [(i, j, c) for c, i, j in pairs[:top]]


def confusion_matrix(model, config) -> np.ndarray:
    """The confusion matrix (rows: labels, columns: predictions) of ``model`` on ``config``'s
    upright evaluation split, as `cbcn evaluate` scores it."""
    import tensorflow as tf

    from cbcn_tf.data import load_dataset

    data = load_dataset(config.dataset, config.eval_split, batch_size=256,
                        data_dir=config.data_dir,
                        validation_fraction=config.validation_fraction)
    classes = model.output_shape[-1]
    total = np.zeros((classes, classes), np.int64)
    for images, labels in data:
        predicted = tf.argmax(model(images, training=False), axis=-1)
        total += tf.math.confusion_matrix(labels, predicted, num_classes=classes,
                                          dtype=tf.int64).numpy()
    return total


def cell_row(cell, row, runs_dir, data_root=None) -> dict:
    """One COLUMNS row (without the command) for a ledger cell with a saved model."""
    from cbcn_tf import training

    run_dir = ledger.trained_run_dir(cell, row, runs_dir)
    if run_dir is None:
        raise FileNotFoundError(f"{cell.run_name()}: no model.h5 (pass its --runs-dir)")
    campaign_cells.require_data_root([cell], data_root)
    config = campaign_cells.cell_config(cell, data_root)
    model = training.load_model(run_dir)
    matrix = confusion_matrix(model, config)
    n, errors = int(matrix.sum()), int(matrix.sum() - np.trace(matrix))
    pair, top = pair_counts(matrix)
    return dict(zip(ledger.KEY, cell.key()), evidence=cell.sweep,
                score_split=config.eval_split, n=n, errors=errors, top1=f"{1 - errors / n:.4f}",
                ledger_top1=row.get("top1", ""), errors_6_9=pair,
                share_6_9=f"{pair / errors:.3f}" if errors else "0",
                top_pairs=" ".join(f"{i}-{j}:{c}" for i, j, c in top))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", required=True,
                        help="the campaign's --runs-dir (ledger rows name their folders "
                             "below it)")
    parser.add_argument("--data-root", default=os.environ.get(campaign_cells.DATA_ENV) or None,
                        help="folder holding mnist/ (as reproduce.py; default: $CBCN_DATA)")
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES))
    parser.add_argument("--ledger", default=os.path.join(HERE, "results", "reproduce.csv"))
    parser.add_argument("--epochs", type=int, default=None,
                        help="the cells of this epoch budget (as reproduce.py --epochs)")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="the cells of these capped epochs (as reproduce.py)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    import cbcn_tf  # noqa: F401  (Keras 2 first)
    from cbcn_tf import files
    from cbcn_tf.errors import ConfigError

    command = ledger.portable_command(shlex.join(
        ["python", os.path.relpath(os.path.abspath(__file__), campaign_cells.ROOT),
         *(argv or sys.argv[1:])]))
    by_key = {ledger.row_key(r): r for r in ledger.read_ledger(args.ledger)}
    rows = []
    for cell in campaign_cells.all_cells(["invariance"], epochs=args.epochs,
                                         steps_per_epoch=args.steps_per_epoch):
        row = by_key.get(cell.key())
        if cell.sweep not in args.tables or row is None or row.get("status", "ok") != "ok":
            continue
        try:
            result = dict(cell_row(cell, row, args.runs_dir, args.data_root), command=command)
        except (FileNotFoundError, ConfigError) as exc:
            print(f"error: {exc}; nothing written.")
            return 1
        print(f"{cell.sweep} {cell.arm} s{cell.seed}: top1 {result['top1']} (ledger "
              f"{result['ledger_top1']}), {result['errors']} errors, 6<->9 "
              f"{result['errors_6_9']}, top pairs {result['top_pairs']}", flush=True)
        rows.append(result)
    if not rows:
        print(f"No cell of {', '.join(args.tables)} in {args.ledger}.")
        return 1
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "class_confusion.csv")
    files.write_csv(path, [{k: r[k] for k in COLUMNS} for r in rows])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
