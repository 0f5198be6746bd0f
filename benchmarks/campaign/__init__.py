"""The reproduction campaign on top of `cbcn_tf`: its cells, its ledgers, its runner and its
report.

* `campaign.cells`: what a cell is (one `cbcn train` run: table, arm, kernel stage, protocol,
  seed, epochs), the groups of ``reproduce.py --only`` and the recipes with their arm overrides;
* `campaign.ledger`: the CSV ledgers of finished cells and of angle sweeps, and where a
  finished cell's run folder is;
* `campaign.budget`: which cells still need work and the time they are expected to take;
* `campaign.runner`: training, scoring and sweeping one cell, and the command line of
  ``benchmarks/reproduce.py``;
* `campaign.merge`: adding another checkout's ledger rows, and the results files' commands
  without machine paths (``benchmarks/merge_ledger.py``).

``benchmarks/`` is on ``sys.path`` when a script of it runs, so the modules are imported as
``campaign.cells`` etc.
"""
