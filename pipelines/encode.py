"""Build the latent cache: ``python pipelines/encode.py --config configs/quickstart.yaml [key=value ...]``."""

import argparse
import sys

from latentdistill.config import load_config
from latentdistill.errors import LatentDistillError
from latentdistill.workflows import run_encode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    try:
        data = run_encode(load_config(args.config, args.overrides))
        print(f"latent cache: {data.train.directory}")
    except LatentDistillError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
