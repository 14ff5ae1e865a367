"""Evaluate a distilled file: ``python pipelines/evaluate.py outputs/run/distilled.safetensors [--config C] [key=value ...]``."""

import argparse
import sys

from latentdistill.cli import report_errors
from latentdistill.workflows import run_evaluate

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file")
    parser.add_argument("--config")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    sys.exit(report_errors(run_evaluate, args.file, args.config, args.overrides))
