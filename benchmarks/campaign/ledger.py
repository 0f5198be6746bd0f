"""The campaign's ledgers: one CSV row per finished cell, one per (cell, angle) of a sweep.

A cell is finished when the ledger has a row with its `KEY` values. Every write rewrites the
whole file through `cbcn_tf.files.atomic_write` under an exclusive `cbcn_tf.files.FileLock`
on ``PATH.lock``, so a campaign killed mid-write leaves the previous complete ledger, and
campaigns of several groups may write one ledger at the same time without losing rows.

A row's ``run_dir`` is its run folder relative to ``--runs-dir`` (`trained_run_dir`); its
``command`` the `cbcn train` command that trains the cell, with the data root written as
``$CBCN_DATA`` and the runs folder as ``$RUNS_DIR``, so rows do not depend on the machine.
Ledgers written without the ``run_dir`` column read the same: the folder is then the cell's
`Cell.run_name`, the name the runner always gives it.
"""
from __future__ import annotations

import csv
import datetime
import os
import shlex
import time

from campaign.cells import BENCHMARKS, DATA_ENV, ROOT

LEDGER = os.path.join(BENCHMARKS, "results", "reproduce.csv")
ANGLES_LEDGER = os.path.join(BENCHMARKS, "results", "angles.csv")

# Ledger key: a cell is finished when a row with these values exists.
KEY = ("table", "arm", "kernel_stage", "protocol", "seed", "epochs", "steps_per_epoch")
COLUMNS = KEY + (
    "group", "model", "orientations", "kernel_quantizer", "dataset", "score_split", "top1",
    "rot_top1", "top5", "val_curve", "bops", "flops", "seconds_per_epoch", "train_seconds",
    "status", "finished_utc", "command", "precise_bn", "top1_moving_bn", "rot_top1_moving_bn",
    "train_curve", "run_dir",
)
LOCK_POLL_SECONDS = 0.05
# The angle ledger: one row per (cell, angle).
ANGLE_KEY = KEY + ("angle",)
ANGLE_COLUMNS = ANGLE_KEY + ("top1", "top5", "dataset", "score_split", "finished_utc")


def read_ledger(path) -> list:
    """The rows of the ledger at ``path`` as dicts ([] when there is none yet)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def row_key(row) -> tuple:
    return tuple(str(row.get(k, "")) for k in KEY)


def finished_keys(rows) -> set:
    return {row_key(row) for row in rows}


def append_row(path, row) -> None:
    """Add ``row`` to the ledger at ``path`` (columns `COLUMNS`)."""
    append_rows(path, [row], COLUMNS)


def append_rows(path, new_rows, columns) -> None:
    """Add ``new_rows`` (all or none) to the ledger at ``path`` with ``columns``: the rows
    already there are read and written back with the new ones, atomically, under the lock."""
    update_ledger(path, lambda rows: rows + list(new_rows), columns)


def update_ledger(path, change, columns) -> None:
    """Rewrite the ledger at ``path`` as ``change(rows)`` (its rows as dicts, [] for none) with
    ``columns``, atomically (`cbcn_tf.files.atomic_write`) under an exclusive
    `cbcn_tf.files.FileLock` on ``PATH.lock``, so writers of one ledger never lose rows."""
    from cbcn_tf import files

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    lock = files.FileLock(path + ".lock")
    while not lock.acquire():
        time.sleep(LOCK_POLL_SECONDS)  # another writer holds it for one rewrite
    try:
        rows = [{k: row.get(k, "") for k in columns} for row in change(read_ledger(path))]

        def write(tmp):
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)

        files.atomic_write(path, write)
    finally:
        lock.release()


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_folder(cell, runs_dir) -> str:
    """Where the runner trains ``cell``: ``RUNS_DIR/TABLE/NAME`` (`Cell.run_name`)."""
    return os.path.join(os.path.abspath(runs_dir), cell.run_name())


def trained_run_dir(cell, row, runs_dir) -> str | None:
    """The run folder holding ``cell``'s trained model: ``runs_dir`` joined with its ledger
    row's ``run_dir`` (the cell's `Cell.run_name` for a row without one); None when that folder
    has no ``model.h5``."""
    from cbcn_tf import training

    run_dir = os.path.join(os.path.abspath(runs_dir), relative_run_dir(cell, row))
    return run_dir if os.path.exists(os.path.join(run_dir, training.MODEL_FILE)) else None


def relative_run_dir(cell, row) -> str:
    """``row``'s ``run_dir`` when it names a folder below ``--runs-dir``, else (none, an
    absolute path or one that climbs out with ``..``) the cell's `Cell.run_name`."""
    relative = (row or {}).get("run_dir") or cell.run_name()
    if os.path.isabs(relative) or os.pardir in relative.replace("\\", "/").split("/"):
        return cell.run_name()  # a ledger row names folders below --runs-dir only
    return relative


