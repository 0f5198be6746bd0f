"""The campaign's ledgers (benchmarks/campaign/ledger.py, merge.py; benchmarks/merge_ledger.py):
atomic writes under the lock, run folders, merging another checkout's ledger and commands
without machine paths; and which ledger cells benchmarks/package_weights.py packages."""
import csv
import json
import os
import threading
import time

import pytest

from tests.harness import campaign_cells, ledger_row, load_module, make_cell, reproduce

ledger_lib = load_module("campaign.ledger")
merge_lib = load_module("campaign.merge")


def _write(path, rows, columns):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _rows(path):
    return list(csv.DictReader(open(path, newline="")))


def test_append_row_rewrites_the_ledger_atomically(tmp_path, monkeypatch):
    from cbcn_tf import files

    ledger = tmp_path / "ledger.csv"
    reproduce.append_row(str(ledger), ledger_row(arm="a"))
    reproduce.append_row(str(ledger), ledger_row(arm="b"))
    rows = list(csv.DictReader(open(ledger)))
    assert [r["arm"] for r in rows] == ["a", "b"]
    assert tuple(rows[0]) == reproduce.COLUMNS

    def crash(path, write):
        write(str(path) + ".partial")
        raise KeyboardInterrupt  # killed between writing the temp file and the rename

    monkeypatch.setattr(files, "atomic_write", crash)
    with pytest.raises(KeyboardInterrupt):
        reproduce.append_row(str(ledger), ledger_row(arm="c"))
    assert [r["arm"] for r in csv.DictReader(open(ledger))] == ["a", "b"]


def test_a_writer_waits_for_the_ledger_lock(tmp_path):
    """Rows are written under `cbcn_tf.files.FileLock` on LEDGER.lock: while another holder
    has it, append_row waits; it then adds its row to what the holder wrote."""
    from cbcn_tf import files

    ledger = tmp_path / "ledger.csv"
    lock = files.FileLock(str(ledger) + ".lock")
    assert lock.acquire()
    writer = threading.Thread(target=reproduce.append_row, args=(str(ledger), ledger_row(arm="b")))
    writer.start()
    time.sleep(0.5)
    assert writer.is_alive() and not ledger.exists()
    _write(ledger, [ledger_row(arm="a")], reproduce.COLUMNS)  # the holder's own rewrite
    lock.release()
    writer.join(timeout=10)
    assert [r["arm"] for r in _rows(ledger)] == ["a", "b"]
    assert not (tmp_path / "ledger.csv.lock").exists()


def test_trained_run_dir_reads_run_dir_and_falls_back_to_the_cell(tmp_path):
    """A row's run_dir (relative to --runs-dir) names the folder; a row without one gives the
    cell's run name; a ledger without the run_dir column reads and keeps its rows when a row
    with run_dir is added."""
    cell, runs = make_cell("a", 0), tmp_path / "runs"

    def trained(relative):
        (runs / relative).mkdir(parents=True)
        (runs / relative / "model.h5").write_bytes(b"")
        return str(runs / relative)

    old = ledger_row(arm="a")  # no run_dir
    assert reproduce.trained_run_dir(cell, old, str(runs)) is None  # no model.h5 yet
    own = trained(cell.run_name())
    for row in (old, dict(old, run_dir=""), None):
        assert reproduce.trained_run_dir(cell, row, str(runs)) == own
    moved = trained("moved/a_s0")
    assert reproduce.trained_run_dir(cell, dict(old, run_dir="moved/a_s0"), str(runs)) == moved
    for outside in (str(tmp_path), "../runs/moved/a_s0"):  # never a folder outside --runs-dir
        assert reproduce.trained_run_dir(cell, dict(old, run_dir=outside), str(runs)) == own
    ledger = tmp_path / "ledger.csv"
    _write(ledger, [old], [c for c in reproduce.COLUMNS if c != "run_dir"])
    assert reproduce.finished_keys(reproduce.read_ledger(str(ledger))) == {cell.key()}
    reproduce.append_row(str(ledger), ledger_row(arm="b", seed=1) | {"run_dir": "t/b"})
    rows = list(csv.DictReader(open(ledger)))
    assert tuple(rows[0]) == reproduce.COLUMNS
    assert [(r["arm"], r["top1"], r["run_dir"]) for r in rows] == [("a", "0.5", ""),
                                                                  ("b", "0.5", "t/b")]


# A row as a campaign from another checkout writes it: no run_dir column, the per-arm recipe
# and the machine's folders in its command.
_ADOPTED = campaign_cells.adopted_cells()[0]
_OLD_COMMAND = (
    "cbcn train --config benchmarks/recipes/mnist_lenet_cbcn.yaml --set "
    "data_dir=/data/datasets/mnist --set optimizer=adam --set lr=0.001 --set "
    "lr_decay=cosine --set 'model_kwargs.kernel_stage=[5, 10, 20, 40]' --set epochs=50 --set "
    "seed=0 --output /scratch/campaign_runs/table2_mnist/"
    "cbcn_adam_cosine_5-10-20-40_upright_s0_e50")
_OLD_COLUMNS = [c for c in reproduce.COLUMNS if c != "run_dir"]


def _cell_row(cell, top1="0.9854", command=_OLD_COMMAND):
    stage = "-".join(map(str, cell.kernel_stage))
    return dict(ledger_row(table=cell.table, arm=cell.arm, stage=stage, seed=cell.seed,
                           epochs=cell.epochs, top1=top1),
                val_curve="0.9 0.95", status="ok", command=command)


