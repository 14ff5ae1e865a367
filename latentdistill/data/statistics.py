"""``data.mean: auto`` / ``data.std: auto``: the per-channel statistics of the training split, computed once
from its cached images and kept beside the cache (``statistics.json``, keyed by the cache's fingerprint), so a
dataset other than CIFAR-10 is not normalised with CIFAR-10's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from latentdistill.io import atomic_write_text

STATISTICS_FILE = "statistics.json"


def channel_statistics(images: torch.Tensor, batch_size: int = 4096) -> tuple[list[float], list[float]]:
    """Mean and standard deviation per channel of uint8 images (N, 3, H, W), in [0, 1], summed in float64."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].double() / 255
        total += batch.sum(dim=(0, 2, 3))
        squares += (batch * batch).sum(dim=(0, 2, 3))
    count = max(1, len(images) * images.shape[-1] * images.shape[-2])
    mean = total / count
    std = (squares / count - mean * mean).clamp(min=1e-12).sqrt()
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def cached_statistics(directory: Path, images: torch.Tensor, fingerprint: str | None) -> tuple[list[float], list[float]]:
    """``channel_statistics`` of a cache's images, read from ``directory/statistics.json`` when it was computed for
    this fingerprint, else computed and written there (an unwritable folder only costs a recompute next time)."""
    path = directory / STATISTICS_FILE
    try:
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") == fingerprint and len(saved["mean"]) == len(saved["std"]) == 3:
            return [float(v) for v in saved["mean"]], [float(v) for v in saved["std"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    mean, std = channel_statistics(images)
    try:
        atomic_write_text(path, json.dumps({"fingerprint": fingerprint, "mean": mean, "std": std, "images": len(images)}))
    except OSError:
        pass
    return mean, std
