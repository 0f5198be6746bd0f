"""Merge another checkout's ledger into this one; write the results files' commands without
the folders of the machine that ran them.

`merge`: the rows of another ledger (a campaign run from another checkout or machine) whose
`KEY` is not in this ledger yet are added, each with the ``run_dir`` (its `Cell.run_name`) and
the ``command`` (`command_line`) of the matching cell of `campaign.cells`: the row then says
what this checkout's definition of the cell runs, with the data root and the runs folder as
``$CBCN_DATA`` / ``$RUNS_DIR``. Its scores, curves and times are kept as they are. Rows whose
key is already in the ledger are skipped, so merging the same ledger again adds only its new
rows. A row whose key matches no cell is refused (`ConfigError` naming the key, nothing
written): the ledger holds only cells this checkout defines, each with a command that trains
it.

`normalise_results`: the same re-derivation for the rows already in the ledgers of
``benchmarks/results/`` (``command`` and ``run_dir`` only); in the other results files, and
for a ledger row that matches no cell, the machine's folders in ``command`` become the
placeholders (`portable_command`).

Usage (from the repository root):
    python benchmarks/merge_ledger.py OTHER/benchmarks/results/reproduce.csv [--ledger PATH]
    python benchmarks/merge_ledger.py --normalise [--results DIR]
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
import sys

from campaign.cells import GROUPS, all_cells
from campaign.ledger import (COLUMNS, KEY, LEDGER, command_line, finished_keys, portable_command,
                             read_ledger, relative_run_dir, row_key, update_ledger)
from cbcn_tf.errors import CbcnError, ConfigError, MissingFileError

RESULTS = os.path.dirname(LEDGER)


def cell_index(rows) -> dict:
    """{ledger key: `Cell`} of every group's cells at the campaign's budgets and at each
    (epochs, steps per epoch) of ``rows`` (cells run with ``--epochs`` / ``--steps-per-epoch``)."""
    budgets = {(row.get("epochs"), row.get("steps_per_epoch") or "") for row in rows
               if str(row.get("epochs")).isdigit() and str(row.get("steps_per_epoch") or "0"
                                                           ).isdigit()}
    index = {cell.key(): cell for cell in all_cells(GROUPS)}
    for epochs, steps in sorted(budgets):
        for cell in all_cells(GROUPS, epochs=int(epochs), steps_per_epoch=int(steps or 0) or None):
            index.setdefault(cell.key(), cell)
    return index


def with_cell(row, cell) -> dict:
    """``row`` with the ``command`` and ``run_dir`` of ``cell``."""
    return dict(row, command=command_line(cell), run_dir=relative_run_dir(cell, row))


def merge(other, ledger=LEDGER) -> tuple:
    """Add the rows of the ledger ``other`` that ``ledger`` lacks (see the module docstring);
    (rows added, rows skipped because their key is in ``ledger`` already)."""
    if not os.path.isfile(other):
        raise MissingFileError(f"{other} does not exist; pass the path of the ledger to merge "
                               "(a campaign's benchmarks/results/reproduce.csv).")
    incoming = read_ledger(other)
    index = cell_index(incoming)
    for row in incoming:
        if row_key(row) not in index:
            raise ConfigError(
                f"{other}: the row {dict(zip(KEY, row_key(row)))} matches no cell of "
                "benchmarks/campaign/cells.py; define its cell there (or merge a copy of the "
                "ledger without that row). Nothing was merged.")
    counts = {}

    def change(rows):
        have, new = finished_keys(rows), []
        for row in incoming:
            if row_key(row) not in have:
                have.add(row_key(row))
                new.append(with_cell(row, index[row_key(row)]))
        counts.update(added=len(new), skipped=len(incoming) - len(new))
        return rows + new

    update_ledger(ledger, change, COLUMNS)
    return counts["added"], counts["skipped"]


def _header(path) -> list:
    with open(path, newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), [])


def _cells_of(path, rows, ledger: bool):
    """(row -> its `Cell` or None, the columns that name a row's cell) for the results file at
    ``path`` holding ``rows``: a ledger's `KEY`; optimizer_check.csv's (arm, optimizer); no
    cells in the other files."""
    if ledger:
        index = cell_index(rows)
        return (lambda row: index.get(row_key(row))), KEY
    if os.path.basename(path) == "optimizer_check.csv":
        import optimizer_check

        cells = optimizer_check.row_cells(rows)
        return (lambda row: cells.get((row["arm"], row["optimizer"]))), ("arm", "optimizer")
    return (lambda row: None), ()


def normalise_file(path) -> tuple:
    """Rewrite the ``command`` (and, in a ledger, ``run_dir``) of every row of the results file
    at ``path`` (see the module docstring); (rows changed, the rows of a file of cells that
    match no cell, as {column: value} of the columns naming a cell). A file without a
    ``command`` column, or with nothing to change, is left as it is."""
    header = _header(path)
    if "command" not in header:
        return 0, []
    ledger = set(COLUMNS) - {"run_dir"} <= set(header)
    columns = list(COLUMNS) if ledger else header

    def normal(rows):
        cell_of, naming = _cells_of(path, rows, ledger)
        out, unmatched = [], []
        for row in rows:
            cell = cell_of(row)
            if cell is None:
                out.append(dict(row, command=portable_command(row["command"])))
                if naming:
                    unmatched.append({k: row[k] for k in naming})
            else:
                out.append(with_cell(row, cell) if ledger
                           else dict(row, command=command_line(cell)))
        return out, unmatched

    rows = read_ledger(path)
    out, unmatched = normal(rows)
    changed = sum(new != row for new, row in zip(out, rows))
    if changed or columns != header:
        update_ledger(path, lambda current: normal(current)[0], columns)
    return changed, unmatched


def normalise_results(results=RESULTS) -> dict:
    """`normalise_file` of every ``*.csv`` in ``results``: {file name: (changed, unmatched)}."""
    return {os.path.basename(path): normalise_file(path)
            for path in sorted(glob.glob(os.path.join(results, "*.csv")))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="merge_ledger.py", description=__doc__.splitlines()[0])
    parser.add_argument("other", nargs="?", help="the ledger whose new rows are added")
    parser.add_argument("--ledger", default=LEDGER, help="the ledger to add them to")
    parser.add_argument("--normalise", action="store_true",
                        help="re-derive the commands of every results file in --results")
    parser.add_argument("--results", default=RESULTS)
    args = parser.parse_args(argv)
    if bool(args.other) == args.normalise:
        parser.error("pass either the ledger to merge or --normalise.")
    try:
        if args.normalise:
            for name, (changed, unmatched) in normalise_results(args.results).items():
                print(f"{name}: {changed} rows normalised" + "".join(
                    f"\n  matches no cell (placeholders only): {row}" for row in unmatched))
        else:
            added, skipped = merge(args.other, args.ledger)
            print(f"{args.ledger}: {added} rows added from {args.other}, {skipped} skipped "
                  "(their key is in the ledger already)")
    except CbcnError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0
