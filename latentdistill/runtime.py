"""Process-level choices: device, threads, seeds, and the input normalisation every network sees."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

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
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise LatentDistillError(f"config key 'device' asks for '{name}' but this machine has {torch.cuda.device_count()} CUDA devices")
    if device.type not in ("cpu", "cuda"):
        raise LatentDistillError(f"config key 'device': '{name}' is not supported (auto | cpu | cuda | cuda:N)")
    return device


def cpu_emulates_bf16() -> bool:
    """Whether this CPU lacks native bf16 (AVX512-BF16 or AMX): there bf16 autocast is emulated, many times
    slower than fp32, where on CPUs with it bf16 is about 2x faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # not Linux: no way to tell, no note
    return "avx512_bf16" not in flags and "amx_bf16" not in flags


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def iteration_seed(seed: int, iteration: int) -> int:
    """A distinct, reproducible seed per (run seed, iteration): what makes resumed runs bitwise equal."""
    return (seed * 1_000_003 + iteration * 7_919 + 12_345) % (2**63 - 1)


def use_batched(setting: bool | str, device: torch.device) -> bool:
    """Whether to take a batched (``vmap``) path: ``true``/``false`` as set, ``auto`` on CUDA only. On a CPU
    the vmapped convolutions run slower than the per-class or per-network loop (benchmarks/speed.py
    measures both); on a GPU the loops are launch-bound and batching is what makes them fast."""
    if setting == "auto":
        return device.type == "cuda"
    return bool(setting)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for network passes when ``precision == "bf16"``; a no-op for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Per-channel statistics by name: the values the field's code normalises each dataset with (DC/DM/MTT/DATM
# for CIFAR; torchvision's for ImageNet), so ``data.mean``/``data.std`` and a set's ``--normalization`` name them.
STATISTICS = {
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]),
    "cifar100": ([0.5071, 0.4866, 0.4409], [0.2673, 0.2564, 0.2762]),
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "unit": ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),  # no normalisation: images in [0, 1]
}


def named_statistics(text: str) -> tuple[list[float], list[float]]:
    """``(mean, std)`` from a name in ``STATISTICS`` or ``MEAN/STD`` written as two comma lists."""
    if text in STATISTICS:
        return STATISTICS[text]
    try:
        mean, std = ([float(value) for value in part.split(",")] for part in text.split("/"))
    except ValueError:
        raise LatentDistillError(f"unknown normalisation '{text}' (known: {', '.join(STATISTICS)}, or MEAN/STD such as "
                                 "0.5,0.5,0.5/0.5,0.5,0.5)") from None
    if len(mean) != 3 or len(std) != 3 or not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise LatentDistillError(f"normalisation '{text}' needs 3 finite means and 3 positive stds")
    return mean, std


class Normalize(nn.Module):
    """Images in [0, 1] -> (x - mean) / std per channel, as the reference code feeds every network; then,
    with ``whitening`` (the ``(mean, matrix)`` of ``latentdistill.data.zca``), ZCA whitening. Everything a
    network's input goes through, in one module, so no path can apply one step and forget the other."""

    def __init__(self, mean: list[float], std: list[float], whitening: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.whitened = whitening is not None
        if whitening is not None:
            self.register_buffer("zca_mean", whitening[0].float())
            self.register_buffer("zca_matrix", whitening[1].float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        normalized = (images - self.mean) / self.std
        if not self.whitened:
            return normalized
        flat = normalized.flatten(1)
        return ((flat - self.zca_mean.to(flat.dtype)) @ self.zca_matrix.to(flat.dtype)).view_as(normalized)


class Processes:
    """The processes of one launch (``accelerate launch`` / ``torchrun``), or just this one: who is the
    main process, which share of the classes is this process's, and the sums across processes."""

    def __init__(self, accelerator=None):
        self.accelerator = accelerator

    @property
    def count(self) -> int:
        return 1 if self.accelerator is None else self.accelerator.num_processes

    @property
    def index(self) -> int:
        return 0 if self.accelerator is None else self.accelerator.process_index

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.count == 1 else self.accelerator.reduce(tensor, reduction="sum")

    def wait(self) -> None:
        if self.count > 1:
            self.accelerator.wait_for_everyone()

    def main_first(self):
        """The main process runs the block first (e.g. builds a cache), then the others."""
        return contextlib.nullcontext() if self.accelerator is None else self.accelerator.main_process_first()
