"""Distill under Accelerate: ``accelerate launch pipelines/distill.py --config configs/quickstart.yaml [key=value ...]``.

With several processes, each matches a share of the classes and the latent gradients are summed, so
the result does not depend on the number of processes. Same library call as ``latentdistill distill``.

The same as `latentdistill distill ...` (and `python -m latentdistill distill ...`, which also works under
`accelerate launch -m` / `torchrun -m` with the installed package): this script only forwards its arguments.
"""

import sys

from latentdistill.cli import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
