"""Train a latent diffusion prior: ``python pipelines/train_prior.py --config configs/prior_cifar10.yaml [key=value ...]``.

Same library call as ``latentdistill train-prior``; the output folder is what prior ``diffusion`` loads.
"""

import argparse
import sys

from latentdistill.cli import report_errors
from latentdistill.config import load_config
from latentdistill.workflows import run_train_prior


def main(args: argparse.Namespace) -> None:
    folder = run_train_prior(load_config(args.config, args.overrides), resume=args.resume)
    print(f"trained prior: {folder}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("overrides", nargs="*")
    sys.exit(report_errors(main, parser.parse_args()))
