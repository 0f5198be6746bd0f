"""The reproduction campaign: every cell trained by `cbcn_tf.training.train`, scored by `evaluate`.

A *cell* is one training run: (table, arm, kernel stage, protocol, seed, epochs). Each arm is a
recipe file under ``benchmarks/recipes/`` (or a shipped recipe plus overrides, for the demo);
arms of one table differ only in their model keys, the harness adds the cell's kernel stage,
protocol (``rotate_train``), seed and epochs as ``--set`` overrides, exactly what
``cbcn train --config RECIPE --set ...`` does (the ledger stores that command line).

Groups (``--only``):

* ``mnist``: Table 2, LeNet, kernel stages 5-10-20-40 (3 seeds) and 10-20-40-80 (1 seed), K = 4:
  CBCN, XNOR at the same feature widths, full precision; protocols "upright" (train upright,
  score the upright and the rotated test split) and "rotated" (train and score rotated).
* ``cifar10``: Tables 3 / 4, ResNet18: CBCN K = 4, XNOR with doubled shortcuts at the same
  feature widths, full precision (3 seeds); CBCN K = 2 and CBCN with ApproxSign (2 seeds).
  Scored on the seeded 5,000-image validation split (the ImageFolder copy has no test split).
* ``demo``: the setting of ``cbcn demo`` (recipe ``digits_demo``, its three arms), 5 seeds, so
  the demo can print the seed spread next to its one run.
* ``ablation``: why CBCN starts slowly (digits, validation split; see ``ABLATIONS``).

The ledger (``benchmarks/results/reproduce.csv``) gets one row per finished cell, rewritten
atomically (temp file + rename) as each cell finishes; cells already in it are skipped.
Cells run seed-major (seed 0 of every arm before seed 1), so a campaign cut short still has
every arm. ``--budget-minutes N`` stops before a cell whose estimated time (seconds per epoch
of the same arm in the ledger, else a conservative default, times its epochs) does not fit in
what is left. A killed cell continues from its last epoch (BackupAndRestore) when the script
is started again with the same ``--runs-dir``.

Usage:
    python benchmarks/reproduce.py --only mnist --budget-minutes 300 --runs-dir /tmp/campaign
    python benchmarks/reproduce.py --only demo --dry-run      # list cells and estimates
    python benchmarks/reproduce.py --only mnist --kernel-stage 5-10-20-40   # one stage only
    python benchmarks/reproduce.py --only demo --epochs 1 --steps-per-epoch 2 --seeds 1 \\
        --ledger /tmp/ledger.csv --runs-dir /tmp/runs          # a tiny smoke run
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import os
import shlex
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RECIPES = os.path.join(HERE, "recipes")
LEDGER = os.path.join(HERE, "results", "reproduce.csv")
SHARED = os.path.join(ROOT, "..", "shared", "datasets")
GROUPS = ("mnist", "cifar10", "demo", "ablation")

# Campaign budgets (stated in the recipes and BENCHMARKS.md), chosen from measured epoch times
# so the MNIST part fits about 5 hours and the CIFAR-10 part about 4 hours of this machine.
MNIST_EPOCHS = 8
CIFAR_EPOCHS = 8
CIFAR_KERNEL_STAGE = (4, 4, 8, 16)
DEMO_SEEDS = 5
ABLATION_SEEDS = 2

# Ledger key: a cell is finished when a row with these values exists.
KEY = ("table", "arm", "kernel_stage", "protocol", "seed", "epochs", "steps_per_epoch")
COLUMNS = KEY + (
    "group", "model", "orientations", "kernel_quantizer", "dataset", "score_split", "top1",
    "rot_top1", "top5", "val_curve", "bops", "flops", "seconds_per_epoch", "train_seconds",
    "status", "finished_utc", "command", "precise_bn", "top1_moving_bn", "rot_top1_moving_bn",
    "train_curve",
)
# Seconds per epoch assumed when the ledger has no row of the same arm yet (conservative: the
# slowest arm of each group measured on this machine while other jobs ran, plus a margin).
DEFAULT_SECONDS_PER_EPOCH = {"mnist": 200.0, "cifar10": 200.0, "demo": 10.0, "ablation": 10.0}
# Evaluation, model building and saving around the epochs, per cell.
OVERHEAD_SECONDS = {"mnist": 60.0, "cifar10": 60.0, "demo": 20.0, "ablation": 20.0}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of the campaign."""

    group: str
    table: str
    arm: str
    recipe: str  # a YAML path or a shipped recipe name
    overrides: tuple  # "key=value" applied after the recipe (model keys of the arm, budget)
    kernel_stage: tuple
    protocol: str  # "upright" or "rotated" (rotate_train)
    seed: int
    epochs: int
    steps_per_epoch: int | None = None

    def key(self) -> tuple:
        return (self.table, self.arm, "-".join(map(str, self.kernel_stage)), self.protocol,
                str(self.seed), str(self.epochs), str(self.steps_per_epoch or ""))

    def all_overrides(self) -> list:
        sets = list(self.overrides) + [
            f"model_kwargs.kernel_stage=[{', '.join(map(str, self.kernel_stage))}]",
            f"epochs={self.epochs}", f"seed={self.seed}",
        ]
        if self.protocol == "rotated":
            sets.append("rotate_train=true")
        if self.steps_per_epoch:
            sets.append(f"steps_per_epoch={self.steps_per_epoch}")
        return sets

    def run_name(self) -> str:
        name = (f"{self.table}/{self.arm}_{'-'.join(map(str, self.kernel_stage))}_"
                f"{self.protocol}_s{self.seed}_e{self.epochs}")
        return name + (f"_spe{self.steps_per_epoch}" if self.steps_per_epoch else "")


