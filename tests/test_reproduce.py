"""The reproduction campaign (benchmarks/reproduce.py, the `campaign` package: cells, budget,
runner; its ledgers in tests/test_campaign_ledger.py, its report in tests/test_report.py).

Tiny real runs on the packaged digits (1 epoch, 2 steps) check that cells go through
`cbcn_tf.training.train` / `evaluate`, land in the ledger and are skipped when run again;
the budget logic is checked on synthetic ledgers, the base recipes with their arm overrides
against the per-arm recipes the ledger's finished cells were trained with.
"""
import csv
import os
import shlex

import pytest
import yaml

from tests.harness import ROOT, campaign_cells, ledger_row, load_module, make_cell, reproduce

report_invariance = load_module("campaign.report_invariance")

MODEL_KEYS = {"model", "model_kwargs"}

# The per-arm recipes the finished ledger cells were trained with (one YAML file per arm, the
# keys as they were; their data_dir is left out: every cell replaced it by its own --set).
_MNIST_KEYS = dict(dataset="mnist", train_split="train", eval_split="test", epochs=8,
                   batch_size=128, optimizer="sgd", lr=0.01, momentum=0.9, nesterov=False,
                   lr_milestones=[], lr_gamma=1.0, weight_decay=0.0, tensorboard=False)
_CIFAR_KEYS = dict(dataset="image_folder", train_split="train", eval_split="validation",
                   validation_fraction=0.1, epochs=8, batch_size=128, optimizer="sgd", lr=0.1,
                   momentum=0.9, nesterov=True, lr_milestones=[2, 5, 6], lr_gamma=0.2,
                   weight_decay=5.0e-4, weight_decay_scope="all", tensorboard=False)
_LENET, _RESNET = {"kernel_stage": [5, 10, 20, 40]}, {"kernel_stage": [4, 4, 8, 16]}
OLD_RECIPES = {
    ("table2_mnist", "cbcn"): dict(
        _MNIST_KEYS, model="cbcn_lenet", model_kwargs=dict(_LENET, orientations=4)),
    ("table2_mnist", "xnor"): dict(
        _MNIST_KEYS, model="xnor_lenet", model_kwargs=dict(_LENET, orientations=4)),
    ("table2_mnist", "fp"): dict(
        _MNIST_KEYS, model="cbcn_lenet", model_kwargs=dict(_LENET, orientations=4, binary=False)),
    ("tables3_4_cifar10", "cbcn"): dict(
        _CIFAR_KEYS, model="cbcn_resnet18", model_kwargs=dict(_RESNET, orientations=4)),
    ("tables3_4_cifar10", "cbcn_approxsign"): dict(
        _CIFAR_KEYS, model="cbcn_resnet18",
        model_kwargs=dict(_RESNET, orientations=4, kernel_quantizer="approx_sign")),
    ("tables3_4_cifar10", "cbcn_k2"): dict(
        _CIFAR_KEYS, model="cbcn_resnet18", model_kwargs=dict(_RESNET, orientations=2)),
    ("tables3_4_cifar10", "fp"): dict(
        _CIFAR_KEYS, model="cbcn_resnet18",
        model_kwargs=dict(_RESNET, orientations=4, binary=False)),
    ("tables3_4_cifar10", "xnor_doubled"): dict(
        _CIFAR_KEYS, model="xnor_resnet18_doubled", model_kwargs=dict(_RESNET, orientations=4)),
}


def _old_cell_config(cell, data_root, tmp_path):
    """The config the per-arm recipe gave ``cell``: its YAML file, then the cell's data_dir,
    (CIFAR) schedule, kernel stage, epochs, seed and protocol as --set overrides."""
    from cbcn_tf import config as config_lib

    path = tmp_path / f"{cell.table}_{cell.arm}.yaml"
    path.write_text(yaml.safe_dump(OLD_RECIPES[cell.table, cell.arm]))
    sets = [f"data_dir={os.path.join(data_root, cell.data_folder)}"]
    if cell.table == "tables3_4_cifar10":
        milestones = reproduce.cifar_milestones(cell.epochs)
        sets.append(f"lr_milestones=[{', '.join(map(str, milestones))}]")
    sets += [f"model_kwargs.kernel_stage=[{', '.join(map(str, cell.kernel_stage))}]",
             f"epochs={cell.epochs}", f"seed={cell.seed}"]
    if cell.protocol == "rotated":
        sets.append("rotate_train=true")
    return config_lib.load_config(str(path), sets)


