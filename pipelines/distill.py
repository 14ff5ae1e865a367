"""Distill under Accelerate: ``accelerate launch pipelines/distill.py --config configs/quickstart.yaml [key=value ...]``.

With several processes, each matches a share of the classes and the latent gradients are summed, so
the result does not depend on the number of processes. Same library call as ``latentdistill distill``.
"""

import argparse
import sys

from accelerate import Accelerator

from latentdistill.cli import report_errors
from latentdistill.config import load_config
from latentdistill.workflows import run_distill


def main(args: argparse.Namespace) -> None:
    config = load_config(args.config, args.overrides)
    accelerator = Accelerator(cpu=config.device == "cpu")
    output = run_distill(config, resume=args.resume, accelerator=accelerator)
    accelerator.print(f"distilled set: {output}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("overrides", nargs="*")
    sys.exit(report_errors(main, parser.parse_args()))
