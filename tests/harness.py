"""The benchmarks/ harness for the tests of the campaign and the report: benchmarks/ on
``sys.path``, its modules, and ledger rows and cells built as the campaign builds them."""
import importlib
import os
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
if BENCHMARKS not in sys.path:  # the scripts and the campaign package live in benchmarks/
    sys.path.insert(0, BENCHMARKS)


def load_module(name):
    """A module of benchmarks/: a script (``reproduce``) or ``campaign.NAME``."""
    return importlib.import_module(name)


reproduce = load_module("reproduce")
campaign_cells = load_module("campaign.cells")


def make_cell(arm="a", seed=0, epochs=2, group="demo"):
    """A digits cell of table ``t`` (the digits_demo recipe, kernel stage 4-4-8-16)."""
    return reproduce.Cell(group, "t", arm, "digits_demo", (), (4, 4, 8, 16), "upright", seed,
                          epochs)


def ledger_row(table="t", arm="a", stage="4-4-8-16", protocol="upright", seed=0, epochs=2,
               seconds=None, top1=0.5, rot=0.4):
    """A campaign ledger row as `csv.DictReader` reads it back (every value a string)."""
    return dict(table=table, arm=arm, kernel_stage=stage, protocol=protocol, seed=str(seed),
                epochs=str(epochs), steps_per_epoch="", top1=str(top1), rot_top1=str(rot),
                seconds_per_epoch="" if seconds is None else str(seconds), score_split="test",
                bops="10", flops="20", command="cbcn train --config x --set seed=0")
