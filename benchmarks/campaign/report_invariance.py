"""The invariance sections of BENCHMARKS.md: the quarter-turn invariant CBCN against the plain
arms (``reproduce.py --only invariance``: ledgers ``reproduce.csv`` and ``angles.csv``), where
its upright errors go (class_confusion.py), its LCE latency (invariance_latency.py), and the
ablation that switches one part of `cbcn_tf.invariance.Invariance` back at a time.
"""
from __future__ import annotations

import math
import os
import statistics

from campaign import plots
from campaign.cells import INVARIANCE_TABLES, INVARIANT_ARMS, invariance_arms, invariance_cells
from campaign.ledger import row_key
from campaign.report_tables import (MIN_SEEDS, RESULTS, count, fmt, group_rows, mean_std,
                                    notes_lines, pct, scores, verdict)

ANGLE_PNG = os.path.join(RESULTS, "accuracy_vs_angle.png")
INVARIANCE_TITLES = {  # table -> (title, rotated test split)
    "invariance_digits": ("digits, ResNet18 4-4-8-16 at 16x16 (the demo's recipe, 16 epochs)",
                          "digits-rot, [-45, 45] degrees"),
    "invariance_mnist": ("MNIST, LeNet 5-10-20-40 at 28x28 (Table 2's recipe, 8 epochs)",
                         "MNIST-rot, [-45, 45] degrees"),
    "invariance_cifar10": ("CIFAR-10 validation split, ResNet18 4-4-8-16 at 32x32 (Tables 3 / "
                           "4's recipe, 8 epochs)", "CIFAR10-rot, [0, 360) degrees"),
}
INVARIANCE_COST = [
    "What the group costs on this 2-core machine (shared with other jobs), with the plain "
    "cells already in the ledger: the invariant CBCN trains 1.5x (LeNet) to 2.0x (ResNet18 at "
    "32x32) as long per step as the plain one (measured: interleaved training steps, batch "
    "128), and a 24-angle sweep took 88 s (invariant LeNet, 10,000 MNIST test images) and "
    "261 s (invariant ResNet18, 5,000 CIFAR-10 validation images). So: digits 2 cells x 16 "
    "epochs x ~16 s + 8 sweeps, about 10 min; MNIST 2 cells x 8 epochs x ~95 s (plain 60 s) "
    "+ 8 sweeps of ~1.5 min, about 40 min; CIFAR-10 2 cells x 8 epochs x ~280-400 s (plain "
    "140-200 s) + 8 sweeps of ~4.5 min, about 2 hours; about 3 hours in all. Plain cells not "
    "yet in the ledger are trained by the group as in their own campaigns (60 s / epoch for "
    "the LeNet, 140-200 s for the ResNet18). `--dry-run` prints the estimate for what is left.",
]
INVARIANCE_TEXT = os.path.join(RESULTS, "invariance_notes.md")  # written by hand
INVARIANCE_ABLATION_TEXT = os.path.join(RESULTS, "invariance_ablation_notes.md")
# Measured, not required: the invariant CBCN's rotated top-1 within this many points of its
# own upright top-1 (on CIFAR10-rot). An exactly quarter-turn-invariant net scores at theta
# what it scores at theta mod 90 degrees, so upright training cannot close that gap.
WITHIN_POINTS = {"invariance_cifar10": 5.0}
# Arms of the invariance ablation whose model is still exactly quarter-turn invariant.
_EXACT_ARMS = ("invariant", "invariant_binary_stem", "invariant_pool_mean",
               "invariant_pool_align")


def within_verdict(upright, rotated, points, min_seeds=MIN_SEEDS) -> str:
    """Whether every seed's rotated top-1 is within ``points`` of its own upright top-1.

    Example:
        >>> within_verdict([0.80, 0.82], [0.78, 0.79], 5.0)
        'met: every seed within 5 points (largest gap 3.00)'
        >>> within_verdict([0.80, 0.82], [0.70, 0.79], 5.0)
        'not met: largest gap 10.00 points'
    """
    gaps = [100 * (u - r) for u, r in zip(upright, rotated)
            if not (math.isnan(u) or math.isnan(r))]
    if len(gaps) < min_seeds:
        return f"not enough seeds (n = {len(gaps)})"
    if max(gaps) <= points:
        return f"met: every seed within {points:g} points (largest gap {max(gaps):.2f})"
    return f"not met: largest gap {max(gaps):.2f} points"


