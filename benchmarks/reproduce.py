"""The reproduction campaign: every cell trained by `cbcn_tf.training.train`, scored by `evaluate`.

A *cell* is one training run: (table, arm, kernel stage, protocol, seed, epochs). Each table
has one base recipe under ``benchmarks/recipes/`` (``mnist_lenet.yaml``,
``cifar10_resnet18.yaml``; the shipped ``digits_demo`` for the digits) and each arm is that
recipe plus a few overrides (``campaign/cells.py``); the harness adds the cell's kernel stage,
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
* ``mnist_adopted``: the ``mnist_converged`` cells again under the candidate adopted from the
  recipe check (``ADOPTED_RECIPE``: Adam lr 0.001, cosine decay), arms ``ARM_adam_cosine``.
* ``mnist_matched``: a control for it, the XNOR LeNet at half the widths, which learns as many
  weights as the CBCN (``MATCHED_ARM``; 5-10-20-40, upright, 3 seeds).
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

Data: the MNIST and CIFAR-10 cells read ``DATA_ROOT/mnist`` (the four original IDX files) and
``DATA_ROOT/cifar10`` (the CIFAR-10 training set as an ImageFolder copy), with ``DATA_ROOT``
from ``--data-root`` or the environment variable ``CBCN_DATA``; the digits need none.

The ledger (``benchmarks/results/reproduce.csv``) gets one row per finished cell, rewritten
atomically as each cell finishes; cells already in it are skipped. Each row names its run
folder relative to ``--runs-dir`` (column ``run_dir``). The angle ledger (``--angles-ledger``)
gets one row per (cell, angle), written the same way after the cell's sweep; a cell in the
main ledger without its angle rows is swept on the next run from its saved model in
``--runs-dir``, without training again.
Cells run seed-major (seed 0 of every arm before seed 1), so a campaign cut short still has
every arm. ``--budget-minutes N`` stops before a cell whose estimated time (seconds per epoch
of the same arm in the ledger, else a conservative default, times its epochs) does not fit in
what is left. A killed cell continues from its last epoch (BackupAndRestore) when the script
is started again with the same ``--runs-dir``.

Usage:
    export CBCN_DATA=/path/to/datasets    # holding mnist/ and cifar10/
    python benchmarks/reproduce.py --only mnist --budget-minutes 300 --runs-dir /tmp/campaign
    python benchmarks/reproduce.py --only demo --dry-run      # list cells and estimates
    python benchmarks/reproduce.py --only mnist --kernel-stage 5-10-20-40   # one stage only
    python benchmarks/reproduce.py --only invariance --runs-dir /tmp/campaign \\
        --data-root /path/to/datasets
    python benchmarks/reproduce.py --only demo --epochs 1 --steps-per-epoch 2 --seeds 1 \\
        --ledger /tmp/ledger.csv --runs-dir /tmp/runs          # a tiny smoke run

Rows of a campaign run from another checkout are added to this ledger, with this checkout's
command and run folder of each cell, by ``python benchmarks/merge_ledger.py OTHER.csv``
(``campaign/merge.py``).

The code lives in the package ``benchmarks/campaign/`` (cells, ledger, budget, runner, merge);
this file is its command and gives its names to the scripts and tests that import
``reproduce``.
"""
import os
import sys

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # loaded by path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from campaign.budget import (DEFAULT_SECONDS_PER_EPOCH, OVERHEAD_SECONDS,  # noqa: E402,F401
                             estimate_seconds, missing_angles, needs, plan, sweep_angles,
                             sweep_seconds)
from campaign.cells import (ABLATIONS, CIFAR_KERNEL_STAGE, GROUPS,  # noqa: E402,F401
                            INVARIANCE_ABLATIONS, INVARIANCE_SEEDS, INVARIANCE_TABLES,
                            INVARIANT_ARMS, INVARIANT_SET, RECIPES, Cell, all_cells,
                            cell_config, cifar_cells, cifar_milestones, demo_cells,
                            invariance_arms, invariance_cells, mnist_cells, recipe_path)
from campaign.ledger import (ANGLE_COLUMNS, ANGLE_KEY, ANGLES_LEDGER, COLUMNS,  # noqa: E402,F401
                             KEY, LEDGER, append_row, append_rows, finished_keys, read_ledger,
                             row_key, trained_run_dir)
from campaign.runner import main, precise_bn_batches, run_cell, sweep_cell  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
