"""The accuracy tables of BENCHMARKS.md: the paper's numbers and claims, the verdicts, and the
sections built from the reproduction ledger (``benchmarks/results/reproduce.csv``).

Every accuracy is the mean and sample standard deviation over seeds, the paper's number beside
it, and for each of the paper's claims a verdict that says whether the difference exceeds the
seed spread (see `verdict`). Also the readers of the results files the other report modules
share.
"""
from __future__ import annotations

import csv
import json
import math
import os
import statistics

import yaml

from campaign.cells import ADOPTED_RECIPE, all_cells, arm_recipe
from campaign.ledger import row_key

BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(BENCHMARKS, "results")
ROOT = os.path.dirname(BENCHMARKS)
# Smallest number of seeds per arm before a verdict is given.
MIN_SEEDS = 2
# How far the mean may be on the wrong side of the paper's number and still match it (points).
PAPER_MARGIN = 0.5

# The paper's numbers (percent), keyed (table, kernel stage or "*", score) -> {arm: value},
# and its claims, (table, kernel stage, protocol, score, better arm, worse arm, claim text,
# recipe or None for every recipe):
# both read from paper.yaml, which says what each field means.
PAPER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper.yaml")


def _read_paper(path=PAPER_FILE):
    with open(path, encoding="utf-8") as f:
        paper = yaml.safe_load(f)
    numbers = {(table, str(stage), score): arms
               for table, stages in paper["numbers"].items()
               for stage, by_score in stages.items() for score, arms in by_score.items()}
    claims = []
    for table, listed in paper["claims"].items():
        for claim in listed:
            only = claim[5] if len(claim) > 5 else {}
            if set(only) - {"recipe", "stage"}:
                raise ValueError(f"{path}: claim {claim[4]!r} limits itself by "
                                 f"{sorted(set(only) - {'recipe', 'stage'})}; only 'recipe' and "
                                 f"'stage' exist.")
            claims.append((table, str(only.get("stage", "*")), *claim[:5], only.get("recipe")))
    return numbers, claims


PAPER, CLAIMS = _read_paper()
# The paper's own budget: only cells trained for it are compared with the paper's numbers.
PAPER_EPOCHS = {"table2_mnist": 50, "tables3_4_cifar10": 200}
# The recipes of Table 2's arms: an arm ``ARM`` runs the table's recipe (the paper's reading),
# an arm ``ARM_CANDIDATE`` the candidate of the recipe check (`campaign.cells.arm_recipe`).
RECIPE_LABELS = {
    "": "the paper's reading (SGD momentum 0.9, lr 0.01, constant)",
    ADOPTED_RECIPE: "the adopted recipe (Adam lr 0.001 with a cosine decay to 0 over the "
                    "epochs, chosen on the validation split by the recipe check below, the "
                    "same for every arm)",
}
TABLES = {  # table -> (title, how scores are shown)
    "table2_mnist": ("Table 2: MNIST, LeNet, K = 4", "error"),
    "tables3_4_cifar10": ("Tables 3 / 4: CIFAR-10, ResNet18", "accuracy"),
    "demo_digits": ("The demo's setting (`cbcn demo`: digits_demo recipe)", "accuracy"),
    "ablation_digits": ("Slow-start ablations (digits, validation split)", "accuracy"),
}
# The campaign groups (``reproduce.py --only``) whose cells make up each table.
TABLE_GROUPS = {"table2_mnist": ("mnist", "mnist_converged", "mnist_adopted", "mnist_matched"),
                "tables3_4_cifar10": ("cifar10",),
                "demo_digits": ("demo",), "ablation_digits": ("ablation",)}
