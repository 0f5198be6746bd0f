"""The report that writes BENCHMARKS.md: benchmarks/report.py, `campaign.report*` and
`campaign.plots`.

Sections are checked on synthetic ledgers (numbers computed here beside what the report
prints), the demo's seed spread through the reader `cbcn demo` uses, and the whole report
against the committed BENCHMARKS.md and cbcn_tf/demo_spread.json.
"""
import json
import os

import numpy as np
import pytest
import yaml

from tests.harness import ROOT, ledger_row

from campaign import cells as campaign_cells
from campaign import plots, report_invariance, report_sections, report_tables


def test_verdicts_on_synthetic_ledgers():
    verdict = report_tables.verdict
    assert verdict([0.95, 0.96, 0.97], [0.90, 0.91, 0.94]).startswith("holds")
    assert verdict([0.90, 0.91], [0.95, 0.96]).startswith("reversed")
    assert verdict([0.90, 0.96], [0.93, 0.94]) == "within seed noise"
    assert verdict([0.99], [0.5, 0.6]).startswith("not enough seeds")
    assert verdict([0.9, float("nan")], [0.5, 0.6]).startswith("not enough seeds")
    rows = [ledger_row(table="table2_mnist", arm="cbcn", stage="5-10-20-40", seed=s, top1=t)
            for s, t in enumerate((0.981, 0.982, 0.983))]
    rows += [ledger_row(table="table2_mnist", arm="xnor", stage="5-10-20-40", seed=s, top1=t)
             for s, t in enumerate((0.970, 0.975, 0.985))]
    text = "\n".join(report_tables.ledger_section(rows))
    # Error % = 100 - top-1: mean 1.80 ± 0.10 for CBCN, paper 1.91 beside it.
    assert "| 5-10-20-40 | upright | 2 | cbcn | 3 | 1.80 ± 0.10 | 1.91 |" in text
    assert "CBCN beats XNOR at the same feature widths on MNIST" in text
    assert "**within seed noise**" in text
    rows[3:] = [ledger_row(table="table2_mnist", arm="xnor", stage="5-10-20-40", seed=s, top1=0.96)
                for s in range(3)]
    assert "**holds: every seed above every seed**" in "\n".join(
        report_tables.ledger_section(rows))


def _cell_rows(cells):
    """Ledger rows for ``cells`` (CBCN 1 point above the other arms)."""
    return [ledger_row(table=c.table, arm=c.arm, stage="-".join(map(str, c.kernel_stage)),
                 seed=c.seed, epochs=c.epochs, top1=0.5 + 0.01 * (c.arm == "cbcn"))
            for c in cells]


def test_ledger_section_names_the_cells_and_claims_not_measured_yet():
    cells = [c for c in campaign_cells.cifar_cells() if c.arm in ("cbcn", "xnor_doubled")]
    rows = _cell_rows(cells)
    text = "\n".join(report_tables.ledger_section(rows)).split("## Accuracy: Tables 3 / 4")[1]
    assert "CBCN K=4 beats XNOR with doubled shortcuts" in text
    assert "**not measured yet** (no `fp` cell in the ledger)" in text
    assert "**not measured yet** (no `cbcn_k2` cell in the ledger)" in text
    missing = [c for c in campaign_cells.cifar_cells() if c.arm not in ("cbcn", "xnor_doubled")]
    assert f"Not yet in the ledger ({len(missing)} cells of the campaign): " in text
    assert all(f"`{c.run_name()}`" in text for c in missing)
    assert not any(f"`{c.run_name()}`" in text for c in cells)
    *done, last = campaign_cells.cifar_cells()
    text = "\n".join(report_tables.ledger_section(_cell_rows(done))).split(
        "## Accuracy: Tables 3 / 4")[1]
    assert f"Not yet in the ledger (1 cell of the campaign): `{last.run_name()}`." in text


