"""The cells of the reproduction campaign and the groups of ``reproduce.py --only``.

A *cell* is one training run: (table, arm, kernel stage, protocol, seed, epochs). Each table
has one base recipe under ``benchmarks/recipes/`` (or a shipped recipe, for the digits); an
arm is that recipe plus its overrides (`MNIST_ARMS`, `CIFAR_ARMS`, ...), and the cell adds its
kernel stage, protocol (``rotate_train``), seed and epochs as ``--set`` overrides, exactly what
``cbcn train --config RECIPE --set ...`` does. The recipes carry no ``data_dir``: a cell that
reads MNIST or CIFAR-10 names its folder below the data root (``--data-root`` /
``$CBCN_DATA``), and `cell_config` sets ``data_dir=DATA_ROOT/FOLDER``.
"""
from __future__ import annotations

import dataclasses
import os

from cbcn_tf.errors import ConfigError

BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCHMARKS)  # the repository
RECIPES = os.path.join(BENCHMARKS, "recipes")
DATA_ENV = "CBCN_DATA"  # the data root when --data-root is not given
GROUPS = ("mnist", "mnist_converged", "mnist_recipe_check", "mnist_adopted", "mnist_matched",
          "cifar10", "demo", "ablation", "invariance", "invariance_ablation")

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


def recipe_path(name: str) -> str:
    """The path of the campaign recipe ``benchmarks/recipes/NAME.yaml``."""
    return os.path.join(RECIPES, name + ".yaml")


# Table 2 (MNIST, LeNet): the base recipe is the CBCN K = 4; the XNOR arm is the same feature
# widths with XNOR layers, the fp arm its full-precision twin.
MNIST_RECIPE = recipe_path("mnist_lenet")
MNIST_ARMS = {"cbcn": (), "xnor": ("model=xnor_lenet",), "fp": ("model_kwargs.binary=false",)}
# Tables 3 / 4 (CIFAR-10, ResNet18): the base recipe is the CBCN K = 4 with the Gaussian sign
# gradient; arm -> (overrides, seeds).
CIFAR_RECIPE = recipe_path("cifar10_resnet18")
CIFAR_ARMS = {
    "cbcn": ((), 3),
    "xnor_doubled": (("model=xnor_resnet18_doubled",), 3),
    "fp": (("model_kwargs.binary=false",), 3),
    "cbcn_k2": (("model_kwargs.orientations=2",), 2),
    "cbcn_approxsign": (("model_kwargs.kernel_quantizer=approx_sign",), 2),
}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of the campaign."""

    group: str
    table: str
    arm: str
    recipe: str  # a YAML path or a shipped recipe name
    overrides: tuple  # "key=value" applied after the recipe (the arm's keys, group settings)
    kernel_stage: tuple
    protocol: str  # "upright" or "rotated" (rotate_train)
    seed: int
    epochs: int
    steps_per_epoch: int | None = None
    # The invariance table whose accuracy-against-angle curve needs this cell ("" = none, "*"
    # for `--angles`): the cell is then swept at fixed angles. Not part of the key.
    sweep: str = ""
    # The folder below the data root that holds the cell's dataset ("" = shipped with the
    # package, e.g. the digits). Not part of the key.
    data_folder: str = ""

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
        """The cell's run folder below ``--runs-dir`` (a function of the cell alone)."""
        name = (f"{self.table}/{self.arm}_{'-'.join(map(str, self.kernel_stage))}_"
                f"{self.protocol}_s{self.seed}_e{self.epochs}")
        return name + (f"_spe{self.steps_per_epoch}" if self.steps_per_epoch else "")


def data_dir(cell: Cell, data_root) -> str | None:
    """``DATA_ROOT/FOLDER`` for a cell that reads a data folder and a given root, else None."""
    if not cell.data_folder or not data_root:
        return None
    return os.path.join(os.path.abspath(os.path.expanduser(data_root)), cell.data_folder)