def command_line(cell) -> str:
    """The `cbcn train` command that trains ``cell`` (the ledger's ``command`` column)."""
    recipe = os.path.relpath(cell.recipe, ROOT) if os.path.isfile(cell.recipe) else cell.recipe
    parts = ["cbcn", "train", "--config", shlex.quote(recipe)]
    if cell.data_folder:
        parts += ["--set", f'"data_dir=${DATA_ENV}/{cell.data_folder}"']
    for item in cell.all_overrides():
        parts += ["--set", shlex.quote(item)]
    return " ".join(parts + ["--output", f'"$RUNS_DIR/{cell.run_name()}"'])


# Options whose value is a folder of the machine that ran a command: (the placeholder written
# instead, how many trailing parts of the folder follow it).
_MACHINE_OPTIONS = {"--data-root": ("$" + DATA_ENV, 0), "--data-dir": ("$" + DATA_ENV, 1),
                    "--runs-dir": ("$RUNS_DIR", 0), "--output": ("$RUNS_DIR", 2)}


def portable_command(command: str) -> str:
    """``command`` with the machine's folders written as `command_line` writes them: an
    absolute (or ``..``) value of ``--data-root`` / ``--runs-dir`` as ``$CBCN_DATA`` /
    ``$RUNS_DIR``, of ``--data-dir`` and ``--set data_dir=DIR`` as ``$CBCN_DATA/FOLDER``, of
    ``--output`` as ``$RUNS_DIR/TABLE/NAME``; every other word as it was.

    Example:
        >>> portable_command("cbcn train --set data_dir=/d/mnist --output /r/t2/cbcn_s0")
        'cbcn train --set "data_dir=$CBCN_DATA/mnist" --output "$RUNS_DIR/t2/cbcn_s0"'
    """
    def machine(path):
        return os.path.isabs(path) or path.startswith("~") or os.pardir in path.split("/")

    def tail(path, parts):
        names = path.rstrip("/").split("/")
        return "/".join(names[len(names) - parts:])

    words = shlex.split(command)
    for i, word in enumerate(words[1:], start=1):
        option = words[i - 1]
        if option in _MACHINE_OPTIONS and machine(word):
            placeholder, parts = _MACHINE_OPTIONS[option]
            words[i] = "/".join(filter(None, (placeholder, tail(word, parts))))
        elif option == "--set" and word.startswith("data_dir=") and machine(word[9:]):
            words[i] = f"data_dir=${DATA_ENV}/{tail(word[9:], 1)}"
    return " ".join(f'"{word}"' if "$" in word else shlex.quote(word) for word in words)


def cell_row(cell, config, scores, history, timing, status, totals=None) -> dict:
    """The ledger row of ``cell`` trained with ``config``: ``scores`` {"upright", "rotated"}
    from `cbcn_tf.training.evaluate` (None: diverged), the run's ``history``, ``timing``
    {"seconds", "epochs_trained"} and the model's `cbcn_tf.summary` ``totals``."""
    kwargs = config.model_kwargs
    quantizer = kwargs.get("kernel_quantizer") or (
        "float" if kwargs.get("binary") is False else
        "magnitude_aware_sign" if config.model.startswith("xnor") else "gaussian_sign")
    row = dict(
        zip(KEY, cell.key()), group=cell.group, model=config.model,
        orientations=kwargs.get("orientations", ""), kernel_quantizer=quantizer,
        dataset=config.dataset, score_split=config.eval_split, status=status,
        command=command_line(cell), run_dir=cell.run_name(), finished_utc=now_utc(),
        val_curve=" ".join(f"{h['val_accuracy']:.4f}" for h in history if "val_accuracy" in h),
        # Training-split accuracy per epoch as Keras logs it (dropout on, batch statistics).
        train_curve=" ".join(f"{h['accuracy']:.4f}" for h in history if "accuracy" in h),
    )
    if scores:
        row.update(top1=f"{scores['upright']['top1']:.4f}", top5=f"{scores['upright']['top5']:.4f}",
                   rot_top1=f"{scores['rotated']['top1']:.4f}")
    else:
        row.update(top1="nan", top5="nan", rot_top1="nan")
    if totals:
        row.update(bops=totals["binary_macs"], flops=totals["float_macs"])
    if timing:
        row.update(train_seconds=f"{timing['seconds']:.1f}",
                   seconds_per_epoch=f"{timing['seconds'] / timing['epochs_trained']:.1f}")
    return row