SETUP = [
    "- Every cell is one `cbcn train` run (`cbcn_tf.training.train`, scored by "
    "`cbcn_tf.training.evaluate`) of a recipe in `benchmarks/recipes/`; the arms of a table "
    "differ only in their model keys and get the same budget and recipe. No arm was tuned on "
    "its own.",
    "- MNIST (Table 2): LeNet, K = 4, the paper's recipe read as SGD momentum 0.9, lr 0.01, no "
    "lr decay, no weight decay, batch 128, for **8 epochs** and for the paper's **50 "
    "epochs**; at 50 epochs also under the recipe adopted from the recipe check (arms "
    "`ARM_adam_cosine`: Adam lr 0.001, cosine decay). All 60,000 training images, scored on the "
    "10,000 test images. Protocols: *upright* (train upright; score the "
    "upright and the rotated test images) and *rotated* (train and score on images rotated "
    "uniformly in [-45, 45] degrees: MNIST-rot as the paper describes it, built from full "
    "MNIST, not the 12,000 / 50,000 MNIST-rot release).",
    "- CIFAR-10 (Tables 3 / 4): ResNet18 at **kernel stage 4-4-8-16** (a quarter of the "
    "paper's 16-16-32-64) for **8 epochs** (paper: 200), the released code's recipe (SGD "
    "Nesterov 0.9, coupled weight decay 5e-4, lr 0.1 x0.2 at epochs 2 / 5 / 6 = 60 / 120 / 160 "
    "of 200 scaled), trained on the seeded 45,000-image split and scored on the other 5,000 "
    "(the shared copy has no test split). Absolute accuracies are therefore far below the "
    "paper's; the claims compared are its orderings.",
    "- Seconds per epoch: wall time of `train` divided by the epochs it ran (includes model "
    "building and per-epoch validation), on 2 cores shared with other jobs.",
    "- Every score uses BatchNorm statistics re-estimated at the final weights (precise BN, "
    "50 training batches; `precise_bn_batches`, the `cbcn train` default). The cells whose "
    "ledger rows also hold a score with Keras' moving averages (columns `top1_moving_bn`, "
    "`rot_top1_moving_bn`) were trained with those averages: their per-epoch validation curves "
    "use them, and both of their scores are listed under \"BatchNorm statistics\".",
]


# --- results files ----------------------------------------------------------------------------


def read_csv(name):
    """The rows of ``benchmarks/results/NAME`` as dicts (None if the file does not exist)."""
    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        return None
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def read_json(name):
    """``benchmarks/results/NAME`` parsed (None if the file does not exist)."""
    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def notes_lines(path) -> list:
    """A hand-written notes file as report lines (nothing if it does not exist)."""
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        return [f.read().strip(), ""]


# --- statistics and verdicts ------------------------------------------------------------------


def mean_std(values):
    """(mean, sample standard deviation or None for one value)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def verdict(better, worse, min_seeds=MIN_SEEDS) -> str:
    """Whether the claim "``better`` scores above ``worse``" exceeds the seed spread.

    ``better`` / ``worse`` are one score per seed (higher is better). "holds" needs every seed
    of ``better`` above every seed of ``worse``; "reversed" the opposite; overlapping seeds are
    "within seed noise"; fewer than ``min_seeds`` seeds on either side "not enough seeds".

    Example:
        >>> verdict([0.9, 0.91], [0.8, 0.85])
        'holds: every seed above every seed'
        >>> verdict([0.9, 0.8], [0.85, 0.86])
        'within seed noise'
        >>> verdict([0.9], [0.8, 0.7])
        'not enough seeds (n = 1 vs 2)'
    """
    better = [v for v in better if not math.isnan(v)]
    worse = [v for v in worse if not math.isnan(v)]
    if min(len(better), len(worse)) < min_seeds:
        return f"not enough seeds (n = {len(better)} vs {len(worse)})"
    if min(better) > max(worse):
        return "holds: every seed above every seed"
    if max(better) < min(worse):
        return "reversed: every seed below every seed"
    return "within seed noise"


def scores(rows, score):
    """One score per row: ``top1`` ("upright") or ``rot_top1`` ("rotated")."""
    key = "top1" if score == "upright" else "rot_top1"
    return [float(row[key]) for row in rows]


def count(n: int, noun: str) -> str:
    """``"1 cell"``, ``"2 cells"``."""
    return f"{n} {noun}{'s' * (n != 1)}"


def fmt(values, kind):
    """Scores (fractions) as ``"mean ± std"`` percent; error percent for ``kind == "error"``."""
    mean, std = mean_std([100 * v for v in values])
    if mean is None:
        return "diverged"
    if kind == "error":
        mean = 100 - mean
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def pct(values):
    """`fmt` as accuracy, "" for no values."""
    return fmt(values, "accuracy") if values else ""


def paper_number(table, stage, score, arm):
    """The paper's number for ``arm`` (under any recipe: `arm_recipe`) as text, "" if none."""
    arm = arm_recipe(arm)[0]
    for key in ((table, stage, score), (table, "*", score)):
        if key in PAPER and arm in PAPER[key]:
            return f"{PAPER[key][arm]:.2f}"
    return ""