def test_merge_adds_new_rows_with_their_cells_command_and_run_dir(tmp_path, capsys):
    """Rows of another ledger: a key already here is skipped, a new one is added with the
    run_dir and the portable command of this checkout's cell and every other column as it
    was; merging again adds nothing."""
    converged = campaign_cells.converged_cells()[0]
    mine, other = tmp_path / "reproduce.csv", tmp_path / "other.csv"
    here = dict(_cell_row(converged, top1="0.9708"), run_dir=converged.run_name())
    _write(mine, [here], reproduce.COLUMNS)
    _write(other, [_cell_row(converged, top1="0.1"), _cell_row(_ADOPTED)], _OLD_COLUMNS)
    assert merge_lib.main([str(other), "--ledger", str(mine)]) == 0
    assert "1 rows added" in capsys.readouterr().out
    first, added = _rows(mine)
    assert {k: first[k] for k in here} == here  # the key already here keeps its own row
    assert added["run_dir"] == _ADOPTED.run_name()
    assert added["command"] == ledger_lib.command_line(_ADOPTED)
    assert "/data/" not in added["command"] and "/scratch/" not in added["command"]
    assert '"data_dir=$CBCN_DATA/mnist"' in added["command"]
    assert added["command"].startswith("cbcn train --config benchmarks/recipes/mnist_lenet.yaml")
    unchanged = {k: v for k, v in _cell_row(_ADOPTED).items() if k != "command"}
    assert {k: added[k] for k in unchanged} == unchanged
    before = mine.read_bytes()
    assert merge_lib.merge(str(other), str(mine)) == (0, 2)
    assert mine.read_bytes() == before


def test_merge_refuses_a_row_that_matches_no_cell(tmp_path, capsys):
    mine, other = tmp_path / "reproduce.csv", tmp_path / "other.csv"
    stray = _cell_row(_ADOPTED) | {"arm": "cbcn_sgd_warm"}
    _write(other, [_cell_row(_ADOPTED), stray], _OLD_COLUMNS)
    assert merge_lib.main([str(other), "--ledger", str(mine)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "'arm': 'cbcn_sgd_warm'" in line and "cells.py" in line and "Nothing was merged" in line
    assert not mine.exists()
    assert merge_lib.main([str(tmp_path / "none.csv"), "--ledger", str(mine)]) == 2
    assert "none.csv does not exist" in capsys.readouterr().err


def test_normalise_rederives_commands_and_keeps_every_other_column(tmp_path, capsys):
    """--normalise: a ledger row of a known cell gets its cell's command and run_dir, a row
    that matches no cell keeps its command with the machine's folders as placeholders (and is
    reported); another results file's command gets the placeholders; scores never change, and
    a second run changes nothing."""
    results = tmp_path / "results"
    results.mkdir()
    stray = _cell_row(_ADOPTED) | {"arm": "cbcn_sgd_warm", "top1": "0.5"}
    _write(results / "reproduce.csv", [_cell_row(_ADOPTED), stray], _OLD_COLUMNS)
    confusion = dict(table="t", top1="0.9", command="python b.py --runs-dir /scratch/runs")
    _write(results / "class_confusion.csv", [confusion], list(confusion))
    assert merge_lib.main(["--normalise", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "reproduce.csv: 2 rows normalised" in out and "'arm': 'cbcn_sgd_warm'" in out
    known, unknown = _rows(results / "reproduce.csv")
    assert known["command"] == ledger_lib.command_line(_ADOPTED)
    assert known["run_dir"] == _ADOPTED.run_name() and unknown["run_dir"] == ""
    assert unknown["command"] == _OLD_COMMAND.replace(
        "data_dir=/data/datasets/mnist", '"data_dir=$CBCN_DATA/mnist"').replace(
        "/scratch/campaign_runs/", '"$RUNS_DIR/') + '"'
    for row, was in ((known, _cell_row(_ADOPTED)), (unknown, stray)):
        assert {k: row[k] for k in was if k != "command"} == {
            k: v for k, v in was.items() if k != "command"}
    assert _rows(results / "class_confusion.csv") == [
        dict(confusion, command='python b.py --runs-dir "$RUNS_DIR"')]
    files = {p.name: p.read_bytes() for p in results.iterdir()}
    assert merge_lib.normalise_results(str(results))["reproduce.csv"][0] == 0
    assert {p.name: p.read_bytes() for p in results.iterdir()} == files


def test_package_weights_takes_the_seed_0_cells_of_the_chosen_recipe():
    """benchmarks/package_weights.py packages, per weights name, the 50-epoch 5-10-20-40 cell
    of that seed: arms ``ARM_adam_cosine`` for the adopted recipe, ``ARM`` for the paper's."""
    package = load_module("package_weights")
    for recipe, suffix in (("adopted", "_adam_cosine"), ("paper", "")):
        chosen = {(cell.arm, cell.protocol): weights
                  for cell, weights in package._cells(0, 50, recipe)}
        assert chosen == {(f"cbcn{suffix}", "upright"): "mnist",
                          (f"xnor{suffix}", "upright"): "mnist",
                          (f"fp{suffix}", "upright"): "mnist",
                          (f"cbcn{suffix}", "rotated"): "mnist_rot"}
        cells = [cell for cell, _ in package._cells(1, 50, recipe)]
        assert {(c.seed, c.epochs, c.kernel_stage) for c in cells} == {(1, 50, (5, 10, 20, 40))}
    with open(os.path.join(package.PRETRAINED, "registry.json"), encoding="utf-8") as f:
        registry = {(e["name"], e["weights"]): e for e in json.load(f)}
    assert registry["cbcn_lenet", "mnist"]["recipe"] == (
        "benchmarks/recipes/mnist_lenet.yaml (adam_cosine)")
    assert registry["cbcn_lenet", "mnist_rot"]["rotate"] is True