def test_base_recipe_and_arm_overrides_give_the_per_arm_recipes_configs(tmp_path):
    """Every Table 2 / Tables 3-4 cell (all arms, stages, protocols, seeds; 8 and 50 epochs)
    resolves to exactly the TrainConfig of its arm's own recipe, so the finished ledger cells
    keep their meaning; the arms differ only in model keys, and the recipes name no data."""
    root = str(tmp_path / "data")
    cells = (reproduce.mnist_cells() + reproduce.mnist_cells(50) + reproduce.cifar_cells()
             + reproduce.cifar_cells(200))
    assert {(c.table, c.arm) for c in cells} == set(OLD_RECIPES)
    for cell in cells:
        assert reproduce.cell_config(cell, root) == _old_cell_config(cell, root, tmp_path), cell
    arm_overrides = list(campaign_cells.MNIST_ARMS.values()) + [
        overrides for overrides, _ in campaign_cells.CIFAR_ARMS.values()]
    for overrides in arm_overrides:
        assert {item.partition("=")[0].split(".")[0] for item in overrides} <= MODEL_KEYS
    for recipe in (campaign_cells.MNIST_RECIPE, campaign_cells.CIFAR_RECIPE):
        assert "data_dir" not in yaml.safe_load(open(recipe))
    assert sorted(os.listdir(reproduce.RECIPES)) == ["cifar10_resnet18.yaml", "mnist_lenet.yaml"]


def test_the_ledger_command_trains_exactly_the_cell(tmp_path):
    """The `command` column, its $CBCN_DATA / $RUNS_DIR given, is a `cbcn train` command line
    whose recipe and --set overrides load to the cell's config, with the cell's run folder."""
    from cbcn_tf import config as config_lib

    root, runs = str(tmp_path / "data"), str(tmp_path / "runs")
    cells = [c for c in reproduce.all_cells(["mnist", "cifar10", "demo", "invariance"])
             if c.seed == 0]
    for cell in cells:
        command = load_module("campaign.ledger").command_line(cell)
        words = shlex.split(command.replace("$CBCN_DATA", root).replace("$RUNS_DIR", runs))
        assert words[:3] == ["cbcn", "train", "--config"]
        recipe = words[3] if not words[3].endswith(".yaml") else os.path.join(ROOT, words[3])
        sets = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
        assert config_lib.load_config(recipe, sets) == reproduce.cell_config(cell, root)
        assert words[-2:] == ["--output", os.path.join(runs, cell.run_name())]


def test_matched_xnor_learns_as_many_weights_as_the_cbcn(tmp_path):
    """mnist_matched: the adopted XNOR cells (5-10-20-40, upright, 3 seeds) at orientations 2,
    whose model learns within 5 % of the CBCN's trainable values at a quarter of its BOPs."""
    import numpy as np

    from cbcn_tf import summary
    from cbcn_tf.models import create_model
    from cbcn_tf.training import resolve_config

    root = str(tmp_path / "data")
    matched = campaign_cells.all_cells(["mnist_matched"])
    xnor = [c for c in campaign_cells.adopted_cells() if c.arm == "xnor_adam_cosine"
            and c.protocol == "upright" and c.kernel_stage == (5, 10, 20, 40)]
    assert [c.seed for c in matched] == [0, 1, 2] == [c.seed for c in xnor]
    assert all(c.arm == "xnor_matched_adam_cosine" and c.table == "table2_mnist" for c in matched)
    assert campaign_cells.arm_recipe(matched[0].arm) == ("xnor_matched", "adam_cosine")
    models = {}
    for name, cell in (("matched", matched[0]), ("xnor", xnor[0])):
        config = resolve_config(reproduce.cell_config(cell, root))
        models[name] = create_model(config.model, **config.model_kwargs)
    cbcn_config = resolve_config(reproduce.cell_config(campaign_cells.adopted_cells()[0], root))
    models["cbcn"] = create_model(cbcn_config.model, **cbcn_config.model_kwargs)
    learned = {k: sum(int(np.prod(w.shape)) for w in m.trainable_weights)
               for k, m in models.items()}
    assert abs(learned["matched"] - learned["cbcn"]) <= 0.05 * learned["cbcn"]
    assert learned["xnor"] > 3 * learned["cbcn"]
    bops = {k: summary(m, print_fn=None).totals["binary_macs"]
            for k, m in models.items()}
    assert bops["xnor"] == bops["cbcn"] == 4 * bops["matched"]