def require_data_root(cells, data_root) -> None:
    """ConfigError (one line) when one of ``cells`` reads a data folder that ``data_root``
    (``--data-root`` / ``$CBCN_DATA``) does not give."""
    for cell in cells:
        if not cell.data_folder:
            continue
        if not data_root:
            raise ConfigError(
                f"{cell.run_name()} reads the {cell.data_folder} data below a data root and none "
                f"is set; pass --data-root DIR or set {DATA_ENV}=DIR (DIR holding mnist/, the "
                "four MNIST IDX files, and cifar10/, the CIFAR-10 image folder).")
        folder = data_dir(cell, data_root)
        if not os.path.isdir(folder):
            raise ConfigError(
                f"{cell.run_name()} reads {folder}, which does not exist; pass as --data-root "
                f"(or {DATA_ENV}) the folder holding {cell.data_folder}/.")


def cell_config(cell: Cell, data_root=None):
    """The `TrainConfig` of ``cell``: its recipe, its overrides and, for a cell that reads a
    data folder and a given ``data_root``, ``data_dir=DATA_ROOT/FOLDER``."""
    from cbcn_tf import config as config_lib

    folder = data_dir(cell, data_root)
    sets = ([f"data_dir={folder}"] if folder else []) + cell.all_overrides()
    return config_lib.load_config(cell.recipe, sets)


def cifar_milestones(epochs):
    """The released code's x0.2 steps at 60/120/160 of 200 epochs, scaled to ``epochs``."""
    return sorted({m for m in (round(epochs * f) for f in (0.3, 0.6, 0.8)) if 0 < m < epochs})


def _seed_major(cells):
    """Seed 0 of every arm first, then seed 1, ... (stable within a seed)."""
    return sorted(cells, key=lambda cell: cell.seed)


def mnist_cells(epochs=MNIST_EPOCHS, seeds=None):
    cells = []
    for stage, n_seeds in (((5, 10, 20, 40), 3), ((10, 20, 40, 80), 1)):
        for protocol in ("upright", "rotated"):
            for arm, overrides in MNIST_ARMS.items():
                for seed in range(n_seeds if seeds is None else min(seeds, n_seeds)):
                    cells.append(Cell("mnist", "table2_mnist", arm, MNIST_RECIPE, overrides,
                                      stage, protocol, seed, epochs, data_folder="mnist"))
    return _seed_major(cells)


def converged_cells(epochs=None, seeds=None):
    """Table 2 cells at the paper's 50 epochs, in `CONVERGED_PLAN`'s order (arms within a step
    in the order cbcn, xnor, fp); ``seeds`` keeps seeds below it."""
    table2 = {(cell.kernel_stage, cell.protocol, cell.seed, cell.arm): cell
              for cell in mnist_cells(epochs or CONVERGED_EPOCHS)}
    return [table2[stage, protocol, seed, arm]
            for stage, protocol, seed_list in CONVERGED_PLAN for seed in seed_list
            if seeds is None or seed < seeds for arm in MNIST_ARMS]


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
            for arm in MNIST_ARMS]


# The recipe adopted from the recipe check, for every arm alike: Table 2's converged cells
# again (same table, plan and test split) under arm ``ARM_adam_cosine``.
ADOPTED_RECIPE = "adam_cosine"


def adopted_cells(epochs=None, seeds=None):
    """`converged_cells` under `ADOPTED_RECIPE`: arm ``ARM_adam_cosine``, the candidate's
    overrides after the arm's own."""
    return [dataclasses.replace(cell, arm=f"{cell.arm}_{ADOPTED_RECIPE}",
                                overrides=cell.overrides + RECIPE_CANDIDATES[ADOPTED_RECIPE])
            for cell in converged_cells(epochs, seeds)]