def paper_verdict(values, paper, kind, margin=PAPER_MARGIN) -> str:
    """The mean of ``values`` (fractions) against the paper's number ``paper`` (percent; test
    error for ``kind == "error"``): matched when at most ``margin`` points worse.

    Example:
        >>> paper_verdict([0.9800, 0.9838], "1.91", "error")
        'within 0.5 points or better'
        >>> paper_verdict([0.9708], "1.91", "error")
        'misses by 1.01 points'
    """
    mean, _ = mean_std([100 * v for v in values])
    if mean is None or not paper:
        return ""
    worse = (100 - mean) - float(paper) if kind == "error" else float(paper) - mean
    return (f"within {margin:g} points or better" if worse <= margin
            else f"misses by {worse:.2f} points")


# --- ledger tables ----------------------------------------------------------------------------


def group_rows(rows):
    """{(table, kernel stage, protocol, epochs): {arm: [rows, seed order]}}."""
    groups = {}
    for row in rows:
        if row.get("steps_per_epoch"):
            continue  # smoke runs are not results
        cell = (row["table"], row["kernel_stage"], row["protocol"], row["epochs"])
        groups.setdefault(cell, {}).setdefault(row["arm"], []).append(row)
    for arms in groups.values():
        for arm_rows in arms.values():
            arm_rows.sort(key=lambda r: int(r["seed"]))
    return groups


def stage_key(stage):
    """A kernel stage as numbers, so 5-10-20-40 sorts before 10-20-40-80."""
    return [int(v) for v in stage.split("-")]


def _cell_order(item):
    """Sort table cells by kernel stage, upright before rotated, then epochs."""
    table, stage, protocol, epochs = item[0]
    return (table, stage_key(stage), protocol != "upright", int(epochs))


def _all_rows(cells):
    return [row for arms in cells.values() for arm_rows in arms.values() for row in arm_rows]


def ledger_section(rows, after=None) -> list:
    """The accuracy sections of BENCHMARKS.md generated from ledger ``rows``; ``after``:
    {table: lines put after its claims}."""
    if not rows:
        return ["## Accuracy", "", "No cells in `benchmarks/results/reproduce.csv` yet; run "
                "`python benchmarks/reproduce.py` (see its docstring).", ""]
    groups = group_rows(rows)
    lines = ["## Accuracy: how the reproduction campaign is set up", "", *SETUP, ""]
    for table, (title, kind) in TABLES.items():
        cells = {k: v for k, v in groups.items() if k[0] == table}
        if not cells:
            continue
        lines += [f"## Accuracy: {title}", ""] + _table_lines(table, kind, cells)
        lines += ["", "Mean ± sample standard deviation over the n seeds. Split: "
                  f"{', '.join(sorted({r['score_split'] for r in _all_rows(cells)}))}."
                  " Rotated: the same images rotated (MNIST-rot / digits: uniform in [-45, 45] "
                  "degrees; CIFAR10-rot: [0, 360)), angles fixed by seed 0."]
        if table in PAPER_EPOCHS:
            lines[-1] += (f" vs paper: the mean against the paper's number, matched when at "
                          f"most {PAPER_MARGIN:g} points worse; given for the cells trained for "
                          f"the paper's {PAPER_EPOCHS[table]} epochs only.")
        recipes = {arm_recipe(arm)[1] for arms in cells.values() for arm in arms}
        if recipes - {""}:
            lines[-1] += " Recipes: " + "; ".join(
                f"arms `{'ARM_' + recipe if recipe else 'ARM'}`: {RECIPE_LABELS[recipe]}"
                for recipe in sorted(recipes)) + "."
        lines += ["", "Claims and verdicts (a claim holds only if every seed of one arm is above "
                  "every seed of the other):", ""]
        lines += _claim_lines(table, cells)
        keys = {row_key(r) for r in _all_rows(cells)}
        missing = [c.run_name() for c in all_cells(TABLE_GROUPS[table])
                   if c.table == table and c.key() not in keys]
        if missing:
            lines += ["", f"Not yet in the ledger ({count(len(missing), 'cell')} of the "
                      "campaign): " + ", ".join(f"`{name}`" for name in missing) + "."]
        commands = sorted({r["command"].split(" --set seed=")[0] for r in _all_rows(cells)})
        if (after or {}).get(table):
            lines += [""] + after[table]
        lines += ["", "Produced by `python benchmarks/reproduce.py "
                  f"{' '.join('--only ' + g for g in TABLE_GROUPS[table])}`; each cell is "
                  f"`{commands[0]} ...` with the cell's "
                  "overrides (full command per cell in the ledger's `command` column).", ""]
    return lines


