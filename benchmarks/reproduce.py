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
* ``mnist_converged``: Table 2 at the paper's own budget, 50 epochs (``CONVERGED_PLAN``):
  5-10-20-40 upright seed 0 of CBCN / XNOR / FP first, then seeds 1-2, then the rotated
  protocol (2 seeds), then 10-20-40-80 upright (1 seed). Same recipes and ledger keys as
  ``mnist`` except ``epochs``, so both budgets sit side by side in one ledger.
* ``mnist_recipe_check``: when the paper's reading misses the paper's numbers at 50 epochs,
  the candidates of ``RECIPE_CANDIDATES`` on every arm alike, on a validation split.
* ``cifar10``: Tables 3 / 4, ResNet18: CBCN K = 4, XNOR with doubled shortcuts at the same
  feature widths, full precision (3 seeds); CBCN K = 2 and CBCN with ApproxSign (2 seeds).
  Scored on the seeded 5,000-image validation split (the ImageFolder copy has no test split).
* ``demo``: the setting of ``cbcn demo`` (recipe ``digits_demo``, its three arms), 5 seeds, so
  the demo can print the seed spread next to its one run.
* ``ablation``: why CBCN starts slowly (digits, validation split; see ``ABLATIONS``).
* ``invariance_ablation``: where the invariant CBCN's upright accuracy goes (digits,
  validation split; see ``INVARIANCE_ABLATIONS``; ledger ``benchmarks/results/ablation.csv``).
* ``invariance``: the evidence for the quarter-turn invariant CBCN (``invariant=True``, docs/
  METHOD.md §12), see ``INVARIANCE_TABLES``: upright-trained CBCN with and without the option,
  XNOR and full precision, 2 seeds, on the digits (the demo's setting), MNIST (LeNet 5-10-20-40,
  Table 2's budget) and CIFAR-10 (ResNet18, Tables 3 / 4's budget). The plain arms ARE the
  upright cells of ``demo`` / ``mnist`` / ``cifar10`` (same recipe, seed, epochs: the same
  training run, the same ledger key), so they are trained once and shared; only the
  invariant cells are new: ``cbcn_invariant`` (the CBCN recipe +
  ``model_kwargs.invariant={pool: max}``, the max-pool head) and ``cbcn_invariant_align``
  (``{pool: align}``, the ORAlign head that ``invariant=true`` gives).
  Every cell of this group is also scored at fixed angles 0, 15, ..., 345 degrees (every
  image turned by the same angle) into the second ledger ``benchmarks/results/angles.csv``;
  ``--angles`` does the same for the cells of any group.

The ledger (``benchmarks/results/reproduce.csv``) gets one row per finished cell, rewritten
atomically (temp file + rename) as each cell finishes; cells already in it are skipped. The
angle ledger (``--angles-ledger``) gets one row per (cell, angle), written the same way after
the cell's sweep; a cell in the main ledger without its angle rows is swept on the next run
from its saved model (the run folder named by its ledger row's ``--output``, else the one in
``--runs-dir``), without training again.
Cells run seed-major (seed 0 of every arm before seed 1), so a campaign cut short still has
every arm. ``--budget-minutes N`` stops before a cell whose estimated time (seconds per epoch
of the same arm in the ledger, else a conservative default, times its epochs) does not fit in
what is left. A killed cell continues from its last epoch (BackupAndRestore) when the script
is started again with the same ``--runs-dir``.

Usage:
    python benchmarks/reproduce.py --only mnist --budget-minutes 300 --runs-dir /tmp/campaign
    python benchmarks/reproduce.py --only demo --dry-run      # list cells and estimates
    python benchmarks/reproduce.py --only mnist --kernel-stage 5-10-20-40   # one stage only
    python benchmarks/reproduce.py --only invariance --runs-dir /tmp/campaign
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
ANGLES_LEDGER = os.path.join(HERE, "results", "angles.csv")
GROUPS = ("mnist", "mnist_converged", "mnist_recipe_check", "cifar10", "demo", "ablation",
          "invariance", "invariance_ablation")

# Campaign budgets (stated in the recipes and BENCHMARKS.md), chosen from measured epoch times
# so the MNIST part fits about 5 hours and the CIFAR-10 part about 4 hours of this machine.
MNIST_EPOCHS = 8
# The paper's MNIST budget, and the order its cells run in: (kernel stage, protocol, seeds).
CONVERGED_EPOCHS = 50
CONVERGED_PLAN = (((5, 10, 20, 40), "upright", (0,)), ((5, 10, 20, 40), "upright", (1, 2)),
                  ((5, 10, 20, 40), "rotated", (0, 1)), ((10, 20, 40, 80), "upright", (0,)))