def test_a_claim_limited_to_one_recipe_and_stage_is_judged_only_there():
    """The equal-learned-weights claim names the adopted recipe and 5-10-20-40 in paper.yaml:
    a 10-20-40-80 CBCN cell under that recipe, or a paper-reading XNOR cell, asks nothing of it."""
    claim = "CBCN beats an XNOR LeNet that learns as many weights"
    assert [c[1] for c in report_tables.CLAIMS if c[-2].startswith(claim)] == ["5-10-20-40"]
    rows = [ledger_row(table="table2_mnist", arm=arm, stage=stage, seed=s, epochs=50, top1=t)
            for arm, stage, tops in (("cbcn_adam_cosine", "5-10-20-40", (0.985, 0.976, 0.985)),
                                     ("xnor_matched_adam_cosine", "5-10-20-40",
                                      (0.969, 0.980, 0.979)),
                                     ("cbcn_adam_cosine", "10-20-40-80", (0.993,)),
                                     ("xnor_matched", "5-10-20-40", (0.9, 0.9)))
            for s, t in enumerate(tops)]
    judged = [line for line in report_tables.ledger_section(rows) if claim in line]
    assert len(judged) == 1
    assert ("[5-10-20-40, upright training, upright score, 50 epochs, recipe adam_cosine]: "
            "**within seed noise**") in judged[0]


def test_a_claim_limited_by_an_unknown_key_is_refused(tmp_path):
    with open(report_tables.PAPER_FILE, encoding="utf-8") as f:
        paper = yaml.safe_load(f)
    paper["claims"]["table2_mnist"][-1][5] = {"stages": "5-10-20-40"}
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(paper), encoding="utf-8")
    with pytest.raises(ValueError, match=r"\['stages'\]; only 'recipe' and 'stage' exist"):
        report_tables._read_paper(str(path))


def test_table2_shows_both_recipes_beside_the_paper_with_verdicts():
    """At the paper's 50 epochs each arm's mean is judged against the paper's number (within
    0.5 points or better / misses), arms ARM_adam_cosine are compared with the paper's ARM,
    the claims are judged under each recipe, and the recipe check says which candidate ends
    lowest per arm; the learning curves get one panel per recipe."""
    def rows(arm, top1s, epochs=50, table="table2_mnist", curve=""):
        return [dict(ledger_row(table=table, arm=arm, stage="5-10-20-40", seed=s, epochs=epochs,
                          top1=t), val_curve=curve) for s, t in enumerate(top1s)]

    ledger = (rows("cbcn", [0.9708]) + rows("xnor", [0.9733]) + rows("cbcn", [0.95], 8)
              + rows("cbcn_adam_cosine", [0.9854, 0.9757, 0.9847])
              + rows("xnor_adam_cosine", [0.9935, 0.9919, 0.9927]))
    lines = report_tables.ledger_section(ledger)
    table = [line for line in lines if line.startswith("| 5-10-20-40 |")]
    assert table[0].startswith("| 5-10-20-40 | upright | 8 | cbcn | 1 | 5.00 | 1.91 | 60.00 |  |"
                               "  |")  # no verdict away from the paper's budget
    assert "| 50 | cbcn | 1 | 2.92 | 1.91 | 60.00 |  | misses by 1.01 points |" in table[1]
    assert "| 50 | xnor | 1 | 2.67 | 3.76 |" in table[2] and "within 0.5 points or better" in table[2]
    assert ("| 50 | cbcn_adam_cosine | 3 | 1.81 ± 0.54 | 1.91 | 60.00 ± 0.00 |  | within 0.5 "
            "points or better |") in table[3]
    text = "\n".join(lines)
    assert ("[5-10-20-40, upright training, upright score, 50 epochs, recipe adam_cosine]: "
            "**reversed: every seed below every seed** (cbcn_adam_cosine 98.19 ± 0.54 vs "
            "xnor_adam_cosine 99.27 ± 0.08 top-1 %, n = 3 / 3)") in text
    assert "arms `ARM_adam_cosine`: the adopted recipe (Adam lr 0.001" in text
    check = (rows("cbcn_paper", [0.96], table="table2_mnist_recipes", curve="0.95 0.97 0.96")
             + rows("cbcn_adam_cosine", [0.98], table="table2_mnist_recipes", curve="0.97 0.98"))
    assert ("| cbcn | 4.00 (n = 1; epoch 2: 3.00) | not run yet | not run yet | 2.00 (n = 1; "
            "epoch 2: 2.00) | adam_cosine (of 2 run) |") in report_sections.recipe_check_lines(
                check + ledger)
    assert report_sections.recipe_check_lines(ledger) == []
    panels = plots.settings(check + rows("cbcn", [0.9], curve="0.5 0.9"))
    assert sorted(panels) == [("table2_mnist", "5-10-20-40", "upright", 50, ""),
                              ("table2_mnist_recipes", "5-10-20-40", "upright", 50,
                               "adam_cosine"),
                              ("table2_mnist_recipes", "5-10-20-40", "upright", 50, "paper")]