def _arm_order(cells) -> dict:
    """{arm: sort key}: the table's own recipe before the others, each arm in the order its
    plain arm first appears in the ledger."""
    bases = list(dict.fromkeys(arm_recipe(arm)[0] for arms in cells.values() for arm in arms))
    return {arm: (arm_recipe(arm)[1] != "", arm_recipe(arm)[1], bases.index(arm_recipe(arm)[0]))
            for arms in cells.values() for arm in arms}


def _table_lines(table, kind, cells) -> list:
    """One line per (setting, arm) of ``cells``: its scores beside the paper's numbers, the
    verdict against the paper at the paper's budget, its costs."""
    unit = "test error %" if kind == "error" else "top-1 %"
    lines = [f"| kernel stage | protocol | epochs | arm | n | {unit} | paper | rotated {unit} | "
             "paper | vs paper | BOPs | FLOPs | s / epoch |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    order = _arm_order(cells)
    for (_, stage, protocol, epochs), arms in sorted(cells.items(), key=_cell_order):
        for arm, arm_rows in sorted(arms.items(), key=lambda item: order[item[0]]):
            first = arm_rows[0]
            upright = "" if protocol == "rotated" else fmt(scores(arm_rows, "upright"), kind)
            paper_up = "" if protocol == "rotated" else paper_number(table, stage, "upright", arm)
            paper_rot = (paper_number(table, stage, "rotated", arm)
                         if protocol == "rotated" or table != "table2_mnist" else "")
            main = ("rotated", paper_rot) if protocol == "rotated" else ("upright", paper_up)
            versus = (paper_verdict(scores(arm_rows, main[0]), main[1], kind)
                      if PAPER_EPOCHS.get(table) == int(epochs) else "")
            speed = [float(r["seconds_per_epoch"]) for r in arm_rows if r["seconds_per_epoch"]]
            lines.append(
                f"| {stage} | {protocol} | {epochs} | {arm} | {len(arm_rows)} | {upright} | "
                f"{paper_up} | {fmt(scores(arm_rows, 'rotated'), kind)} | {paper_rot} | "
                f"{versus} | {int(float(first['bops'] or 0)):,} | "
                f"{int(float(first['flops'] or 0)):,} | "
                f"{statistics.median(speed) if speed else 0:.0f} |")
    return lines


def _claim_lines(table, cells) -> list:
    """The verdict of each of `CLAIMS` on ``table`` in every setting of ``cells``, under each
    recipe of its arms (`arm_recipe`: the claim's arms ``ARM`` as ``ARM_RECIPE``)."""
    lines = []
    recipes = sorted({arm_recipe(arm)[1] for arms in cells.values() for arm in arms})
    for c_table, c_stage, protocol, score, c_better, c_worse, text, only in CLAIMS:
        if c_table != table:
            continue
        for recipe in recipes if only is None else [r for r in recipes if r == only]:
            better, worse = (f"{arm}_{recipe}" if recipe else arm for arm in (c_better, c_worse))
            for (_, stage, proto, epochs), arms in sorted(cells.items(), key=_cell_order):
                if proto != protocol or (c_stage != "*" and c_stage != stage):
                    continue
                absent = [arm for arm in (better, worse) if arm not in arms]
                if len(absent) == 2:
                    continue
                claim = (f"- {text} [{stage}, {protocol} training, {score} score, {epochs} "
                         f"epochs{', recipe ' + recipe if recipe else ''}]")
                if absent:
                    lines.append(f"{claim}: **not measured yet** (no `{absent[0]}` cell in the "
                                 "ledger).")
                    continue
                a, b = scores(arms[better], score), scores(arms[worse], score)
                lines.append(
                    f"{claim}: **{verdict(a, b)}** ({better} {fmt(a, 'accuracy')} vs {worse} "
                    f"{fmt(b, 'accuracy')} top-1 %, n = {len(a)} / {len(b)}).")
    return lines
