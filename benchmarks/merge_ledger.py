"""Merge another checkout's campaign ledger into benchmarks/results/reproduce.csv, or write the
commands of every results file without machine paths: `campaign.merge.main`.

Usage (from the repository root):
    python benchmarks/merge_ledger.py OTHER/benchmarks/results/reproduce.csv
    python benchmarks/merge_ledger.py --normalise
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # loaded by path: the campaign package lives beside this file
    sys.path.insert(0, HERE)

from campaign.merge import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