def test_demo_prints_the_seed_spread_written_from_the_ledger(tmp_path):
    from cbcn_tf import demo

    rows = []
    for arm, scores in (("cbcn", (0.95, 0.96, 0.97)), ("xnor", (0.90, 0.91, 0.92)),
                        ("float", (0.96, 0.98, 0.99))):
        rows += [dict(ledger_row(table="demo_digits", arm=arm, seed=s, epochs=16, top1=t,
                                 rot=t - 0.3)) for s, t in enumerate(scores)]
    rows.append(dict(ledger_row(table="demo_digits", arm="cbcn", seed=9, epochs=16, top1=0.1),
                     steps_per_epoch="2"))  # a smoke run: ignored
    path = tmp_path / "spread.json"
    report_sections.write_demo_spread(rows, str(path))
    lines = demo.seed_spread_lines(16, path=str(path))
    text = "\n".join(lines)
    assert "CBCN K=4        top-1 0.9600 ± 0.0100 (0.9500..0.9700)" in text
    assert "n = 3" in text and "n = 4" not in text
    assert "CBCN beats XNOR on the digits: holds: every seed above every seed" in text
    assert "full precision beats CBCN on the digits: within seed noise" in text
    assert "measured for 16 epochs, not 3" in demo.seed_spread_lines(3, path=str(path))[0]
    assert "No seed spread" in demo.seed_spread_lines(16, path=str(tmp_path / "none.json"))[0]


def test_table_rows_sort_kernel_stages_as_numbers():
    rows = [ledger_row(table="table2_mnist", arm="cbcn", stage=stage, seed=0, top1=0.9)
            for stage in ("10-20-40-80", "5-10-20-40")]
    lines = [line for line in report_tables.ledger_section(rows) if line.startswith("| ")
             and "-" in line.split("|")[1]]
    assert [line.split("|")[1].strip() for line in lines] == ["5-10-20-40", "10-20-40-80"]


def test_optimizer_section_reads_the_check_rows():
    rows = [dict(arm="xnor", optimizer=opt, epoch=str(e), train_accuracy=str(tr),
                 test_accuracy=str(te), command="cbcn train ...")
            for opt, e, tr, te in (("sgd", 1, 0.25, 0.5), ("sgd", 2, 0.39, 0.65),
                                   ("adam", 1, 0.75, 0.957), ("adam", 2, 0.91, 0.97))]
    text = "\n".join(report_sections.optimizer_section(rows))
    assert "| xnor | SGD m0.9 lr 0.01 (recipe) | 25.0 / 50.0 | 39.0 / 65.0 |" in text
    assert "| xnor | Adam lr 0.001 | 75.0 / 95.7 | 91.0 / 97.0 |" in text
    assert report_sections.optimizer_section([]) == []


def test_precise_bn_section_lists_before_and_after():
    rows = [dict(ledger_row(table="table2_mnist", arm="cbcn", stage="5-10-20-40", seed=1,
                            top1=0.9089, rot=0.70),
                 top1_moving_bn="0.5839", rot_top1_moving_bn="0.5093"),
            ledger_row(table="table2_mnist", arm="xnor", stage="5-10-20-40", seed=1)]
    text = "\n".join(report_sections.precise_bn_section(rows))
    assert ("| table2_mnist | 5-10-20-40 | upright | cbcn | 1 | 58.39 | 90.89 | 50.93 | 70.00 |"
            in text)
    assert "| xnor |" not in text  # rows without a before score are not listed
    assert report_sections.precise_bn_section(rows[1:]) == []