def _recipe(name):
    return os.path.join(RECIPES, name + ".yaml")


def _milestones(epochs):
    """The released code's x0.2 steps at 60/120/160 of 200 epochs, scaled to ``epochs``."""
    return sorted({m for m in (round(epochs * f) for f in (0.3, 0.6, 0.8)) if 0 < m < epochs})


def _seed_major(cells):
    """Seed 0 of every arm first, then seed 1, ... (stable within a seed)."""
    return sorted(cells, key=lambda cell: cell.seed)


def mnist_cells(epochs=MNIST_EPOCHS, seeds=None):
    data_dir = f"data_dir={os.path.normpath(os.path.join(SHARED, 'mnist'))}"
    cells = []
    for stage, n_seeds in (((5, 10, 20, 40), 3), ((10, 20, 40, 80), 1)):
        for protocol in ("upright", "rotated"):
            for arm in ("cbcn", "xnor", "fp"):
                for seed in range(n_seeds if seeds is None else min(seeds, n_seeds)):
                    cells.append(Cell("mnist", "table2_mnist", arm, _recipe(f"mnist_lenet_{arm}"),
                                      (data_dir,), stage, protocol, seed, epochs))
    return _seed_major(cells)


def cifar_cells(epochs=CIFAR_EPOCHS, seeds=None, kernel_stage=CIFAR_KERNEL_STAGE):
    data_dir = f"data_dir={os.path.normpath(os.path.join(SHARED, 'cifar10'))}"
    schedule = f"lr_milestones=[{', '.join(map(str, _milestones(epochs)))}]"
    cells = []
    for arm, recipe, n_seeds in (("cbcn", "cifar10_resnet18_cbcn", 3),
                                 ("xnor_doubled", "cifar10_resnet18_xnor_doubled", 3),
                                 ("fp", "cifar10_resnet18_fp", 3),
                                 ("cbcn_k2", "cifar10_resnet18_cbcn_k2", 2),
                                 ("cbcn_approxsign", "cifar10_resnet18_cbcn_approxsign", 2)):
        for seed in range(n_seeds if seeds is None else min(seeds, n_seeds)):
            cells.append(Cell("cifar10", "tables3_4_cifar10", arm, _recipe(recipe),
                              (data_dir, schedule), kernel_stage, "upright", seed, epochs))
    return _seed_major(cells)


def demo_cells(epochs=None, seeds=None):
    from cbcn_tf import config as config_lib
    from cbcn_tf.demo import ARMS, RECIPE

    recipe = config_lib.load_config(RECIPE)
    epochs = epochs or recipe.epochs
    stage = tuple(recipe.model_kwargs["kernel_stage"])
    cells = [Cell("demo", "demo_digits", folder, RECIPE, tuple(overrides), stage, "upright",
                  seed, epochs)
             for folder, _, overrides in ARMS for seed in range(seeds or DEMO_SEEDS)]
    return _seed_major(cells)


# Ablations of the slow start: arm -> (overrides of the digits_demo recipe, kernel stage or None
# for the recipe's 4-4-8-16). Digits, validation split carved from train (never the test split).
# The first arm is the paper-faithful CBCN; every other arm changes one thing, and the K = 1,
# XNOR and full-precision arms are the references at the same feature widths.
_FAN_IN = ("{class_name: VarianceScaling, config: {scale: %s, mode: fan_in, "
           "distribution: untruncated_normal}}")