def test_adopted_cells_are_the_converged_cells_under_the_adopted_recipe(tmp_path):
    """mnist_adopted: the converged cells (same table, plan, seeds, epochs) with the arm
    renamed ARM_adam_cosine; each resolves to its converged cell's training settings except
    the optimizer, lr and lr_decay, set to the recipe check's adam_cosine candidate."""
    import dataclasses

    from cbcn_tf.training import resolve_config

    root = str(tmp_path / "data")
    converged = campaign_cells.converged_cells()
    adopted = campaign_cells.all_cells(["mnist_adopted"])
    assert [c.key() for c in adopted] == [
        c.key()[:1] + (f"{c.arm}_adam_cosine",) + c.key()[2:] for c in converged]
    assert "mnist_adopted" in reproduce.GROUPS and campaign_cells.ADOPTED_RECIPE == "adam_cosine"
    for old, new in zip(converged, adopted):
        before = resolve_config(reproduce.cell_config(old, root))
        after = resolve_config(reproduce.cell_config(new, root))
        changed = {f.name for f in dataclasses.fields(before)
                   if getattr(before, f.name) != getattr(after, f.name)}
        assert changed == {"optimizer", "lr", "lr_decay"}, (new.run_name(), changed)
        assert (after.optimizer, after.lr, after.lr_decay) == ("adam", 0.001, "cosine")
        assert new.overrides == old.overrides + campaign_cells.RECIPE_CANDIDATES["adam_cosine"]


def test_campaign_cells_cover_the_tables_and_run_seed_major():
    mnist = reproduce.mnist_cells()
    counts = {}
    for cell in mnist:
        key = (cell.kernel_stage, cell.protocol, cell.arm)
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 2 * 2 * 3
    assert all(counts[((5, 10, 20, 40), p, a)] >= 3 for p in ("upright", "rotated")
               for a in ("cbcn", "xnor", "fp"))
    cifar = reproduce.cifar_cells()
    assert {c.arm for c in cifar} == {"cbcn", "xnor_doubled", "fp", "cbcn_k2", "cbcn_approxsign"}
    for cells in (mnist, cifar):
        seeds = [c.seed for c in cells]
        assert seeds == sorted(seeds)  # seed 0 of every arm before any seed 1
        assert len({c.epochs for c in cells}) == 1  # one budget for all arms
    # The CIFAR schedule: x0.2 at 30 / 60 / 80 % of the epochs (60/120/160 of 200).
    assert reproduce.cifar_milestones(200) == [60, 120, 160]
    assert reproduce.cifar_milestones(10) == [3, 6, 8]


