"""Distillation checkpoints: the synthetic latents, the optimizer's state and the iteration, in one
safetensors file written atomically.

Every source of randomness in an iteration is seeded from (seed, iteration), so the state saved here
is all a resumed run needs to continue bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from latentdistill.errors import LatentDistillError
from latentdistill.io import atomic_save_file, read_safetensors

CHECKPOINT_FILE = "checkpoint.safetensors"


@dataclass
class Checkpoint:
    iteration: int
    latents: torch.Tensor
    labels: torch.Tensor
    optimizer_state: dict
    config: dict
    embeddings: torch.Tensor | None = None  # the learnable conditioning of prior "diffusion"
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # the objective's learnable tensors


def optimizer_tensors(state: dict, prefix: str = "optimizer.") -> tuple[dict[str, torch.Tensor], str]:
    """An optimizer's state dict as flat tensors plus its param groups as JSON (no pickle)."""
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"{prefix}{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, json.dumps(state["param_groups"])


def optimizer_state(tensors: dict[str, torch.Tensor], groups: str, prefix: str = "optimizer.") -> dict:
    """The inverse of ``optimizer_tensors``."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, name = key[len(prefix):].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": json.loads(groups)}


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    tensors = {"latents": checkpoint.latents.detach().cpu().contiguous(), "labels": checkpoint.labels.cpu()}
    if checkpoint.embeddings is not None:
        tensors["embeddings"] = checkpoint.embeddings.detach().cpu().contiguous()
    for name, tensor in checkpoint.extra.items():
        tensors[f"objective.{name}"] = tensor.detach().cpu().contiguous()
    state, groups = optimizer_tensors(checkpoint.optimizer_state)
    tensors.update(state)
    metadata = {"iteration": str(checkpoint.iteration), "optimizer_param_groups": groups,
                "config": json.dumps(checkpoint.config)}
    atomic_save_file(tensors, path, metadata=metadata)


def load_checkpoint(path: Path) -> Checkpoint:
    tensors, metadata = read_safetensors(path)
    missing = [k for k in ("iteration", "optimizer_param_groups", "config") if k not in metadata]
    if missing or "latents" not in tensors or "labels" not in tensors:
        raise LatentDistillError(f"{path} is not a latentdistill checkpoint (missing {missing or ['latents/labels']})")
    return Checkpoint(
        int(metadata["iteration"]), tensors["latents"], tensors["labels"],
        optimizer_state(tensors, metadata["optimizer_param_groups"]), json.loads(metadata["config"]),
        tensors.get("embeddings"),
        {key[len("objective."):]: value for key, value in tensors.items() if key.startswith("objective.")},
    )