def test_invariance_ablation_section_compares_with_invariant_and_plain():
    table = "invariance_ablation_digits"
    rows = ([ledger_row(table=table, arm="cbcn", seed=s, top1=0.95 + s / 100) for s in (0, 1)]
            + [ledger_row(table=table, arm="invariant", seed=s, top1=0.80 + s / 100)
               for s in (0, 1)]
            + [ledger_row(table=table, arm="invariant_no_pool", seed=s, top1=0.93 + s / 100)
               for s in (0, 1)])
    section = report_invariance.invariance_ablation_section
    text = "\n".join(section(rows))
    assert ("| invariant_no_pool | no | 2 | 93.50 ± 0.71 | 40.00 ± 0.00 | holds: every seed "
            "above every seed | reversed: every seed below every seed |") in text
    assert "| invariant | yes | 2 | 80.50 ± 0.71 |" in text
    assert section([ledger_row()]) == []


def test_slow_start_section_matches_numpy_and_draws_its_figure(tmp_path):
    """Per-epoch means and final scores against NumPy; the figure is a complete PNG, written
    without a temp file left behind."""
    rng = np.random.default_rng(0)
    curves = {arm: rng.uniform(0.1, 0.9, size=(2, 6)) for arm in ("cbcn", "no_scale")}
    curves["no_scale"][:, 2] = curves["cbcn"][:, 2].max() + 0.05  # above cbcn at epoch 3
    rows = [dict(ledger_row(table="ablation_digits", arm=arm, seed=s, epochs=6, top1=c[-1]),
                 val_curve=" ".join(f"{v:.6f}" for v in c))
            for arm, per_seed in curves.items() for s, c in enumerate(per_seed)]
    png = tmp_path / "slow.png"
    lines = report_sections.slow_start_section(rows, png=str(png))
    line = next(line for line in lines if line.startswith("| no_scale |"))
    cells = [cell.strip() for cell in line.split("|")[1:-1]]
    values = np.round(curves["no_scale"], 6)
    for epoch in range(4):
        assert cells[3 + epoch].startswith(f"{100 * values[:, epoch].mean():.2f} ± "
                                           f"{100 * values[:, epoch].std(ddof=1):.2f}")
    assert cells[7].startswith(f"{100 * values[:, -1].mean():.2f} ±")
    assert cells[8] == "holds: every seed above every seed"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.read_bytes()[-8:-4] == b"IEND"
    assert sorted(os.listdir(tmp_path)) == ["slow.png"]
    assert report_sections.slow_start_section([ledger_row()], png=str(png)) == []


def test_curves_section_draws_one_figure_per_table(tmp_path):
    rows = [dict(ledger_row(table=table, arm=arm, seed=s), val_curve="0.1 0.5 0.7")
            for table in ("demo_digits", "table2_mnist") for arm in ("cbcn", "xnor")
            for s in (0, 1)]
    rows.append(dict(ledger_row(table="smoke", seed=0), val_curve="0.2", steps_per_epoch="2"))
    lines = plots.curves_section(rows, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["curves_demo_digits.png", "curves_table2_mnist.png"]
    assert "![demo_digits](benchmarks/results/curves_demo_digits.png)" in lines
    assert all((tmp_path / name).read_bytes()[:4] == b"\x89PNG" for name in os.listdir(tmp_path))


def test_committed_benchmarks_and_demo_spread_are_what_the_report_makes(monkeypatch):
    """BENCHMARKS.md and the package file cbcn_tf/demo_spread.json are generated from the
    committed results: regenerating them (figures not drawn, nothing written) gives the
    committed bytes, and the spread file says which command rebuilds it."""
    from campaign import ledger, report

    monkeypatch.setattr(plots, "_save", lambda figure, path, dpi: None)
    written = {}
    monkeypatch.setattr(report, "write_demo_spread", lambda rows: written.setdefault("rows", rows))
    text = "\n".join(report.benchmarks_lines()) + "\n"
    with open(os.path.join(ROOT, "BENCHMARKS.md"), encoding="utf-8") as handle:
        assert text == handle.read()
    with open(report_sections.DEMO_SPREAD, encoding="utf-8") as handle:
        committed = json.load(handle)
    assert committed == report_sections.demo_spread(ledger.read_ledger(ledger.LEDGER))
    assert committed["generated_by"] == "python benchmarks/report.py"
    assert os.path.isfile(os.path.join(ROOT, *committed["generated_by"].split()[1].split("/")))
    assert written["rows"] == ledger.read_ledger(ledger.LEDGER)
