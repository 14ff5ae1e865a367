"""Evaluate a distilled file: ``python pipelines/evaluate.py outputs/run/distilled.safetensors [--nets convnet,vgg11] [--config C] [key=value ...]``."""

import argparse
import sys

from latentdistill.cli import report_errors
from latentdistill.workflows import run_evaluate

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file")
    parser.add_argument("--config")
    parser.add_argument("--nets", help="comma-separated networks, one row each")
    parser.add_argument("overrides", nargs="*")
    args, extra = parser.parse_known_args()
    overrides = args.overrides + extra + ([f"evaluate.nets=[{args.nets}]"] if args.nets else [])
    sys.exit(report_errors(run_evaluate, args.file, args.config, overrides))
