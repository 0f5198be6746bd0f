"""The reproduction harness (benchmarks/reproduce.py) and its report (benchmarks/report.py).

Tiny real runs on the packaged digits (1 epoch, 2 steps) check that cells go through
`cbcn_tf.training.train` / `evaluate`, land in the ledger and are skipped when run again;
the budget and verdict logic is checked on synthetic ledgers.
"""
import csv
import importlib.util
import os
import sys

import pytest
import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _load(name):
    spec = importlib.util.spec_from_file_location(
        f"bench_{name}", os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


reproduce = _load("reproduce")
report = _load("report")

MODEL_KEYS = {"model", "model_kwargs"}


@pytest.mark.parametrize("prefix", ["mnist_lenet_", "cifar10_resnet18_"])
def test_recipes_of_one_table_differ_only_in_model_keys(prefix):
    recipes = sorted(f for f in os.listdir(reproduce.RECIPES) if f.startswith(prefix))
    assert len(recipes) >= 3
    loaded = [yaml.safe_load(open(os.path.join(reproduce.RECIPES, f))) for f in recipes]
    for other in loaded[1:]:
        assert {k: v for k, v in other.items() if k not in MODEL_KEYS} == {
            k: v for k, v in loaded[0].items() if k not in MODEL_KEYS}
    for name in recipes:  # every recipe is a valid `cbcn train --config` file
        from cbcn_tf import config as config_lib

        config_lib.load_config(os.path.join(reproduce.RECIPES, name))


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
    assert reproduce._milestones(200) == [60, 120, 160]
    assert reproduce._milestones(10) == [3, 6, 8]


def _row(table="t", arm="a", stage="4-4-8-16", protocol="upright", seed=0, epochs=2,
         seconds=None, top1=0.5, rot=0.4):
    return dict(table=table, arm=arm, kernel_stage=stage, protocol=protocol, seed=str(seed),
                epochs=str(epochs), steps_per_epoch="", top1=str(top1), rot_top1=str(rot),
                seconds_per_epoch="" if seconds is None else str(seconds), score_split="test",
                bops="10", flops="20", command="cbcn train --config x --set seed=0")


def _cell(arm="a", seed=0, epochs=2, group="demo"):
    return reproduce.Cell(group, "t", arm, "digits_demo", (), (4, 4, 8, 16), "upright", seed,
                          epochs)


def test_plan_skips_finished_cells_and_stops_at_the_budget():
    cells = [_cell("a", 0), _cell("b", 0), _cell("a", 1)]
    rows = [_row(arm="a", seed=0, seconds=100.0)]
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
    rows.append(_row(arm="b", seed=0, seconds=5.0))
    todo, stop = reproduce.plan(cells, rows, budget_seconds=100, elapsed=10)
    assert todo == [] and "a_4-4-8-16_upright_s1" in stop


def test_append_row_rewrites_the_ledger_atomically(tmp_path, monkeypatch):
    from cbcn_tf import files

    ledger = tmp_path / "ledger.csv"
    reproduce.append_row(str(ledger), _row(arm="a"))
    reproduce.append_row(str(ledger), _row(arm="b"))
    rows = list(csv.DictReader(open(ledger)))
    assert [r["arm"] for r in rows] == ["a", "b"]
    assert tuple(rows[0]) == reproduce.COLUMNS

    def crash(path, write):
        write(str(path) + ".partial")
        raise KeyboardInterrupt  # killed between writing the temp file and the rename

    monkeypatch.setattr(files, "atomic_write", crash)
    with pytest.raises(KeyboardInterrupt):
        reproduce.append_row(str(ledger), _row(arm="c"))
    assert [r["arm"] for r in csv.DictReader(open(ledger))] == ["a", "b"]


def test_verdicts_on_synthetic_ledgers():
    assert report.verdict([0.95, 0.96, 0.97], [0.90, 0.91, 0.94]).startswith("holds")
    assert report.verdict([0.90, 0.91], [0.95, 0.96]).startswith("reversed")
    assert report.verdict([0.90, 0.96], [0.93, 0.94]) == "within seed noise"
    assert report.verdict([0.99], [0.5, 0.6]).startswith("not enough seeds")
    assert report.verdict([0.9, float("nan")], [0.5, 0.6]).startswith("not enough seeds")
    rows = [_row(table="table2_mnist", arm="cbcn", stage="5-10-20-40", seed=s, top1=t)
            for s, t in enumerate((0.981, 0.982, 0.983))]
    rows += [_row(table="table2_mnist", arm="xnor", stage="5-10-20-40", seed=s, top1=t)
             for s, t in enumerate((0.970, 0.975, 0.985))]
    text = "\n".join(report.ledger_section(rows))
    # Error % = 100 - top-1: mean 1.80 ± 0.10 for CBCN, paper 1.91 beside it.
    assert "| 5-10-20-40 | upright | 2 | cbcn | 3 | 1.80 ± 0.10 | 1.91 |" in text
    assert "CBCN beats XNOR at the same feature widths on MNIST" in text
    assert "**within seed noise**" in text
    rows[3:] = [_row(table="table2_mnist", arm="xnor", stage="5-10-20-40", seed=s, top1=0.96)
                for s in range(3)]
    assert "**holds: every seed above every seed**" in "\n".join(report.ledger_section(rows))


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
    cell = _cell("a", 1, epochs=10, group="mnist")
    smoke = dict(_row(arm="a", seconds=0.5), steps_per_epoch="3")
    default = (10 * reproduce.DEFAULT_SECONDS_PER_EPOCH["mnist"]
               + reproduce.OVERHEAD_SECONDS["mnist"])
    assert reproduce.estimate_seconds(cell, [smoke]) == pytest.approx(default)
    # Measured at half the widths: twice the time per epoch (never below the default).
    half = _row(arm="a", stage="2-2-4-8", seconds=300.0)
    assert reproduce.estimate_seconds(cell, [half]) == pytest.approx(
        10 * 600 + reproduce.OVERHEAD_SECONDS["mnist"])


def test_demo_prints_the_seed_spread_written_from_the_ledger(tmp_path):
    from cbcn_tf import demo

    rows = []
    for arm, scores in (("cbcn", (0.95, 0.96, 0.97)), ("xnor", (0.90, 0.91, 0.92)),
                        ("float", (0.96, 0.98, 0.99))):
        rows += [dict(_row(table="demo_digits", arm=arm, seed=s, epochs=16, top1=t, rot=t - 0.3))
                 for s, t in enumerate(scores)]
    rows.append(dict(_row(table="demo_digits", arm="cbcn", seed=9, epochs=16, top1=0.1),
                     steps_per_epoch="2"))  # a smoke run: ignored
    path = tmp_path / "spread.json"
    report.write_demo_spread(rows, str(path))
    lines = demo.seed_spread_lines(16, path=str(path))
    text = "\n".join(lines)
    assert "CBCN K=4        top-1 0.9600 ± 0.0100 (0.9500..0.9700)" in text
    assert "n = 3" in text and "n = 4" not in text
    assert "CBCN beats XNOR on the digits: holds: every seed above every seed" in text
    assert "full precision beats CBCN on the digits: within seed noise" in text
    assert "measured for 16 epochs, not 3" in demo.seed_spread_lines(3, path=str(path))[0]
    assert "No seed spread" in demo.seed_spread_lines(16, path=str(tmp_path / "none.json"))[0]


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


def test_table_rows_sort_kernel_stages_as_numbers():
    rows = [_row(table="table2_mnist", arm="cbcn", stage=stage, seed=0, top1=0.9)
            for stage in ("10-20-40-80", "5-10-20-40")]
    lines = [line for line in report.ledger_section(rows) if line.startswith("| ")
             and "-" in line.split("|")[1]]
    assert [line.split("|")[1].strip() for line in lines] == ["5-10-20-40", "10-20-40-80"]


def test_optimizer_check_changes_only_the_optimizer():
    check = _load("optimizer_check")
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


def test_optimizer_section_reads_the_check_rows():
    rows = [dict(arm="xnor", optimizer=opt, epoch=str(e), train_accuracy=str(tr),
                 test_accuracy=str(te), command="cbcn train ...")
            for opt, e, tr, te in (("sgd", 1, 0.25, 0.5), ("sgd", 2, 0.39, 0.65),
                                   ("adam", 1, 0.75, 0.957), ("adam", 2, 0.91, 0.97))]
    text = "\n".join(report.optimizer_section(rows))
    assert "| xnor | SGD m0.9 lr 0.01 (recipe) | 25.0 / 50.0 | 39.0 / 65.0 |" in text
    assert "| xnor | Adam lr 0.001 | 75.0 / 95.7 | 91.0 / 97.0 |" in text
    assert report.optimizer_section([]) == []


def test_rescore_replaces_old_rows_without_retraining(tmp_path, capsys, monkeypatch):
    """A row written before precise BN (empty precise_bn) is scored again from its run folder:
    same training (history and model file untouched), the row replaced, not duplicated."""
    ledger, runs = tmp_path / "ledger.csv", tmp_path / "runs"
    argv = ["--only", "demo", "--epochs", "1", "--steps-per-epoch", "3", "--seeds", "1",
            "--arms", "cbcn", "--ledger", str(ledger), "--runs-dir", str(runs), "--verbose", "0"]
    assert reproduce.main(argv) == 0
    row = next(csv.DictReader(open(ledger)))
    assert row["precise_bn"] == "3"  # at most one epoch of batches
    run = runs / "demo_digits" / "cbcn_4-4-8-16_upright_s0_e1_spe3"
    model_time = os.path.getmtime(run / "model.h5")
    stale = dict(row, precise_bn="", top1="0.0001")  # as an older harness wrote it
    with open(ledger, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=reproduce.COLUMNS)
        writer.writeheader()
        writer.writerow(stale)
    assert reproduce.main(argv + ["--rescore"]) == 0
    rows = list(csv.DictReader(open(ledger)))
    assert len(rows) == 1 and rows[0]["precise_bn"] == "3"
    assert rows[0]["top1"] == row["top1"]  # the same weights and statistics, scored again
    assert rows[0]["finished_utc"] == row["finished_utc"]
    assert (rows[0]["top1_moving_bn"], rows[0]["rot_top1_moving_bn"]) == ("0.0001",
                                                                          row["rot_top1"])
    assert os.path.getmtime(run / "model.h5") == model_time
    assert "0.0001 ->" in capsys.readouterr().out
    # A run trained with precise BN is scored as saved; one from before it is re-estimated.
    import yaml

    from cbcn_tf import config as config_lib
    from cbcn_tf import training

    calls = []
    monkeypatch.setattr(training, "precise_batch_norm", lambda m, c: calls.append(c) or 7)
    config = config_lib.read_config(str(run / "config.yaml"))
    assert reproduce.legacy_precise_bn(None, config, str(run)) == 3 and not calls
    saved = yaml.safe_load(open(run / "config.yaml"))
    del saved["precise_bn_batches"]
    yaml.safe_dump(saved, open(run / "config.yaml", "w"))
    assert reproduce.legacy_precise_bn(None, config, str(run)) == 7 and len(calls) == 1


def test_precise_bn_section_lists_before_and_after():
    rows = [dict(_row(table="table2_mnist", arm="cbcn", stage="5-10-20-40", seed=1, top1=0.9089,
                      rot=0.70), top1_moving_bn="0.5839", rot_top1_moving_bn="0.5093"),
            _row(table="table2_mnist", arm="xnor", stage="5-10-20-40", seed=1)]
    text = "\n".join(report.precise_bn_section(rows))
    assert ("| table2_mnist | 5-10-20-40 | upright | cbcn | 1 | 58.39 | 90.89 | 50.93 | 70.00 |"
            in text)
    assert "| xnor |" not in text  # rows without a before score are not listed
    assert report.precise_bn_section(rows[1:]) == []


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
        assert (gap < 1e-5) == (arm in report._EXACT_ARMS), (arm, gap)


def test_invariance_ablation_section_compares_with_invariant_and_plain():
    table = "invariance_ablation_digits"
    rows = ([_row(table=table, arm="cbcn", seed=s, top1=0.95 + s / 100) for s in (0, 1)]
            + [_row(table=table, arm="invariant", seed=s, top1=0.80 + s / 100) for s in (0, 1)]
            + [_row(table=table, arm="invariant_no_pool", seed=s, top1=0.93 + s / 100)
               for s in (0, 1)])
    text = "\n".join(report.invariance_ablation_section(rows))
    assert ("| invariant_no_pool | no | 2 | 93.50 ± 0.71 | 40.00 ± 0.00 | holds: every seed "
            "above every seed | reversed: every seed below every seed |") in text
    assert "| invariant | yes | 2 | 80.50 ± 0.71 |" in text
    assert report.invariance_ablation_section([_row()]) == []


def _cell_rows(cells):
    """Ledger rows for ``cells`` (CBCN 1 point above the other arms)."""
    return [_row(table=c.table, arm=c.arm, stage="-".join(map(str, c.kernel_stage)),
                 seed=c.seed, epochs=c.epochs, top1=0.5 + 0.01 * (c.arm == "cbcn"))
            for c in cells]


def test_ledger_section_names_the_cells_and_claims_not_measured_yet():
    cells = [c for c in reproduce.cifar_cells() if c.arm in ("cbcn", "xnor_doubled")]
    rows = _cell_rows(cells)
    text = "\n".join(report.ledger_section(rows)).split("## Accuracy: Tables 3 / 4")[1]
    assert "CBCN K=4 beats XNOR with doubled shortcuts" in text
    assert "**not measured yet** (no `fp` cell in the ledger)" in text
    assert "**not measured yet** (no `cbcn_k2` cell in the ledger)" in text
    missing = [c for c in reproduce.cifar_cells() if c.arm not in ("cbcn", "xnor_doubled")]
    assert f"Not yet in the ledger ({len(missing)} cells of the campaign): " in text
    assert all(f"`{c.run_name()}`" in text for c in missing)
    assert not any(f"`{c.run_name()}`" in text for c in cells)
    *done, last = reproduce.cifar_cells()
    text = "\n".join(report.ledger_section(_cell_rows(done))).split("## Accuracy: Tables 3 / 4")[1]
    assert f"Not yet in the ledger (1 cell of the campaign): `{last.run_name()}`." in text


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
