"""Train, score and sweep the campaign's cells: the command line of ``benchmarks/reproduce.py``.

Each cell is trained by `cbcn_tf.training.train` into ``--runs-dir``/`Cell.run_name`, scored
upright and rotated by `cbcn_tf.training.evaluate`, and gets one ledger row; a cell to sweep
is then scored at fixed angles from its saved model into the angle ledger. Cells run in the
order given (seed-major), finished ones are skipped, and ``--budget-minutes`` stops before a
cell whose estimate (`campaign.budget`) does not fit in what is left.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from campaign import cells as campaign_cells
from campaign.budget import estimate_seconds, missing_angles, needs, plan, sweep_angles, \
    sweep_seconds
from campaign.cells import ANGLE_STEP, DATA_ENV, GROUPS, Cell, cell_config, require_data_root
from campaign.ledger import (ANGLE_COLUMNS, ANGLES_LEDGER, KEY, LEDGER, append_row,
                             append_rows, cell_row, now_utc, read_ledger, row_key, run_folder,
                             trained_run_dir)

TIMING_FILE = "reproduce_timing.json"  # wall time of `train` in the run folder


def precise_bn_batches(config) -> int:
    """The number of training batches `train` averaged the BN statistics of ``config``'s run
    over (saved in its ``model.h5``, so the model is scored as saved): the ledger's
    ``precise_bn`` column."""
    from cbcn_tf import training
    from cbcn_tf.training.precise_bn import batches_to_use

    return batches_to_use(training.resolve_config(config))


def run_cell(cell: Cell, runs_dir, *, data_root=None, verbose: int = 2) -> dict:
    """Train (or continue, or just score a finished run of) ``cell`` in its folder below
    ``runs_dir``; return its ledger row. ``data_root``: the folder holding the cell's data
    folder (`Cell.data_folder`)."""
    from cbcn_tf import config as config_lib
    from cbcn_tf import files, training
    from cbcn_tf.summary import summary as cbcn_summary

    require_data_root([cell], data_root)
    config = cell_config(cell, data_root)
    run_dir = run_folder(cell, runs_dir)
    history_path = os.path.join(run_dir, training.HISTORY_FILE)
    timing_path = os.path.join(run_dir, TIMING_FILE)
    saved_path = os.path.join(run_dir, config_lib.CONFIG_FILE)
    if (os.path.exists(os.path.join(run_dir, training.MODEL_FILE)) and os.path.exists(saved_path)
            and config_lib.read_config(saved_path) == training.resolve_config(config)):
        model = training.load_model(run_dir)  # trained before the ledger row was written
        history = training.read_history(history_path)
    else:
        before = len(training.read_history(history_path)) if os.path.exists(history_path) else 0
        tic = time.perf_counter()
        try:
            result = training.train(config, run_dir, verbose=verbose)
        except training.TrainingDiverged as exc:
            print(f"  diverged: {exc}", flush=True)
            return cell_row(cell, config, None, [], None, "diverged")
        seconds = time.perf_counter() - tic
        model, history = result.model, result.history
        trained = max(len(history) - before, 1)
        files.write_text(timing_path, json.dumps({"seconds": seconds, "epochs_trained": trained}))
    timing = None
    if os.path.exists(timing_path):
        with open(timing_path, encoding="utf-8") as handle:
            timing = json.load(handle)
    common = dict(split=config.eval_split, data_dir=config.data_dir,
                  validation_fraction=config.validation_fraction, batch_size=256)
    scores = {"upright": training.evaluate(model, config.dataset, **common),
              "rotated": training.evaluate(model, config.dataset, rotate=True, **common)}
    totals = cbcn_summary(model, print_fn=None).totals
    row = cell_row(cell, config, scores, history, timing, "ok", totals)
    row["precise_bn"] = str(precise_bn_batches(config))
    return row


# The settings a saved run must share with the cell before its model is swept (and the
# cell's model keys, `invariant` included).
_SWEEP_CHECK = ("model", "dataset", "seed", "epochs", "steps_per_epoch")


def sweep_cell(cell: Cell, run_dir, angles, *, data_root=None) -> list:
    """Score ``cell``'s saved model (in ``run_dir``) at each of ``angles``; its angle rows.

    Loads ``model.h5``, never trains; refuses (one line) a folder whose saved config is not
    the cell's (model, model keys, dataset, seed, epochs)."""
    from cbcn_tf import config as config_lib
    from cbcn_tf import training
    from cbcn_tf.errors import ConfigError, MissingFileError

    if run_dir is None:
        raise MissingFileError(
            f"{cell.run_name()} is in the ledger but no model.h5 was found in its folder below "
            "--runs-dir; pass the --runs-dir it was trained in, or delete its ledger row to "
            "train it again.")
    require_data_root([cell], data_root)
    config = cell_config(cell, data_root)
    saved_path = os.path.join(run_dir, config_lib.CONFIG_FILE)
    if os.path.exists(saved_path):
        saved = config_lib.read_config(saved_path)
        differ = [k for k in _SWEEP_CHECK if getattr(saved, k) != getattr(config, k)]
        differ += [f"model_kwargs.{k}" for k in sorted({*config.model_kwargs, "invariant"})
                   if saved.model_kwargs.get(k, False) != config.model_kwargs.get(k, False)]
        if differ:
            raise ConfigError(
                f"{run_dir} holds a run with other {', '.join(differ)} than the cell "
                f"{cell.run_name()}; pass the --runs-dir of this campaign.")
    model = training.load_model(run_dir)
    scores = training.evaluate_angles(
        model, config.dataset, angles, split=config.eval_split, data_dir=config.data_dir,
        validation_fraction=config.validation_fraction, batch_size=256)
    now = now_utc()
    key = dict(zip(KEY, cell.key()))
    return [dict(key, angle=str(angle), top1=f"{score['top1']:.4f}",
                 top5=f"{score['top5']:.4f}", dataset=config.dataset,
                 score_split=config.eval_split, finished_utc=now)
            for angle, score in scores.items()]


