"""Evaluate a distilled file: ``python pipelines/evaluate.py outputs/run/distilled.safetensors [--nets convnet,vgg11] [--config C] [key=value ...]``.

The same as `latentdistill evaluate ...` (and `python -m latentdistill evaluate ...`, which also works under
`accelerate launch -m` / `torchrun -m` with the installed package): this script only forwards its arguments.
"""

import sys

from latentdistill.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