CIFAR_EPOCHS = 8
CIFAR_KERNEL_STAGE = (4, 4, 8, 16)
DEMO_SEEDS = 5
ABLATION_SEEDS = 2
INVARIANCE_SEEDS = 2
ANGLE_STEP = 15  # degrees between the points of the accuracy-against-angle curves

# Ledger key: a cell is finished when a row with these values exists.
KEY = ("table", "arm", "kernel_stage", "protocol", "seed", "epochs", "steps_per_epoch")
COLUMNS = KEY + (
    "group", "model", "orientations", "kernel_quantizer", "dataset", "score_split", "top1",
    "rot_top1", "top5", "val_curve", "bops", "flops", "seconds_per_epoch", "train_seconds",
    "status", "finished_utc", "command", "precise_bn", "top1_moving_bn", "rot_top1_moving_bn",
    "train_curve",
)
# The angle ledger: one row per (cell, angle).
ANGLE_KEY = KEY + ("angle",)
ANGLE_COLUMNS = ANGLE_KEY + ("top1", "top5", "dataset", "score_split", "finished_utc")
# Seconds per epoch assumed when the ledger has no row of the same arm yet (conservative: the
# slowest arm of each group measured on this machine while other jobs ran, plus a margin).
DEFAULT_SECONDS_PER_EPOCH = {"mnist": 200.0, "mnist_recipe_check": 100.0, "cifar10": 200.0,
                             "demo": 10.0, "ablation": 10.0, "invariance": 250.0,
                             "invariance_ablation": 15.0}
# Evaluation, model building and saving around the epochs, per cell.
OVERHEAD_SECONDS = {"mnist": 60.0, "mnist_recipe_check": 60.0, "cifar10": 60.0, "demo": 20.0,
                    "ablation": 20.0, "invariance": 60.0, "invariance_ablation": 20.0}
# An invariant cell without a measurement of its own: the plain CBCN's epoch time times this.
# Measured training steps (batch 128, interleaved, load average 5-6): invariant / plain LeNet
# 5-10-20-40 at 28x28 1.5x, ResNet18 4-4-8-16 at 32x32 2.0x (its even maps are halved by a
# stride-1 conv and a 2x2 pool: 1.22x the binary MACs, at full resolution in float).
INVARIANT_SLOWDOWN = 2.0
# Seconds to score one angle of the sweep (default 12 for other tables). Measured here (load
# average 5-6 from other jobs): 24 angles of the invariant LeNet 5-10-20-40 on the 10,000 MNIST
# test images took 88 s, of the invariant ResNet18 4-4-8-16 on the 5,000 CIFAR-10 validation
# images 261 s (the split read once, `cbcn_tf.data.load_turned`), so the step stays 15 degrees.
SWEEP_SECONDS_PER_ANGLE = {"demo_digits": 1.0, "invariance_digits": 1.0,
                           "table2_mnist": 5.0, "invariance_mnist": 5.0,
                           "tables3_4_cifar10": 12.0, "invariance_cifar10": 12.0}


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
    # The invariance table whose accuracy-against-angle curve needs this cell ("" = none, "*"
    # for `--angles`): the cell is then swept at fixed angles. Not part of the key.
    sweep: str = ""

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


def converged_cells(epochs=None, seeds=None):
    """Table 2 cells at the paper's 50 epochs, in `CONVERGED_PLAN`'s order (arms within a step
    in the order cbcn, xnor, fp); ``seeds`` keeps seeds below it."""
    table2 = {(cell.kernel_stage, cell.protocol, cell.seed, cell.arm): cell
              for cell in mnist_cells(epochs or CONVERGED_EPOCHS)}
    return [table2[stage, protocol, seed, arm]
            for stage, protocol, seed_list in CONVERGED_PLAN for seed in seed_list
            if seeds is None or seed < seeds for arm in ("cbcn", "xnor", "fp")]


# The recipe check for the converged budget: every candidate applied to every Table 2 arm
# alike (5-10-20-40, upright), scored on a validation split of 10,000 images carved from the
# 60,000 training images (never the test split). "paper" is the paper's reading itself.
RECIPE_CANDIDATES = {
    "paper": (),
    "cosine": ("lr_decay=cosine",),
    "step": ("lr_milestones=[25, 40]", "lr_gamma=0.1"),
    "adam_cosine": ("optimizer=adam", "lr=0.001", "lr_decay=cosine"),
}
RECIPE_CHECK_SPLIT = ("validation_fraction=0.16667", "eval_split=validation")


