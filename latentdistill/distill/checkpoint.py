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
from latentdistill.training_state import optimizer_state, optimizer_tensors


@dataclass
class Checkpoint:
    iteration: int
    latents: torch.Tensor
    labels: torch.Tensor
    optimizer_state: dict
    config: dict
    embeddings: torch.Tensor | None = None  # the learnable conditioning of prior "diffusion"
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # the objective's learnable tensors
    label_logits: torch.Tensor | None = None  # the learned soft labels (distill.learn_labels)


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    tensors = {"latents": checkpoint.latents.detach().cpu().contiguous(), "labels": checkpoint.labels.cpu()}
    if checkpoint.embeddings is not None:
        tensors["embeddings"] = checkpoint.embeddings.detach().cpu().contiguous()
    if checkpoint.label_logits is not None:
        tensors["label_logits"] = checkpoint.label_logits.detach().cpu().contiguous()
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
        tensors.get("label_logits"),
    )
