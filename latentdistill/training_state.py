"""Training state as safetensors: an optimizer's state dict as flat tensors plus JSON, no pickle.

Shared by the distillation checkpoints and the prior trainer's, so it lives below both.
"""

from __future__ import annotations

import json

import torch


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