def recipe_check_cells(epochs=None, seeds=None):
    """The recipe check's cells (table ``table2_mnist_recipes``, arm ``ARM_CANDIDATE``), one
    candidate after another in `RECIPE_CANDIDATES`' order, seed 0 unless ``seeds`` asks more."""
    stage = (5, 10, 20, 40)
    table2 = {cell.arm: cell for cell in mnist_cells(epochs or CONVERGED_EPOCHS)
              if cell.kernel_stage == stage and cell.protocol == "upright" and cell.seed == 0}
    return [dataclasses.replace(table2[arm], group="mnist_recipe_check",
                                table="table2_mnist_recipes", arm=f"{arm}_{candidate}",
                                overrides=table2[arm].overrides + RECIPE_CHECK_SPLIT + sets,
                                seed=seed)
            for seed in range(seeds or 1) for candidate, sets in RECIPE_CANDIDATES.items()
            for arm in ("cbcn", "xnor", "fp")]


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


def ablation_cells(epochs=None, seeds=None, *, group="ablation", table="ablation_digits",
                   arms=None):
    from cbcn_tf import config as config_lib

    recipe = config_lib.load_config("digits_demo")
    epochs = epochs or recipe.epochs
    stage = tuple(recipe.model_kwargs["kernel_stage"])
    base = ("validation_fraction=0.2", "eval_split=validation")
    cells = [Cell(group, table, arm, "digits_demo", base + tuple(overrides),
                  tuple(kernel_stage or stage), "upright", seed, epochs)
             for arm, (overrides, kernel_stage) in (arms or ABLATIONS).items()
             for seed in range(seeds or ABLATION_SEEDS)]
    return _seed_major(cells)


# Where the quarter-turn invariant CBCN loses upright accuracy: the digits_demo
# recipe on the validation split (as the slow-start ablations), the invariant CBCN with one
# switch of `cbcn_tf.invariance.Invariance` set back at a time (that arm is then no longer
# exactly invariant, except `pool_mean` and `binary_stem`), the ORAlign head (`pool_align`,
# exact) instead of the orientation max-pool, and the plain CBCN. The reference arm
# (`invariant`) and the switched-back arms use the max-pool head, named explicitly
# (`pool: max`) because `invariant=True` gives the ORAlign head.
_INV = "model_kwargs.invariant="
INVARIANCE_ABLATIONS = {
    "cbcn": ([], None),
    "invariant": ([_INV + "{pool: max}"], None),
    "invariant_no_stem": ([_INV + "{stem: null, pool: max}"], None),
    "invariant_binary_stem": ([_INV + "{stem: binary, pool: max}"], None),
    "invariant_no_norm": ([_INV + "{norm: false, pool: max}"], None),
    "invariant_no_activation": ([_INV + "{activation: false, pool: max}"], None),
    "invariant_no_shortcut": ([_INV + "{shortcut: false, pool: max}"], None),
    "invariant_no_downsample": ([_INV + "{downsample: false, pool: max}"], None),
    "invariant_pool_mean": ([_INV + "{pool: mean}"], None),
    "invariant_no_pool": ([_INV + "{pool: null}"], None),
    "invariant_pool_align": ([_INV + "{pool: align}"], None),
}


# Invariance evidence: table -> (the table whose upright cells are the plain arms,
# those arms). The tables add the arms of `INVARIANT_ARMS`, each the plain CBCN cell of the same
# seed with its one extra override: `cbcn_invariant` (`invariant={pool: max}`, the orientation
# max-pool head) and `cbcn_invariant_align` (`invariant={pool: align}`, the ORAlign head that
# `invariant=True` gives). Digits: the demo's setting (16x16, minutes);
# MNIST: LeNet 5-10-20-40 as Table 2 (28x28); CIFAR-10: ResNet18 as Tables 3 / 4 (32x32).
# Every fixed square input size is exactly quarter-turn invariant (docs/METHOD.md §12.2).
INVARIANT_ARMS = {"cbcn_invariant": _INV + "{pool: max}",
                  "cbcn_invariant_align": _INV + "{pool: align}"}
