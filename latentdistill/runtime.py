"""Process-level choices: device, threads, seeds, and the input normalisation every network sees."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from latentdistill.errors import LatentDistillError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LatentDistillError(f"config key 'device': unknown device '{name}' (auto | cpu | cuda | cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LatentDistillError(f"config key 'device' asks for '{name}' but no CUDA device is available")
    return device


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def iteration_seed(seed: int, iteration: int) -> int:
    """A distinct, reproducible seed per (run seed, iteration): what makes resumed runs bitwise equal."""
    return (seed * 1_000_003 + iteration * 7_919 + 12_345) % (2**63 - 1)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for network passes when ``precision == "bf16"``; a no-op for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Normalize(nn.Module):
    """Images in [0, 1] -> (x - mean) / std per channel, as the reference code feeds every network."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std