# --- command line -----------------------------------------------------------------------------


def _check_args(parser, args) -> None:
    """``parser.error`` (exit 2) for a count or budget that would be ignored or cannot work."""
    if not 0 < args.angle_step <= 360:
        parser.error(f"--angle-step must be in 1..360 degrees, got {args.angle_step}.")
    for option, value in (("--epochs", args.epochs), ("--seeds", args.seeds),
                          ("--steps-per-epoch", args.steps_per_epoch)):
        if value is not None and value < 1:
            parser.error(f"{option} must be a positive integer, got {value}.")
    budget = args.budget_minutes
    if budget is not None and not 0 < budget < float("inf"):
        parser.error(f"--budget-minutes must be a positive number of minutes, got {budget:g}.")


def _selected_cells(parser, cells, args, only) -> list:
    """The cells ``--arms`` / ``--tables`` / ``--kernel-stage`` keep. A name that no cell of
    the selected groups has is a ``parser.error`` (exit 2) listing the names they have."""
    filters = (
        ("--arms", "arms", args.arms, lambda cell: {cell.arm}),
        ("--tables", "tables", args.tables,
         lambda cell: {cell.table, cell.sweep} - {None, "", "*"}),
        ("--kernel-stage", "kernel stages", args.kernel_stage,
         lambda cell: {"-".join(map(str, cell.kernel_stage))}),
    )
    selected = cells
    for option, what, text, names in filters:
        if text is None:
            continue
        wanted = {name.strip() for name in text.split(",") if name.strip()}
        have = set().union(*map(names, selected))
        unknown = ", ".join(sorted(wanted - have))
        if unknown or not wanted:
            parser.error(f"{option} {text!r}: no cell of the selected groups ({', '.join(only)}) "
                         f"has {unknown or 'an empty name'}; their {what}: "
                         f"{', '.join(sorted(have))}. Choose from those, or select other groups "
                         "with --only.")
        cells = [cell for cell in cells if names(cell) & wanted]
    return cells


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reproduce.py", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=GROUPS,
                        help="run only this group (repeatable); default: mnist, cifar10, demo")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="stop before a cell that would not finish within N minutes")
    parser.add_argument("--runs-dir", default=os.path.join("/tmp", "cbcn_reproduce_runs"),
                        help="where run folders go (outside the repository)")
    parser.add_argument("--data-root", default=os.environ.get(DATA_ENV) or None,
                        help=f"folder holding mnist/ (the four MNIST IDX files) and cifar10/ "
                             f"(the CIFAR-10 image folder); default: ${DATA_ENV}")
    parser.add_argument("--ledger", default=LEDGER)
    parser.add_argument("--angles-ledger", default=ANGLES_LEDGER,
                        help="the accuracy-against-angle ledger (rows per cell and angle)")
    parser.add_argument("--angles", action="store_true",
                        help="sweep the fixed angles for the cells of every selected group "
                             "(the invariance group always does)")
    parser.add_argument("--angle-step", type=int, default=ANGLE_STEP,
                        help=f"degrees between swept angles (default {ANGLE_STEP}: 0..345)")
    parser.add_argument("--arms", default=None, help="comma-separated arms to keep")
    parser.add_argument("--tables", default=None,
                        help="comma-separated tables to keep, e.g. invariance_mnist (a cell "
                             "swept for an invariance table counts as that table's too)")
    parser.add_argument("--kernel-stage", default=None,
                        help="keep only cells of this kernel stage, e.g. 5-10-20-40 (run the "
                             "seeds of the small LeNet before the wide one)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the campaign's epochs (a different cell in the ledger)")
    parser.add_argument("--seeds", type=int, default=None, help="at most this many seeds per arm")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="cap each epoch (smoke runs; recorded in the ledger key)")
    parser.add_argument("--dry-run", action="store_true", help="list the cells to run and stop")
    parser.add_argument("--verbose", type=int, default=2, help="Keras verbosity")
    return parser


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    angles = sweep_angles(args.angle_step)

    import cbcn_tf  # noqa: F401  (Keras 2 before anything touches tf.keras)
    from cbcn_tf.errors import CbcnError

    only = args.only or ["mnist", "cifar10", "demo"]
    cells = campaign_cells.all_cells(only, epochs=args.epochs, seeds=args.seeds,
                                     steps_per_epoch=args.steps_per_epoch)
    if args.angles:
        cells = [dataclasses.replace(cell, sweep=cell.sweep or "*") for cell in cells]
    cells = _selected_cells(parser, cells, args, only)
    rows = read_ledger(args.ledger)
    angle_rows = read_ledger(args.angles_ledger)
    todo, _ = plan(cells, rows, angle_rows=angle_rows, angles=angles)
    sweeps = [c for c in todo if needs(c, rows, angle_rows, angles) == "angles"]

    def estimate(cell):
        return (sweep_seconds(cell, angles) if cell in sweeps
                else estimate_seconds(cell, rows) - sweep_seconds(cell) + sweep_seconds(
                    cell, angles))

    print(f"{len(cells)} cells, {len(cells) - len(todo) + len(sweeps)} already in "
          f"{args.ledger}, {len(todo) - len(sweeps)} to run"
          + (f", {len(sweeps)} to sweep only" if sweeps else "")
          + f" (about {sum(map(estimate, todo)) / 60:.0f} min by the ledger's / default epoch "
          "times)", flush=True)
    if args.dry_run:
        for cell in todo:
            print(f"  {cell.run_name()}  ~{estimate(cell) / 60:.1f} min"
                  + ("  (angles only)" if cell in sweeps else ""))
        return 0
    try:
        require_data_root(todo, args.data_root)
    except CbcnError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    return _run(cells, args, angles)


