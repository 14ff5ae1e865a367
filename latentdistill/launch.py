"""How a command was launched (``torchrun``, ``accelerate launch`` or plainly), turned into ``Processes``.

A launcher's world size is always honoured or refused, never ignored: distill, run and evaluate join
the launch's processes (on CPUs too); the other verbs run in one process and refuse a launch of several.
A ``--mixed_precision`` given to ``accelerate launch`` must agree with config key ``precision``, which is
what the networks actually run in.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch

from latentdistill.config import RunConfig
from latentdistill.errors import LatentDistillError
from latentdistill.runtime import Processes


def world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def refuse_multi_process(verb: str) -> None:
    if world_size() > 1:
        raise LatentDistillError(f"'{verb}' runs in one process; this launch has {world_size()} (WORLD_SIZE): "
                                 "start it without torchrun / accelerate launch")


def launched_processes(config: RunConfig) -> Processes:
    """The launch's processes, with one Accelerator when there are several."""
    mixed = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if mixed not in ("no", config.precision):
        raise LatentDistillError(f"accelerate launch --mixed_precision {mixed} disagrees with config key 'precision' "
                                 f"({config.precision}): set precision={mixed if mixed == 'bf16' else 'bf16 or fp32'} "
                                 "or drop the flag (latentdistill supports fp32 and bf16)")
    if world_size() == 1:
        return Processes()
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    # The other processes wait while the main one builds a cache (minutes to hours on a large dataset):
    # a barrier must not time out before it does.
    patience = InitProcessGroupKwargs(timeout=timedelta(days=2))
    accelerator = Accelerator(cpu=cpu, mixed_precision="no", kwargs_handlers=[patience])  # precision is ours
    if accelerator.num_processes != world_size():
        raise LatentDistillError(f"the launch asks for {world_size()} processes (WORLD_SIZE) but only "
                                 f"{accelerator.num_processes} joined: check the launcher and config key 'device'")
    return Processes(accelerator)
