"""Evaluate a distilled file: ``python pipelines/evaluate.py outputs/run/distilled.safetensors [key=value ...]``."""

import argparse
import sys

from latentdistill.errors import LatentDistillError
from latentdistill.workflows import run_evaluate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file")
    parser.add_argument("--config")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    try:
        run_evaluate(args.file, args.config, args.overrides)
    except LatentDistillError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
