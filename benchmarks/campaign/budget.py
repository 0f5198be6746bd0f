"""What the campaign still has to do and how long it is expected to take.

Estimates come from the ledger itself: the seconds per epoch measured for the same arm (same
table; the same kernel stage if measured, else another stage scaled by the widths), with the
constants below only for an arm that has no measured row yet.
"""
from __future__ import annotations

from campaign import cells as campaign_cells
from campaign.cells import ANGLE_STEP, Cell
from campaign.ledger import row_key

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
    Rows of capped epochs count only for cells with the same cap.
    """
    def measured(table, arm):
        return [r for r in rows if r["table"] == table and r["arm"] == arm
                and r.get("seconds_per_epoch") not in ("", None)
                and r.get("steps_per_epoch", "") == str(cell.steps_per_epoch or "")]

    same = measured(cell.table, cell.arm)
    stage = "-".join(map(str, cell.kernel_stage))
    same_stage = [r for r in same if r["kernel_stage"] == stage]
    invariant = cell.arm in campaign_cells.INVARIANT_ARMS
    plain = ([r for r in measured(campaign_cells.INVARIANCE_TABLES[cell.table][0], "cbcn")
              if r["kernel_stage"] == stage] if invariant else [])
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