def _run(cells, args, angles) -> int:
    """Run ``cells`` one after another until all are in the ledgers or the budget is spent;
    1 if a cell failed (the others still run), else 0."""
    start = time.perf_counter()
    budget = None if args.budget_minutes is None else 60 * args.budget_minutes
    failed = set()
    while True:
        rows = read_ledger(args.ledger)
        angle_rows = read_ledger(args.angles_ledger)
        todo, stop = plan(cells, rows, budget, time.perf_counter() - start, angle_rows, angles)
        if stop:
            print(f"Stopping cleanly: {stop}. Run again to continue.", flush=True)
            break
        todo = [cell for cell in todo if cell.key() not in failed]
        if not todo:
            print("All selected cells are in the ledger.", flush=True)
            break
        cell = todo[0]
        try:
            if needs(cell, rows, angle_rows, angles) == "train":
                run_dir = run_folder(cell, args.runs_dir)
                print(f"\n=== {cell.run_name()} -> {run_dir}", flush=True)
                row = run_cell(cell, args.runs_dir, data_root=args.data_root,
                               verbose=args.verbose)
                append_row(args.ledger, row)
                print(f"  top1 {row['top1']} rotated {row['rot_top1']} "
                      f"({row.get('seconds_per_epoch', '?')} s/epoch) -> {args.ledger}",
                      flush=True)
                if not cell.sweep or row["status"] != "ok":
                    continue
            else:
                row = {row_key(r): r for r in rows}[cell.key()]
                run_dir = trained_run_dir(cell, row, args.runs_dir)
                print(f"\n=== {cell.run_name()}: angle sweep of the saved model in {run_dir}",
                      flush=True)
            missing = missing_angles(cell, angle_rows, angles)
            tic = time.perf_counter()
            new_rows = sweep_cell(cell, run_dir, missing, data_root=args.data_root)
        except (ValueError, OSError) as exc:
            print(f"  FAILED: {exc}", flush=True)
            failed.add(cell.key())
            continue
        append_rows(args.angles_ledger, new_rows, ANGLE_COLUMNS)
        print(f"  {len(new_rows)} angles in {time.perf_counter() - tic:.0f} s: "
              + " ".join(f"{r['angle']}:{r['top1']}" for r in new_rows)
              + f" -> {args.angles_ledger}", flush=True)
    return 1 if failed else 0