# A control for the adopted recipe's Table 2: the XNOR LeNet at half the feature widths
# (orientations 2 instead of 4), which learns as many weights as the CBCN (38,860 against
# 39,910) at a quarter of its BOPs; the same-widths XNOR learns 153,310.
MATCHED_ARM = ("xnor_matched", ("model_kwargs.orientations=2",))


def matched_cells(epochs=None, seeds=None):
    """The XNOR's 5-10-20-40 upright cells of `adopted_cells` (seeds 0 to 2) with the
    overrides of `MATCHED_ARM` after theirs: arm ``xnor_matched_adam_cosine``."""
    name, sets = MATCHED_ARM
    return [dataclasses.replace(cell, arm=f"{name}_{ADOPTED_RECIPE}",
                                overrides=cell.overrides + sets)
            for cell in adopted_cells(epochs, seeds)
            if cell.arm == f"xnor_{ADOPTED_RECIPE}" and cell.protocol == "upright"
            and cell.kernel_stage == (5, 10, 20, 40)]


def arm_recipe(arm: str) -> tuple:
    """(arm, candidate) of a ledger arm named ``ARM_CANDIDATE`` after a key of
    `RECIPE_CANDIDATES` (the recipe check's and the adopted recipe's arms), else (arm, "");
    the longest candidate that ends the name wins.

    Example:
        >>> arm_recipe("xnor_adam_cosine"), arm_recipe("cbcn_paper"), arm_recipe("xnor_doubled")
        (('xnor', 'adam_cosine'), ('cbcn', 'paper'), ('xnor_doubled', ''))
        >>> arm_recipe("xnor_matched_adam_cosine"), arm_recipe("cbcn_cosine")
        (('xnor_matched', 'adam_cosine'), ('cbcn', 'cosine'))
    """
    for candidate in sorted(RECIPE_CANDIDATES, key=len, reverse=True):
        if arm.endswith(f"_{candidate}"):
            return arm[:-len(candidate) - 1], candidate
    return arm, ""


def cifar_cells(epochs=CIFAR_EPOCHS, seeds=None, kernel_stage=CIFAR_KERNEL_STAGE):
    schedule = f"lr_milestones=[{', '.join(map(str, cifar_milestones(epochs)))}]"
    cells = []
    for arm, (overrides, n_seeds) in CIFAR_ARMS.items():
        for seed in range(n_seeds if seeds is None else min(seeds, n_seeds)):
            cells.append(Cell("cifar10", "tables3_4_cifar10", arm, CIFAR_RECIPE,
                              overrides + (schedule,), kernel_stage, "upright", seed, epochs,
                              data_folder="cifar10"))
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
    """The cells of the groups ``only``, one per ledger key (groups share cells; a cell marked
    to be swept wins), with the budget overrides of ``reproduce.py``."""
    makers = {
        "mnist": lambda: mnist_cells(epochs or MNIST_EPOCHS, seeds),
        "mnist_converged": lambda: converged_cells(epochs, seeds),
        "mnist_recipe_check": lambda: recipe_check_cells(epochs, seeds),
        "mnist_adopted": lambda: adopted_cells(epochs, seeds),
        "mnist_matched": lambda: matched_cells(epochs, seeds),
        "cifar10": lambda: cifar_cells(epochs or CIFAR_EPOCHS, seeds),
        "demo": lambda: demo_cells(epochs, seeds),
        "ablation": lambda: ablation_cells(epochs, seeds),
        "invariance": lambda: invariance_cells(epochs, seeds),
        "invariance_ablation": lambda: ablation_cells(
            epochs, seeds, group="invariance_ablation", table="invariance_ablation_digits",
            arms=INVARIANCE_ABLATIONS),
    }
    merged = {}
    for cell in (cell for group in only for cell in makers[group]()):
        if cell.key() not in merged or (cell.sweep and not merged[cell.key()].sweep):
            merged[cell.key()] = cell
    cells = list(merged.values())
    if steps_per_epoch:
        cells = [dataclasses.replace(cell, steps_per_epoch=steps_per_epoch) for cell in cells]
    return cells
