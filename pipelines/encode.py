"""Build the latent cache: ``python pipelines/encode.py --config configs/quickstart.yaml [key=value ...]``."""

import argparse
import sys

from latentdistill.cli import report_errors
from latentdistill.config import load_config
from latentdistill.workflows import run_encode


def main(args: argparse.Namespace) -> None:
    data = run_encode(load_config(args.config, args.overrides))
    print(f"latent cache: {data.train.directory}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*")
    sys.exit(report_errors(main, parser.parse_args()))