def test_plan_skips_finished_cells_and_stops_at_the_budget():
    cells = [make_cell("a", 0), make_cell("b", 0), make_cell("a", 1)]
    rows = [ledger_row(arm="a", seed=0, seconds=100.0)]
    todo, stop = reproduce.plan(cells, rows)
    assert [c.key() for c in todo] == [cells[1].key(), cells[2].key()] and stop is None
    # Arm b has no measurement: the default (demo: 10 s/epoch) + overhead = 40 s.
    assert reproduce.estimate_seconds(cells[1], rows) == pytest.approx(
        2 * reproduce.DEFAULT_SECONDS_PER_EPOCH["demo"] + reproduce.OVERHEAD_SECONDS["demo"])
    # Arm a is estimated from its ledger row: 2 epochs x 100 s + overhead.
    assert reproduce.estimate_seconds(cells[2], rows) == pytest.approx(
        200 + reproduce.OVERHEAD_SECONDS["demo"])
    todo, stop = reproduce.plan(cells, rows, budget_seconds=45, elapsed=10)  # 35 s < 40 s
    assert todo == [] and "b_4-4-8-16_upright_s0" in stop
    todo, stop = reproduce.plan(cells, rows, budget_seconds=100, elapsed=10)
    assert stop is None and todo[0].arm == "b"
    # The next cell after b is arm a (220 s): does not fit in 100 s.
    rows.append(ledger_row(arm="b", seed=0, seconds=5.0))
    todo, stop = reproduce.plan(cells, rows, budget_seconds=100, elapsed=10)
    assert todo == [] and "a_4-4-8-16_upright_s1" in stop


@pytest.mark.slow  # a campaign of several training runs
def test_tiny_campaign_runs_cells_and_skips_them_when_run_again(tmp_path, capsys):
    ledger, runs = tmp_path / "ledger.csv", tmp_path / "runs"
    argv = ["--only", "demo", "--epochs", "1", "--steps-per-epoch", "2", "--seeds", "1",
            "--ledger", str(ledger), "--runs-dir", str(runs), "--verbose", "0"]
    assert reproduce.main(argv + ["--arms", "cbcn,xnor"]) == 0
    rows = list(csv.DictReader(open(ledger)))
    assert [(r["arm"], r["seed"], r["epochs"], r["steps_per_epoch"]) for r in rows] == [
        ("cbcn", "0", "1", "2"), ("xnor", "0", "1", "2")]
    for row in rows:
        assert 0.0 <= float(row["top1"]) <= 1.0 and 0.0 <= float(row["rot_top1"]) <= 1.0
        assert int(row["bops"]) > 0 and float(row["seconds_per_epoch"]) > 0
        assert row["command"].startswith("cbcn train --config digits_demo")
        assert len(row["train_curve"].split()) == len(row["val_curve"].split()) == 1
        run = runs / "demo_digits" / f"{row['arm']}_4-4-8-16_upright_s0_e1_spe2"
        assert (run / "model.h5").exists() and (run / "history.csv").exists()
        assert row["run_dir"] == f"demo_digits/{row['arm']}_4-4-8-16_upright_s0_e1_spe2"
        assert row["precise_bn"] == "2"  # BN statistics over at most one epoch of batches
    # The CBCN row's accuracy is what evaluate() gives for the saved model.
    from cbcn_tf import training

    scores = training.evaluate(str(runs / "demo_digits" / "cbcn_4-4-8-16_upright_s0_e1_spe2"),
                               "digits")
    assert float(rows[0]["top1"]) == pytest.approx(scores["top1"], abs=1e-4)
    capsys.readouterr()
    assert reproduce.main(argv + ["--arms", "cbcn,xnor"]) == 0
    assert "2 already in" in capsys.readouterr().out
    assert len(list(csv.DictReader(open(ledger)))) == 2
    # A budget too small for the next cell stops cleanly, leaving the ledger alone.
    assert reproduce.main(argv + ["--budget-minutes", "0.1"]) == 0
    assert "Stopping cleanly: budget" in capsys.readouterr().out
    assert len(list(csv.DictReader(open(ledger)))) == 2


def test_estimates_ignore_smoke_runs_and_scale_other_kernel_stages():
    cell = make_cell("a", 1, epochs=10, group="mnist")
    smoke = dict(ledger_row(arm="a", seconds=0.5), steps_per_epoch="3")
    default = (10 * reproduce.DEFAULT_SECONDS_PER_EPOCH["mnist"]
               + reproduce.OVERHEAD_SECONDS["mnist"])
    assert reproduce.estimate_seconds(cell, [smoke]) == pytest.approx(default)
    # Measured at half the widths: twice the time per epoch (never below the default).
    half = ledger_row(arm="a", stage="2-2-4-8", seconds=300.0)
    assert reproduce.estimate_seconds(cell, [half]) == pytest.approx(
        10 * 600 + reproduce.OVERHEAD_SECONDS["mnist"])


