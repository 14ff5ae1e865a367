"""Distillation checkpoints: the synthetic latents, the optimizer's state and the iteration, in one
safetensors file written atomically.

Every source of randomness in an iteration is seeded from (seed, iteration), so the state saved here
is all a resumed run needs to continue bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from latentdistill.errors import LatentDistillError
from latentdistill.io import atomic_save_file

CHECKPOINT_FILE = "checkpoint.safetensors"


@dataclass
class Checkpoint:
    iteration: int
    latents: torch.Tensor
    labels: torch.Tensor
    optimizer_state: dict
    config: dict


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    tensors = {"latents": checkpoint.latents.detach().cpu().contiguous(), "labels": checkpoint.labels.cpu()}
    groups = checkpoint.optimizer_state["param_groups"]
    for index, state in checkpoint.optimizer_state["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    metadata = {
        "iteration": str(checkpoint.iteration),
        "optimizer_param_groups": json.dumps(groups),
        "config": json.dumps(checkpoint.config),
    }
    atomic_save_file(tensors, path, metadata=metadata)


def load_checkpoint(path: Path) -> Checkpoint:
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise LatentDistillError(f"checkpoint {path} is unreadable ({str(error).splitlines()[0]})") from None
    missing = [k for k in ("iteration", "optimizer_param_groups", "config") if k not in metadata]
    if missing or "latents" not in tensors or "labels" not in tensors:
        raise LatentDistillError(f"{path} is not a latentdistill checkpoint (missing {missing or ['latents/labels']})")
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer_state = {"state": state, "param_groups": json.loads(metadata["optimizer_param_groups"])}
    return Checkpoint(
        int(metadata["iteration"]), tensors["latents"], tensors["labels"], optimizer_state, json.loads(metadata["config"])
    )
