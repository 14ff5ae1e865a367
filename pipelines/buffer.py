"""Train expert trajectories for objective ``mtt``: ``python pipelines/buffer.py --config configs/cifar10_ipc1_mtt.yaml [key=value ...]``.

Same library call as ``latentdistill buffer``; finished experts in ``buffer.dir`` are kept and reused, an
interrupted expert resumes from its last epoch.
"""

import argparse
import sys

from latentdistill.cli import report_errors
from latentdistill.config import load_config
from latentdistill.workflows import run_buffer


def main(args: argparse.Namespace) -> None:
    folder = run_buffer(load_config(args.config, args.overrides))
    print(f"expert buffer: {folder}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*")
    sys.exit(report_errors(main, parser.parse_args()))