INVARIANT_ARM, INVARIANT_SET = next(iter(INVARIANT_ARMS.items()))  # the max-pool head
INVARIANCE_TABLES = {
    "invariance_digits": ("demo_digits", ("cbcn", "xnor", "float")),
    "invariance_mnist": ("table2_mnist", ("cbcn", "xnor", "fp")),
    "invariance_cifar10": ("tables3_4_cifar10", ("cbcn", "xnor_doubled", "fp")),
}
INVARIANCE_STAGE = {"invariance_mnist": (5, 10, 20, 40)}  # which Table 2 stage


def invariance_cells(epochs=None, seeds=None):
    """The cells of the invariance tables: the reused upright cells of the source tables (the
    same `Cell` keys as in their own groups, marked to be swept) and the invariant CBCN cells."""
    n = INVARIANCE_SEEDS if seeds is None else min(seeds, INVARIANCE_SEEDS)
    sources = {"demo_digits": lambda: demo_cells(epochs, n),
               "table2_mnist": lambda: mnist_cells(epochs or MNIST_EPOCHS, n),
               "tables3_4_cifar10": lambda: cifar_cells(epochs or CIFAR_EPOCHS, n)}
    cells = []
    for table, (source, arms) in INVARIANCE_TABLES.items():
        stage = INVARIANCE_STAGE.get(table)
        reused = [dataclasses.replace(cell, sweep=table) for cell in sources[source]()
                  if cell.arm in arms and cell.protocol == "upright" and cell.seed < n
                  and (stage is None or cell.kernel_stage == stage)]
        cells += reused + [
            dataclasses.replace(cell, group="invariance", table=table, arm=arm,
                                overrides=cell.overrides + (override,))
            for arm, override in INVARIANT_ARMS.items()
            for cell in reused if cell.arm == arms[0]]
    return _seed_major(cells)


def invariance_arms(table) -> dict:
    """{arm: table of its ledger rows} of an invariance table, the invariant CBCNs second."""
    source, arms = INVARIANCE_TABLES[table]
    return {arms[0]: source, **dict.fromkeys(INVARIANT_ARMS, table),
            **{arm: source for arm in arms[1:]}}


def all_cells(only=GROUPS, *, epochs=None, seeds=None, steps_per_epoch=None):
    makers = {
        "mnist": lambda: mnist_cells(epochs or MNIST_EPOCHS, seeds),
        "mnist_converged": lambda: converged_cells(epochs, seeds),
        "mnist_recipe_check": lambda: recipe_check_cells(epochs, seeds),
        "cifar10": lambda: cifar_cells(epochs or CIFAR_EPOCHS, seeds),
        "demo": lambda: demo_cells(epochs, seeds),
        "ablation": lambda: ablation_cells(epochs, seeds),
        "invariance": lambda: invariance_cells(epochs, seeds),
        "invariance_ablation": lambda: ablation_cells(
            epochs, seeds, group="invariance_ablation", table="invariance_ablation_digits",
            arms=INVARIANCE_ABLATIONS),
    }
    merged = {}  # one cell per key (groups share cells); a sweep mark wins
    for cell in (cell for group in only for cell in makers[group]()):
        if cell.key() not in merged or (cell.sweep and not merged[cell.key()].sweep):
            merged[cell.key()] = cell
    cells = list(merged.values())
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
    append_rows(path, [row], COLUMNS, replace=replace)


def append_rows(path, new_rows, columns, *, replace=False) -> None:
    """`append_row` for several rows at once (all or none), of a ledger with ``columns``."""
    import fcntl

    from cbcn_tf import files

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        replaced = {row_key(row) for row in new_rows} if replace else set()
        rows = [row for row in read_ledger(path) if row_key(row) not in replaced]
        rows += [{k: row.get(k, "") for k in columns} for row in new_rows]

        def write(tmp):
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)

        files.atomic_write(path, write)


def sweep_angles(step=ANGLE_STEP) -> list:
    """The fixed angles of a sweep: 0, step, ... below 360 degrees."""
    return list(range(0, 360, step))


def missing_angles(cell: Cell, angle_rows, angles) -> list:
    """The angles of ``angles`` that ``cell`` has no row for in the angle ledger."""
    have = {row.get("angle") for row in angle_rows if row_key(row) == cell.key()}
    return [angle for angle in angles if str(angle) not in have]


def needs(cell: Cell, rows, angle_rows=None, angles=()) -> str | None:
    """What ``cell`` still needs: "train" (no ledger row), "angles" (a finished row but angle
    rows missing, for a cell to sweep; diverged cells are not swept), or None."""
    row = {row_key(r): r for r in rows}.get(cell.key())
    if row is None:
        return "train"
    if (cell.sweep and angle_rows is not None and row.get("status", "ok") == "ok"
            and missing_angles(cell, angle_rows, angles)):
        return "angles"
    return None