_FAN_IN_K4, _FAN_IN_X4 = _FAN_IN % 0.5, _FAN_IN % 8.0
ABLATIONS = {
    "cbcn": ([], None),
    "scale_channel_mean": (["model_kwargs.scale=channel_mean"], None),
    "scale_none": (["model_kwargs.scale=null"], None),
    "quantizer_approx_sign": (["model_kwargs.kernel_quantizer=approx_sign"], None),
    "quantizer_ste_sign": (["model_kwargs.kernel_quantizer=ste_sign"], None),
    # W's std divided by sqrt(K) (He fan-in scaled for the K-fold reuse) / multiplied by 2.
    "init_std_div_sqrtK": ([f"model_kwargs.kernel_initializer={_FAN_IN_K4}"], None),
    "init_std_x2": ([f"model_kwargs.kernel_initializer={_FAN_IN_X4}"], None),
    "bn_after": (["model_kwargs.bn=after"], None),
    "lr_warmup_2": (["lr_warmup_epochs=2"], None),
    "k1_same_widths": (["model_kwargs.orientations=1"], (16, 16, 32, 64)),
    "xnor_doubled": (["model=xnor_resnet18_doubled"], None),
    "fp": (["model_kwargs.binary=false"], None),
}


def ablation_cells(epochs=None, seeds=None):
    from cbcn_tf import config as config_lib

    recipe = config_lib.load_config("digits_demo")
    epochs = epochs or recipe.epochs
    stage = tuple(recipe.model_kwargs["kernel_stage"])
    base = ("validation_fraction=0.2", "eval_split=validation")
    cells = [Cell("ablation", "ablation_digits", arm, "digits_demo", base + tuple(overrides),
                  tuple(kernel_stage or stage), "upright", seed, epochs)
             for arm, (overrides, kernel_stage) in ABLATIONS.items()
             for seed in range(seeds or ABLATION_SEEDS)]
    return _seed_major(cells)


def all_cells(only=GROUPS, *, epochs=None, seeds=None, steps_per_epoch=None):
    makers = {
        "mnist": lambda: mnist_cells(epochs or MNIST_EPOCHS, seeds),
        "cifar10": lambda: cifar_cells(epochs or CIFAR_EPOCHS, seeds),
        "demo": lambda: demo_cells(epochs, seeds),
        "ablation": lambda: ablation_cells(epochs, seeds),
    }
    cells = [cell for group in only for cell in makers[group]()]
    if steps_per_epoch:
        cells = [dataclasses.replace(cell, steps_per_epoch=steps_per_epoch) for cell in cells]
    return cells


# --- ledger -----------------------------------------------------------------------------------


def read_ledger(path) -> list:
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def row_key(row) -> tuple:
    return tuple(str(row.get(k, "")) for k in KEY)


def finished_keys(rows) -> set:
    return {row_key(row) for row in rows}


def append_row(path, row, *, replace=False) -> None:
    """Add ``row`` to the ledger: the whole file is rewritten to a temp file, then renamed.

    An exclusive lock on ``PATH.lock`` makes read + rewrite one step, so campaigns of several
    groups may run at the same time against one ledger without losing rows. ``replace=True``
    drops the rows of the same cell first (``--rescore``).
    """
    import fcntl

    from cbcn_tf import files

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = [r for r in read_ledger(path) if not (replace and row_key(r) == row_key(row))]
        rows.append({k: row.get(k, "") for k in COLUMNS})

        def write(tmp):
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)

        files.atomic_write(path, write)


def estimate_seconds(cell: Cell, rows) -> float:
    """Expected wall time of ``cell``: ledger seconds/epoch of the same arm (same table, same
    kernel stage if measured, else any), else `DEFAULT_SECONDS_PER_EPOCH`; x epochs + overhead.

    The slowest measurement counts (the machine is shared), so the estimate stays conservative.
    """
    same = [r for r in rows if r["table"] == cell.table and r["arm"] == cell.arm
            and r.get("seconds_per_epoch") not in ("", None)
            and r.get("steps_per_epoch", "") == str(cell.steps_per_epoch or "")]
    stage = "-".join(map(str, cell.kernel_stage))
    same_stage = [r for r in same if r["kernel_stage"] == stage]
    if same_stage:
        per_epoch = max(float(r["seconds_per_epoch"]) for r in same_stage)
    else:
        per_epoch = DEFAULT_SECONDS_PER_EPOCH[cell.group]
        if same:  # another kernel stage of this arm: scale by the widths' ratio (measured:
            # LeNet 5-10-20-40 -> 10-20-40-80 took 2x as long)
            other = same[0]
            ratio = sum(cell.kernel_stage) / sum(map(int, other["kernel_stage"].split("-")))
            per_epoch = max(per_epoch, float(other["seconds_per_epoch"]) * max(ratio, 1.0))
    return per_epoch * cell.epochs + OVERHEAD_SECONDS[cell.group]


