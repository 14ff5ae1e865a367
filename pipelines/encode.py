"""Build the latent cache: ``python pipelines/encode.py --config configs/quickstart.yaml [key=value ...]``.

The same as `latentdistill encode ...` (and `python -m latentdistill encode ...`, which also works under
`accelerate launch -m` / `torchrun -m` with the installed package): this script only forwards its arguments.
"""

import sys

from latentdistill.cli import main

if __name__ == "__main__":
    sys.exit(main(["encode", *sys.argv[1:]]))