def estimate_seconds(cell: Cell, rows) -> float:
    """Expected wall time of ``cell``: ledger seconds/epoch of the same arm (same table, same
    kernel stage if measured, else any), else `DEFAULT_SECONDS_PER_EPOCH`; x epochs + overhead.

    The slowest measurement counts (the machine is shared), so the estimate stays conservative.
    """
    def measured(table, arm):
        return [r for r in rows if r["table"] == table and r["arm"] == arm
                and r.get("seconds_per_epoch") not in ("", None)
                and r.get("steps_per_epoch", "") == str(cell.steps_per_epoch or "")]

    same = measured(cell.table, cell.arm)
    stage = "-".join(map(str, cell.kernel_stage))
    same_stage = [r for r in same if r["kernel_stage"] == stage]
    plain = ([r for r in measured(INVARIANCE_TABLES[cell.table][0], "cbcn")
              if r["kernel_stage"] == stage] if cell.arm in INVARIANT_ARMS else [])
    if same_stage:
        per_epoch = max(float(r["seconds_per_epoch"]) for r in same_stage)
    elif plain:  # the invariant CBCN before its first measurement: its plain twin's, scaled
        per_epoch = INVARIANT_SLOWDOWN * max(float(r["seconds_per_epoch"]) for r in plain)
    else:
        per_epoch = DEFAULT_SECONDS_PER_EPOCH[cell.group]
        if same:  # another kernel stage of this arm: scale by the widths' ratio (measured:
            # LeNet 5-10-20-40 -> 10-20-40-80 took 2x as long)
            other = same[0]
            ratio = sum(cell.kernel_stage) / sum(map(int, other["kernel_stage"].split("-")))
            per_epoch = max(per_epoch, float(other["seconds_per_epoch"]) * max(ratio, 1.0))
    return per_epoch * cell.epochs + OVERHEAD_SECONDS[cell.group] + sweep_seconds(cell)


def sweep_seconds(cell: Cell, angles=None) -> float:
    """Expected time of ``cell``'s angle sweep (0 for a cell not swept)."""
    if not cell.sweep:
        return 0.0
    per_angle = SWEEP_SECONDS_PER_ANGLE.get(cell.table, 12.0)
    return per_angle * len(sweep_angles() if angles is None else angles)


def plan(cells, rows, budget_seconds=None, elapsed=0.0, angle_rows=None, angles=()):
    """Split ``cells`` into (to run now, stop reason or None): finished cells are skipped and
    the first cell that would not fit in the budget stops the plan (used before each cell).
    With ``angle_rows`` (the angle ledger), finished cells to sweep that miss some of
    ``angles`` are kept too (they need only their sweep)."""
    todo = [cell for cell in cells if needs(cell, rows, angle_rows, angles)]
    if budget_seconds is None or not todo:
        return todo, None
    if needs(todo[0], rows, angle_rows, angles) == "angles":
        estimate = sweep_seconds(todo[0], angles)
    else:
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
    precise = legacy_precise_bn(model, config, run_dir)
    scores = {}
    common = dict(split=config.eval_split, data_dir=config.data_dir,
                  validation_fraction=config.validation_fraction, batch_size=256)
    scores["upright"] = training.evaluate(model, config.dataset, **common)
    scores["rotated"] = training.evaluate(model, config.dataset, rotate=True, **common)
    totals = cbcn_summary(model, print_fn=None).totals
    row = _row(cell, config, run_dir, scores, history, timing, status, totals)
    row["precise_bn"] = str(precise)
    return row


def legacy_precise_bn(model, config, run_dir) -> int:
    """BN statistics at the final weights (training/precise_bn.py) for every row alike.

    A run trained with ``precise_bn_batches`` (its saved config.yaml has the key) already holds
    them in model.h5: scored as saved, so a row is what `cbcn evaluate` gives; the number of
    batches `train` used is returned. A run trained before that option existed gets them here
    (50 batches of its first training epoch, drawn under TF's default global seed, so every
    process draws the same ones).
    """
    import yaml

    from cbcn_tf import config as config_lib
    from cbcn_tf import training

    resolved = training.resolve_config(config)
    saved = os.path.join(run_dir, config_lib.CONFIG_FILE)
    if os.path.exists(saved) and "precise_bn_batches" in (yaml.safe_load(open(saved)) or {}):
        return training.precise_bn.batches_to_use(resolved)
    return training.precise_batch_norm(model, resolved)