def plan(cells, rows, budget_seconds=None, elapsed=0.0):
    """Split ``cells`` into (to run now, stop reason or None): finished cells are skipped and
    the first cell that would not fit in the budget stops the plan (used before each cell)."""
    done = finished_keys(rows)
    todo = [cell for cell in cells if cell.key() not in done]
    if budget_seconds is None or not todo:
        return todo, None
    estimate = estimate_seconds(todo[0], rows)
    left = budget_seconds - elapsed
    if estimate > left:
        return [], (f"budget: the next cell {todo[0].run_name()} needs about "
                    f"{estimate / 60:.1f} min but {max(left, 0) / 60:.1f} min are left")
    return todo, None


# --- running one cell -------------------------------------------------------------------------


def cell_config(cell: Cell):
    from cbcn_tf import config as config_lib

    return config_lib.load_config(cell.recipe, cell.all_overrides())


def command_line(cell: Cell, run_dir: str) -> str:
    recipe = os.path.relpath(cell.recipe, ROOT) if os.path.isfile(cell.recipe) else cell.recipe
    parts = ["cbcn", "train", "--config", recipe]
    for item in cell.all_overrides():
        parts += ["--set", item]
    return " ".join(shlex.quote(p) for p in parts + ["--output", run_dir])


def run_cell(cell: Cell, run_dir: str, verbose: int = 2) -> dict:
    """Train (or continue, or just score a finished run of) ``cell``; return its ledger row."""
    from cbcn_tf import config as config_lib
    from cbcn_tf import training
    from cbcn_tf.summary import summary as cbcn_summary

    config = cell_config(cell)
    history_path = os.path.join(run_dir, training.HISTORY_FILE)
    timing_path = os.path.join(run_dir, "reproduce_timing.json")
    model_path = os.path.join(run_dir, training.MODEL_FILE)
    saved_path = os.path.join(run_dir, config_lib.CONFIG_FILE)
    status = "ok"
    if (os.path.exists(model_path) and os.path.exists(saved_path)
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
            return _row(cell, config, run_dir, None, [], None, "diverged")
        seconds = time.perf_counter() - tic
        model, history = result.model, result.history
        trained = max(len(history) - before, 1)
        from cbcn_tf import files

        files.write_text(timing_path, json.dumps(
            {"seconds": seconds, "epochs_trained": trained}))
    timing = json.load(open(timing_path)) if os.path.exists(timing_path) else None
    # BN statistics at the final weights (training/precise_bn.py): `train` saved them already
    # (re-estimating the same weights on the same seeded batches gives them back); a run
    # trained before that option existed gets them here, so every row is scored alike.
    precise = training.precise_batch_norm(model, training.resolve_config(config))
    scores = {}
    common = dict(split=config.eval_split, data_dir=config.data_dir,
                  validation_fraction=config.validation_fraction, batch_size=256)
    scores["upright"] = training.evaluate(model, config.dataset, **common)
    scores["rotated"] = training.evaluate(model, config.dataset, rotate=True, **common)
    totals = cbcn_summary(model, print_fn=None).totals
    row = _row(cell, config, run_dir, scores, history, timing, status, totals)
    row["precise_bn"] = str(precise)
    return row


def _row(cell, config, run_dir, scores, history, timing, status, totals=None):
    key = dict(zip(KEY, cell.key()))
    kwargs = config.model_kwargs
    quantizer = kwargs.get("kernel_quantizer") or (
        "float" if kwargs.get("binary") is False else
        "magnitude_aware_sign" if config.model.startswith("xnor") else "gaussian_sign")
    accuracy_key = "val_accuracy"
    row = dict(
        key, group=cell.group, model=config.model, orientations=kwargs.get("orientations", ""),
        kernel_quantizer=quantizer, dataset=config.dataset, score_split=config.eval_split,
        status=status, command=command_line(cell, run_dir),
        finished_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        val_curve=" ".join(f"{h[accuracy_key]:.4f}" for h in history if accuracy_key in h),
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


# --- main -------------------------------------------------------------------------------------


def rescore(cells, rows, args) -> int:
    """Re-score (precise BN, then upright and rotated) finished cells with an empty
    ``precise_bn`` column, replacing their rows; a cell without its run folder is listed."""
    by_key = {row_key(row): row for row in rows}
    missing = []
    for cell in cells:
        row = by_key.get(cell.key())
        if row is None or row.get("precise_bn"):
            continue
        run_dir = os.path.join(os.path.abspath(args.runs_dir), cell.run_name())
        if not os.path.exists(os.path.join(run_dir, "model.h5")):
            missing.append(cell.run_name())
            continue
        new = run_cell(cell, run_dir, verbose=args.verbose)
        new["finished_utc"] = row["finished_utc"]  # when it was trained
        # The scores with Keras' moving averages as trained, kept beside the new ones.
        new["top1_moving_bn"], new["rot_top1_moving_bn"] = row["top1"], row["rot_top1"]
        append_row(args.ledger, new, replace=True)
        print(f"  {cell.run_name()}: top1 {row['top1']} -> {new['top1']}, rotated "
              f"{row['rot_top1']} -> {new['rot_top1']}", flush=True)
    if missing:
        print(f"Not rescored (no run folder in {args.runs_dir}): {', '.join(missing)}")
    return 1 if missing else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=GROUPS,
                        help="run only this group (repeatable); default: mnist, cifar10, demo")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="stop before a cell that would not finish within N minutes")
    parser.add_argument("--runs-dir", default=os.path.join("/tmp", "cbcn_reproduce_runs"),
                        help="where run folders go (outside the repository)")
    parser.add_argument("--ledger", default=LEDGER)
    parser.add_argument("--arms", default=None, help="comma-separated arms to keep")
    parser.add_argument("--kernel-stage", default=None,
                        help="keep only cells of this kernel stage, e.g. 5-10-20-40 (run the "
                             "seeds of the small LeNet before the wide one)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the campaign's epochs (a different cell in the ledger)")
    parser.add_argument("--seeds", type=int, default=None, help="at most this many seeds per arm")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="cap each epoch (smoke runs; recorded in the ledger key)")
    parser.add_argument("--dry-run", action="store_true", help="list the cells to run and stop")
    parser.add_argument("--rescore", action="store_true",
                        help="score again the finished cells whose row predates precise BN "
                             "statistics (empty precise_bn column), from their run folders in "
                             "--runs-dir, without retraining; then stop")
    parser.add_argument("--verbose", type=int, default=2, help="Keras verbosity")
    args = parser.parse_args(argv)

    import cbcn_tf  # noqa: F401  (Keras 2 before anything touches tf.keras)

    only = args.only or ["mnist", "cifar10", "demo"]
    cells = all_cells(only, epochs=args.epochs, seeds=args.seeds,
                      steps_per_epoch=args.steps_per_epoch)
    if args.arms:
        keep = set(args.arms.split(","))
        cells = [cell for cell in cells if cell.arm in keep]
    if args.kernel_stage:
        cells = [cell for cell in cells
                 if "-".join(map(str, cell.kernel_stage)) == args.kernel_stage]
    rows = read_ledger(args.ledger)
    if args.rescore:
        return rescore(cells, rows, args)
    todo, _ = plan(cells, rows)
    print(f"{len(cells)} cells, {len(cells) - len(todo)} already in {args.ledger}, "
          f"{len(todo)} to run (about {sum(estimate_seconds(c, rows) for c in todo) / 60:.0f} "
          "min by the ledger's / default epoch times)", flush=True)
    if args.dry_run:
        for cell in todo:
            print(f"  {cell.run_name()}  ~{estimate_seconds(cell, rows) / 60:.1f} min")
        return 0
    start = time.perf_counter()
    budget = None if args.budget_minutes is None else 60 * args.budget_minutes
    failed = set()
    while True:
        rows = read_ledger(args.ledger)
        todo, stop = plan(cells, rows, budget, time.perf_counter() - start)
        if stop:
            print(f"Stopping cleanly: {stop}. Run again to continue.", flush=True)
            break
        todo = [cell for cell in todo if cell.key() not in failed]
        if not todo:
            print("All selected cells are in the ledger.", flush=True)
            break
        cell = todo[0]
        run_dir = os.path.join(os.path.abspath(args.runs_dir), cell.run_name())
        print(f"\n=== {cell.run_name()} -> {run_dir}", flush=True)
        try:
            row = run_cell(cell, run_dir, verbose=args.verbose)
        except (ValueError, OSError) as exc:
            print(f"  FAILED: {exc}", flush=True)
            failed.add(cell.key())
            continue
        append_row(args.ledger, row)
        print(f"  top1 {row['top1']} rotated {row['rot_top1']} "
              f"({row.get('seconds_per_epoch', '?')} s/epoch) -> {args.ledger}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