@pytest.mark.parametrize("group", reproduce.GROUPS)
def test_every_group_plans_from_an_empty_ledger(group, capsys, tmp_path):
    """A dry run of each group lists all its cells with a time estimate (no data needed)."""
    argv = ["--only", group, "--dry-run", "--ledger", str(tmp_path / "none.csv"),
            "--angles-ledger", str(tmp_path / "angles.csv")]
    assert reproduce.main(argv) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()
              if line.startswith("  ")]
    assert sorted(listed) == sorted(c.run_name() for c in campaign_cells.all_cells([group]))


def test_kernel_stage_filter_lists_only_that_stage(capsys, tmp_path):
    argv = ["--only", "mnist", "--dry-run", "--ledger", str(tmp_path / "none.csv")]
    assert reproduce.main(argv + ["--kernel-stage", "5-10-20-40"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert len(listed) == 18 and all("_5-10-20-40_" in line for line in listed)
    assert reproduce.main(argv + ["--kernel-stage", "10-20-40-80"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert len(listed) == 6 and all("_10-20-40-80_" in line for line in listed)


def test_tables_filter_keeps_a_table_and_the_cells_swept_for_it(capsys, tmp_path):
    argv = ["--only", "invariance", "--dry-run", "--ledger", str(tmp_path / "none.csv"),
            "--angles-ledger", str(tmp_path / "angles.csv")]
    assert reproduce.main(argv + ["--tables", "invariance_mnist"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()
              if line.startswith("  ")]
    mine = [c for c in reproduce.invariance_cells() if c.sweep == "invariance_mnist"]
    assert sorted(listed) == sorted(c.run_name() for c in mine)
    assert any(name.startswith("table2_mnist/") for name in listed)  # its plain arms
    assert reproduce.main(argv + ["--tables", "invariance_mnist,invariance_digits",
                                  "--arms", "cbcn_invariant_align"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()
              if line.startswith("  ")]
    assert sorted(listed) == sorted(
        f"{table}/cbcn_invariant_align_{stage}_upright_s{seed}_e{epochs}"
        for table, stage, epochs in (("invariance_mnist", "5-10-20-40", 8),
                                     ("invariance_digits", "4-4-8-16", 16))
        for seed in range(reproduce.INVARIANCE_SEEDS))


def test_optimizer_check_changes_only_the_optimizer():
    check = load_module("optimizer_check")
    cells = check.cells(epochs=3)
    assert {optimizer for optimizer, _ in cells} == {"sgd", "adam"}
    by_arm = {}
    for optimizer, cell in cells:
        assert cell.epochs == 3 and cell.seed == 0 and cell.kernel_stage == (5, 10, 20, 40)
        config = reproduce.cell_config(cell)
        by_arm.setdefault(cell.arm.rsplit("_", 1)[0], {})[optimizer] = config
    for configs in by_arm.values():
        sgd, adam = configs["sgd"], configs["adam"]
        assert (sgd.optimizer, sgd.lr) == ("sgd", 0.01)  # the campaign's recipe as it is
        assert (adam.optimizer, adam.lr) == ("adam", 0.001)
        import dataclasses

        assert dataclasses.replace(adam, optimizer="sgd", lr=0.01) == sgd


def test_a_cell_that_reads_data_needs_a_data_root(tmp_path, capsys, monkeypatch):
    """MNIST / CIFAR-10 cells read DATA_ROOT/mnist, DATA_ROOT/cifar10: without --data-root or
    $CBCN_DATA, or with a root that lacks the folder, one error line naming them, exit 2,
    nothing written; listing the cells (--dry-run) needs no data."""
    monkeypatch.delenv("CBCN_DATA", raising=False)
    ledger, runs = tmp_path / "ledger.csv", tmp_path / "runs"
    argv = ["--only", "mnist", "--arms", "cbcn", "--seeds", "1", "--kernel-stage", "5-10-20-40",
            "--epochs", "1", "--steps-per-epoch", "1", "--ledger", str(ledger), "--runs-dir",
            str(runs), "--verbose", "0"]
    assert reproduce.main(argv + ["--dry-run"]) == 0
    capsys.readouterr()

    def error(extra=()):
        assert reproduce.main(argv + list(extra)) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    line = error()
    assert "--data-root" in line and "CBCN_DATA" in line
    assert str(tmp_path / "none" / "mnist") in error(["--data-root", str(tmp_path / "none")])
    monkeypatch.setenv("CBCN_DATA", str(tmp_path / "env"))
    assert str(tmp_path / "env" / "mnist") in error()  # the variable is the default root
    assert not ledger.exists() and not runs.exists()
    config = reproduce.cell_config(reproduce.all_cells(["mnist"])[0], str(tmp_path / "env"))
    assert config.data_dir == str(tmp_path / "env" / "mnist")


def test_invariance_ablation_arms_switch_back_one_part_each():
    """Each arm's recipe builds the model it names: the parsed `invariant` option differs from
    all-on in exactly the one switch the arm names, and the arms marked exact are invariant."""
    import dataclasses

    import numpy as np

    from cbcn_tf.invariance import Invariance
    from cbcn_tf.training import build_model, resolve_config

    cells = reproduce.all_cells(["invariance_ablation"], seeds=1)
    by_arm = {cell.arm: cell for cell in cells}
    assert set(by_arm) == set(reproduce.INVARIANCE_ABLATIONS)
    assert all("eval_split=validation" in cell.overrides for cell in cells)  # never the test split
    full = dataclasses.asdict(Invariance(pool="max"))  # the reference arm: max-pool head
    for arm, cell in by_arm.items():
        option = reproduce.cell_config(cell).model_kwargs.get("invariant")
        if arm == "cbcn":
            assert not option
            continue
        changed = {k for k, v in dataclasses.asdict(Invariance.resolve(option)).items()
                   if v != full[k]}
        assert len(changed) == (0 if arm == "invariant" else 1), (arm, changed)
    # The exact arms of the report are invariant to a quarter turn, the others are not.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 16, 16, 1)).astype(np.float32)
    for arm in ("invariant_pool_align", "invariant_no_pool"):
        model = build_model(resolve_config(reproduce.cell_config(by_arm[arm])))
        gap = np.abs(model(np.rot90(x, 1, axes=(1, 2))).numpy() - model(x).numpy()).max()
        assert (gap < 1e-5) == (arm in report_invariance._EXACT_ARMS), (arm, gap)


@pytest.mark.parametrize("args, option", [
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-2"], "--epochs"),
    (["--seeds", "0"], "--seeds"),
    (["--steps-per-epoch", "0"], "--steps-per-epoch"),
    (["--budget-minutes", "-5"], "--budget-minutes"),
    (["--budget-minutes", "0"], "--budget-minutes"),
    (["--budget-minutes", "nan"], "--budget-minutes"),
])
def test_counts_and_budgets_that_would_be_ignored_are_parser_errors(args, option, tmp_path,
                                                                     capsys):
    ledger = tmp_path / "ledger.csv"
    with pytest.raises(SystemExit) as exit_:
        reproduce.main(["--only", "demo", "--ledger", str(ledger), "--runs-dir",
                        str(tmp_path / "runs"), *args])
    assert exit_.value.code == 2
    assert option in capsys.readouterr().err.splitlines()[-1]
    assert not ledger.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("option, value, known", [
    ("--arms", "bogus", "cbcn, float, xnor"),
    ("--arms", "cbcn,bogus", "cbcn, float, xnor"),
    ("--tables", "invariance_mnist", "demo_digits"),  # a table of a group not selected
    ("--kernel-stage", "9-9-9-9", "4-4-8-16"),
])
def test_unknown_arms_tables_and_stages_list_the_known_ones(option, value, known, tmp_path,
                                                            capsys):
    ledger = tmp_path / "ledger.csv"
    with pytest.raises(SystemExit) as exit_:
        reproduce.main(["--only", "demo", "--ledger", str(ledger), "--runs-dir",
                        str(tmp_path / "runs"), option, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert option in err and known in err and value.split(",")[-1] in err
    assert not ledger.exists() and not (tmp_path / "runs").exists()