def invariance_section(rows, angle_rows, latency=None, png=ANGLE_PNG, confusion=None,
                       notes=None) -> list:
    """The invariance evidence: per invariance table the arms' upright / rotated top-1, the
    goals' verdicts, the costs, and accuracy against angle (a figure written to ``png``).
    Cells not in the ledgers are listed as missing."""
    by_key = {row_key(r): r for r in rows}
    curves = {}
    for r in angle_rows:
        curves.setdefault(row_key(r), {})[int(r["angle"])] = float(r["top1"])
    lines = ["## Beyond the paper: the quarter-turn invariant CBCN", "",
             "Upright-trained arms, the same recipe and budget per table: the plain CBCN, the "
             "same CBCN with `invariant={pool: max}` (`cbcn_invariant`: lifting stem, "
             "orientation-shared BN / PReLU, circulant shortcuts, symmetric downsampling, "
             "orientation max-pool; docs/METHOD.md §12, exactly invariant to quarter turns at "
             "these input sizes, up to a rare sign flipped by float rounding, §12.3), the same "
             "with the ORAlign head instead of the max-pool (`cbcn_invariant_align`, "
             "`invariant={pool: align}`, what `invariant=True` gives, §12.1), XNOR and full "
             "precision. The plain arms are "
             "the upright cells of the "
             "demo / Table 2 / Tables 3 / 4 campaigns (the same runs, not retrained). Scored on "
             "the upright and the rotated split (each image its own seeded angle), and at fixed "
             "angles 0, 15, ..., 345 degrees (every image turned by the same angle) for the "
             "figure. Command: `python benchmarks/reproduce.py --only invariance` (ledgers "
             "`benchmarks/results/reproduce.csv` and `benchmarks/results/angles.csv`).", "",
             *INVARIANCE_COST, ""]
    plotted = {}
    for table, (title, rot_split) in INVARIANCE_TITLES.items():
        lines += [f"### {title}", ""]
        table_lines, plotted[table] = _table_lines(table, rot_split, by_key, curves)
        lines += table_lines
    lines += confusion_lines(confusion)
    lines += notes_lines(notes)
    lines += latency_lines(latency)
    if png and any(plotted.values()):
        titles = {table: title.split(" (")[0] for table, (title, _) in INVARIANCE_TITLES.items()}
        plots.plot_angles({t: arms for t, arms in plotted.items() if arms}, titles,
                          INVARIANT_ARMS, png)
        lines += ["![top-1 against rotation angle, every arm, mean over seeds](benchmarks/"
                  f"results/{os.path.basename(png)})", ""]
    elif png:
        lines += ["No angle sweeps in `benchmarks/results/angles.csv` yet, so no figure.", ""]
    return lines