def trained_run_dir(cell: Cell, row, runs_dir) -> str | None:
    """The run folder holding ``cell``'s trained model: the ``--output`` of its ledger row's
    command (where it was trained, e.g. by another campaign), else its folder in ``runs_dir``;
    None when neither has a ``model.h5``."""
    from cbcn_tf import training

    candidates = []
    if row and row.get("command"):
        parts = shlex.split(row["command"])
        if "--output" in parts[:-1]:
            candidates.append(parts[parts.index("--output") + 1])
    candidates.append(os.path.join(os.path.abspath(runs_dir), cell.run_name()))
    for run_dir in candidates:
        if os.path.exists(os.path.join(run_dir, training.MODEL_FILE)):
            return run_dir
    return None


# The settings a saved run must share with the cell before its model is swept (and the
# cell's model keys, `invariant` included).
_SWEEP_CHECK = ("model", "dataset", "seed", "epochs", "steps_per_epoch")


def sweep_cell(cell: Cell, run_dir, angles) -> list:
    """Score ``cell``'s saved model (in ``run_dir``) at each of ``angles``; its angle rows.

    Loads ``model.h5``, never trains; refuses (one line) a folder whose saved config is not
    the cell's (model, model keys, dataset, seed, epochs)."""
    from cbcn_tf import config as config_lib
    from cbcn_tf import training
    from cbcn_tf.errors import ConfigError, MissingFileError

    if run_dir is None:
        raise MissingFileError(
            f"{cell.run_name()} is in the ledger but no model.h5 was found (its ledger row's "
            "--output, or --runs-dir); pass the --runs-dir it was trained in, or delete its "
            "ledger row to train it again.")
    config = cell_config(cell)
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
    legacy_precise_bn(model, config, run_dir)  # as run_cell scores it
    scores = training.evaluate_angles(
        model, config.dataset, angles, split=config.eval_split, data_dir=config.data_dir,
        validation_fraction=config.validation_fraction, batch_size=256)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    key = dict(zip(KEY, cell.key()))
    return [dict(key, angle=str(angle), top1=f"{score['top1']:.4f}",
                 top5=f"{score['top5']:.4f}", dataset=config.dataset,
                 score_split=config.eval_split, finished_utc=now)
            for angle, score in scores.items()]


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
    ``precise_bn`` column, replacing their rows; a cell without its run folder (the ledger
    row's ``--output``, else ``--runs-dir``) is listed."""
    by_key = {row_key(row): row for row in rows}
    missing = []
    for cell in cells:
        row = by_key.get(cell.key())
        if row is None or row.get("precise_bn"):
            continue
        run_dir = trained_run_dir(cell, row, args.runs_dir)
        if run_dir is None:
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
    parser.add_argument("--rescore", action="store_true",
                        help="score again the finished cells whose row predates precise BN "
                             "statistics (empty precise_bn column), from their run folders in "
                             "--runs-dir, without retraining; then stop")
    parser.add_argument("--verbose", type=int, default=2, help="Keras verbosity")
    args = parser.parse_args(argv)
    _check_args(parser, args)
    angles = sweep_angles(args.angle_step)

    import cbcn_tf  # noqa: F401  (Keras 2 before anything touches tf.keras)

    only = args.only or ["mnist", "cifar10", "demo"]
    cells = all_cells(only, epochs=args.epochs, seeds=args.seeds,
                      steps_per_epoch=args.steps_per_epoch)
    if args.angles:
        cells = [dataclasses.replace(cell, sweep=cell.sweep or "*") for cell in cells]
    cells = _selected_cells(parser, cells, args, only)
    rows = read_ledger(args.ledger)
    if args.rescore:
        return rescore(cells, rows, args)
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
                run_dir = os.path.join(os.path.abspath(args.runs_dir), cell.run_name())
                print(f"\n=== {cell.run_name()} -> {run_dir}", flush=True)
                row = run_cell(cell, run_dir, verbose=args.verbose)
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
            new_rows = sweep_cell(cell, run_dir, missing)
        except (ValueError, OSError) as exc:
            print(f"  FAILED: {exc}", flush=True)
            failed.add(cell.key())
            continue
        append_rows(args.angles_ledger, new_rows, ANGLE_COLUMNS)
        print(f"  {len(new_rows)} angles in {time.perf_counter() - tic:.0f} s: "
              + " ".join(f"{r['angle']}:{r['top1']}" for r in new_rows)
              + f" -> {args.angles_ledger}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
