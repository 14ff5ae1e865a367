"""Train a latent diffusion prior: ``python pipelines/train_prior.py --config configs/prior_cifar10.yaml [key=value ...]``.

Same library call as ``latentdistill train-prior``; the output folder is what prior ``diffusion`` loads.

The same as `latentdistill train-prior ...` (and `python -m latentdistill train-prior ...`, which also works under
`accelerate launch -m` / `torchrun -m` with the installed package): this script only forwards its arguments.
"""

import sys

from latentdistill.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-prior", *sys.argv[1:]]))
