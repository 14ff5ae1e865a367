"""latentdistill: latent dataset distillation with diffusion models.

Pipeline: data -> autoencoders -> priors -> distill -> export -> evaluate.
"""

from latentdistill.errors import LatentDistillError
from latentdistill.export import (
    DistilledDataset,
    load_distilled,
    read_distilled,
    write_distilled,
)

__version__ = "0.1.0"

__all__ = ["DistilledDataset", "LatentDistillError", "__version__", "load_distilled", "read_distilled", "write_distilled"]
