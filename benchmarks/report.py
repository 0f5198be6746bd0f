"""Write BENCHMARKS.md from the committed results in benchmarks/results/ (with its figures,
and the demo's seed spread ``cbcn_tf/demo_spread.json``): `campaign.report.main`.

Usage (from the repository root):
    python benchmarks/report.py
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # loaded by path: the campaign package lives beside this file
    sys.path.insert(0, HERE)

from campaign.report import main  # noqa: E402

if __name__ == "__main__":
    main()
