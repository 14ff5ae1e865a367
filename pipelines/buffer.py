"""Train expert trajectories for objective ``mtt``: ``python pipelines/buffer.py --config configs/cifar10_ipc1_mtt.yaml [key=value ...]``.

Same library call as ``latentdistill buffer``; finished experts in ``buffer.dir`` are kept and reused, an
interrupted expert resumes from its last epoch.

The same as `latentdistill buffer ...` (and `python -m latentdistill buffer ...`, which also works under
`accelerate launch -m` / `torchrun -m` with the installed package): this script only forwards its arguments.
"""

import sys

from latentdistill.cli import main

if __name__ == "__main__":
    sys.exit(main(["buffer", *sys.argv[1:]]))