def _table_lines(table, rot_split, by_key, curves):
    """(The lines of one invariance table, {arm: (angles, mean top-1 per angle, sweeps)})."""
    cells = [c for c in invariance_cells() if c.sweep == table]
    arms = invariance_arms(table)
    plain_arm = INVARIANCE_TABLES[table][1][0]
    found = {arm: [(c, by_key[c.key()]) for c in cells
                   if c.arm == arm and c.key() in by_key] for arm in arms}
    missing = [c for c in cells if c.key() not in by_key]
    unswept = [c for c in cells if c.key() in by_key and c.key() not in curves
               and by_key[c.key()].get("status", "ok") == "ok"]
    if not any(found.values()):
        return [f"No cells in the ledger yet; missing: "
                f"{', '.join(f'`{c.run_name()}`' for c in missing)}.", ""], {}
    plain_up = scores([r for _, r in found.get(plain_arm, [])], "upright")
    lines = [f"| arm | n | upright top-1 % | rotated top-1 % ({rot_split}) | mean over "
             "angles 0..345 top-1 % | upright cost vs cbcn (points) | BOPs | FLOPs | "
             "s / epoch |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    plotted = {}
    for arm, pairs in found.items():
        if not pairs:
            lines.append(f"| {arm} | 0 | | | | | | | |")
            continue
        arm_rows = [r for _, r in pairs]
        up, rot = scores(arm_rows, "upright"), scores(arm_rows, "rotated")
        sweeps = [curves[c.key()] for c, _ in pairs if c.key() in curves]
        angles = sorted(set.intersection(*(set(s) for s in sweeps))) if sweeps else []
        mean_curve = [statistics.fmean(s[a] for s in sweeps) for a in angles]
        if angles:
            plotted[arm] = (angles, mean_curve, len(sweeps))
        cost = ""
        if plain_up and arm != plain_arm:
            mean_up = mean_std(up)[0]
            if mean_up is not None:
                cost = f"{100 * (mean_std(plain_up)[0] - mean_up):+.2f}"
        speed = [float(r["seconds_per_epoch"]) for r in arm_rows if r["seconds_per_epoch"]]
        first = arm_rows[0]
        over_angles = (f"{100 * statistics.fmean(mean_curve):.2f} "
                       f"({count(len(sweeps), 'sweep')})" if mean_curve else "")
        lines.append(
            f"| {arm} | {len(arm_rows)} | {pct(up)} | {pct(rot)} | {over_angles} | "
            f"{cost} | {int(float(first['bops'] or 0)):,} | "
            f"{int(float(first['flops'] or 0)):,} | "
            f"{statistics.median(speed) if speed else 0:.0f} |")
    lines += ["", "Mean ± sample standard deviation over the n seeds; upright cost: the "
              "plain CBCN's mean upright top-1 minus the arm's (positive = the arm is "
              "below).", "", "Goals (verdicts compare every seed with every "
              "seed):", ""]
    others = {arm: [r for _, r in pairs] for arm, pairs in found.items()
              if arm not in INVARIANT_ARMS}
    for inv_arm in INVARIANT_ARMS:
        lines += goal_lines(table, inv_arm, [r for _, r in found[inv_arm]], others)
    if missing or unswept:
        lines += ["", "Missing: " + ", ".join(
            [f"`{c.run_name()}` (not trained)" for c in missing]
            + [f"`{c.run_name()}` (no angle sweep)" for c in unswept]) + "."]
    lines.append("")
    return lines, plotted


def goal_lines(table, inv_arm, inv, others) -> list:
    """The goals for one invariant arm (its ledger rows ``inv``) against the non-invariant arms
    (``others``: arm -> rows): rotated top-1 above every one of them, and, where measured
    (`WITHIN_POINTS`, not required), within some points of its own upright."""
    if not inv:
        return [f"- `{inv_arm}`: no cells in the ledger yet."]
    inv_rot = scores(inv, "rotated")
    verdicts = {arm: verdict(inv_rot, scores(arm_rows, "rotated"))
                for arm, arm_rows in others.items()}
    if all(v.startswith("holds") for v in verdicts.values()):
        overall = "met"
    elif any(v.startswith("not enough") for v in verdicts.values()):
        overall = "not decided (not enough seeds)"
    else:
        overall = "not met"
    lines = [f"- `{inv_arm}`'s rotated top-1 above every other arm's: **{overall}** ("
             + "; ".join(f"vs {arm}: {v}, {pct(inv_rot) or '-'} vs "
                         f"{pct(scores(others[arm], 'rotated')) or '-'}"
                         for arm, v in verdicts.items()) + ")."]
    if table in WITHIN_POINTS:
        points = WITHIN_POINTS[table]
        lines.append(f"- `{inv_arm}`'s rotated top-1 within {points:g} points of its own "
                     f"upright top-1: **"
                     f"{within_verdict(scores(inv, 'upright'), inv_rot, points)}** "
                     f"(upright {pct(scores(inv, 'upright')) or '-'}, rotated "
                     f"{pct(inv_rot) or '-'}; measured, not required: an exactly "
                     "quarter-turn-invariant net scores at an angle what it scores at the angle "
                     "mod 90 degrees, so the gap is its loss at turns of up to 45 degrees, which "
                     "upright training does not teach).")
    return lines


def confusion_lines(rows) -> list:
    """Where the digit tables' upright errors go (benchmarks/class_confusion.py): per table and
    arm, the errors and the 6 <-> 9 confusions, mean over the seeds measured."""
    if not rows:
        return []
    same = sum(r["top1"] == r["ledger_top1"] for r in rows)
    lines = ["#### Upright errors between 6 and 9 (digit tables)", "",
             "A net exactly invariant to quarter turns answers a digit and its 180-degree turn "
             "alike, and a 9 turned by 180 degrees is drawn much like a 6. Each cell's saved "
             f"model scored again on its upright split; command: `{rows[0]['command']}` "
             f"(`benchmarks/results/class_confusion.csv`; its top-1 equals the ledger row's "
             f"in {same} of {len(rows)} cells).", "",
             "| table | arm | n | errors % | 6 <-> 9 errors % | share of errors | most "
             "confused pairs (first seed) |", "|---|---|---:|---:|---:|---:|---|"]
    groups = {}
    for r in rows:
        groups.setdefault((r["evidence"], r["arm"]), []).append(r)
    for (table, arm), group in groups.items():
        n = [int(r["n"]) for r in group]
        errors = [int(r["errors"]) / k for r, k in zip(group, n)]
        pair = [int(r["errors_6_9"]) / k for r, k in zip(group, n)]
        share = sum(int(r["errors_6_9"]) for r in group) / max(
            sum(int(r["errors"]) for r in group), 1)
        lines.append(f"| {table} | {arm} | {len(group)} | "
                     f"{100 * statistics.fmean(errors):.2f} | {100 * statistics.fmean(pair):.2f} "
                     f"| {100 * share:.0f}% | {group[0]['top_pairs']} |")
    return lines + [""]


def latency_lines(rows) -> list:
    """The LCE latency of the invariant CBCNs beside the plain ones (invariance_latency.py)."""
    if not rows:
        return ["LCE latency: not measured yet (`python benchmarks/invariance_latency.py`).",
                ""]
    lines = ["#### LCE latency, invariant variants vs plain CBCN (untrained weights, batch 1)",
             "", f"Command: `{rows[0]['command']}`; load average (1 min) before / after "
             f"{rows[0]['load_average']}. Each invariant variant (`invariant`: max-pool head, "
             "`align`: ORAlign head) timed beside the plain model in one interleaved run, its "
             "ratio from that run; x86 host (LCE's optimised kernels target ARM64).", "",
             "| model | input | variant | kernel | threads | median ms | ratio to plain | BOPs | "
             "FLOPs | LCE file KiB | parity |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['input']} | {r['variant']} | {r['kernel']} | "
                     f"{r['threads']} | {float(r['median_ms']):.2f} | "
                     f"{float(r['ratio_to_plain']):.2f} | {int(r['bops']):,} | "
                     f"{int(r['flops']):,} | {int(r['lce_bytes']) / 1024:.1f} | "
                     f"{r['parity'].split(';')[0]} |")
    return lines + [""]


def invariance_ablation_section(rows) -> list:
    """Where the invariant CBCN loses upright accuracy: the digits ablation that switches one
    part of `Invariance` back at a time, against the invariant and the plain CBCN."""
    groups = {k: v for k, v in group_rows(rows).items()
              if k[0] == "invariance_ablation_digits"}
    if not groups:
        return []
    arms = {arm: arm_rows for by_arm in groups.values() for arm, arm_rows in by_arm.items()}
    stages = sorted({stage for (_, stage, _, _) in groups})
    base, plain = arms.get("invariant"), arms.get("cbcn")
    lines = ["## Where does the invariant CBCN lose upright accuracy? Ablations on a "
             "validation split", "",
             "Digits (`digits_demo` recipe, kernel stage " + ", ".join(stages) + ", K = 4, "
             "trained on 80% of the training split, scored on the other 20% and on the same "
             "images rotated in [-45, 45] degrees; the test split is not used). `invariant` is "
             "`model_kwargs.invariant={pool: max}` (every switch on, max-pool head); each "
             "`invariant_*` arm sets one switch of "
             "`cbcn_tf.invariance.Invariance` back (docs/METHOD.md §12.1), so only the arms "
             "marked exact are still invariant to quarter turns; `cbcn` is the plain CBCN. "
             "Command: `python benchmarks/reproduce.py --only invariance_ablation --ledger "
             "benchmarks/results/ablation.csv` (rows in that file).", "",
             "| arm | exact | n | val top-1 % | rotated val top-1 % | upright vs invariant | "
             "upright vs cbcn |", "|---|---|---:|---:|---:|---|---|"]
    order = sorted(arms, key=lambda a: (a != "cbcn", a != "invariant", a))
    for arm in order:
        arm_rows = arms[arm]
        up = scores(arm_rows, "upright")
        vs_inv = verdict(up, scores(base, "upright")) if base and arm != "invariant" else ""
        vs_plain = verdict(up, scores(plain, "upright")) if plain and arm != "cbcn" else ""
        lines.append(f"| {arm} | {'yes' if arm in _EXACT_ARMS else 'no'} | {len(arm_rows)} | "
                     f"{fmt(up, 'accuracy')} | {fmt(scores(arm_rows, 'rotated'), 'accuracy')}"
                     f" | {vs_inv} | {vs_plain} |")
    lines += ["", "Mean ± sample standard deviation over the n seeds; verdicts compare every "
              "seed of the arm with every seed of `invariant` / `cbcn` (\"holds\": the arm is "
              "above in every seed).", ""]
    lines += notes_lines(INVARIANCE_ABLATION_TEXT)
    return lines
