"""ZCA whitening of the network input, as MTT, FTD, DATM and the kernel methods use on CIFAR.

Fitted once on the normalised training images (the validation rows left out), kept beside the latent
cache, and applied after the per-channel normalisation to every image a network sees: real and decoded
synthetic images in distillation, the experts' training data, and every network of an evaluation. The
transform is ``W = U diag(1 / sqrt(S + eps)) U^T`` of the covariance ``U S U^T`` of the flattened images,
applied as ``(x - mean) W``: the regularised ZCA of kornia's ``ZCAWhitening`` (eps 0.1 in MTT's code).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from latentdistill.errors import LatentDistillError
from latentdistill.io import atomic_save_file, read_safetensors

MAX_DIMENSION = 3 * 64 * 64  # a float64 covariance of 1.2 GB; beyond, whitening is not what the field does


@dataclass
class ZCA:
    mean: torch.Tensor  # (D,) float32, D = channels x height x width of the normalised images
    matrix: torch.Tensor  # (D, D) float32, symmetric
    eps: float

    @property
    def fingerprint(self) -> str:
        """A short hash of the transform, recorded in exports and reports: the same data gives the same bits."""
        digest = hashlib.sha256(self.mean.numpy().tobytes() + self.matrix.numpy().tobytes())
        return digest.hexdigest()[:16]


@torch.no_grad()
def fit_zca(images: torch.Tensor, normalize, eps: float, batch_size: int = 2000) -> ZCA:
    """Fit on uint8 images (N, 3, H, W) after ``normalize`` (per-channel mean/std), in float64 sums."""
    if len(images) < 2:
        raise LatentDistillError(f"config key 'data.zca': ZCA needs at least 2 training images, got {len(images)}")
    dimension = images[0].numel()
    if dimension > MAX_DIMENSION:
        raise LatentDistillError(f"config key 'data.zca': {tuple(images.shape[1:])} images have {dimension} values; ZCA's "
                                 f"{dimension} x {dimension} covariance is refused above {MAX_DIMENSION} values (64 px RGB)")
    total = torch.zeros(dimension, dtype=torch.float64)
    products = torch.zeros(dimension, dimension, dtype=torch.float64)
    for start in range(0, len(images), batch_size):
        flat = normalize(images[start : start + batch_size].float() / 255).flatten(1)
        flat = flat.double()
        total += flat.sum(0)
        products += flat.T @ flat
    count = len(images)
    mean = total / count
    covariance = (products - count * torch.outer(mean, mean)) / (count - 1)
    values, vectors = torch.linalg.eigh(covariance)
    matrix = (vectors * (values.clamp(min=0) + eps).rsqrt()) @ vectors.T
    return ZCA(mean.float(), matrix.float().contiguous(), eps)


def load_or_fit_zca(path: Path, images: torch.Tensor, normalize, eps: float, key: dict) -> ZCA:
    """The ZCA kept at ``path`` when it was fitted with the same ``key`` (data, rows, normalisation, eps);
    otherwise fit it and keep it there (atomically), so every run on this cache shares one transform."""
    if path.is_file():
        try:
            tensors, metadata = read_safetensors(path)
        except LatentDistillError:  # a damaged cache file only costs the fit again
            tensors, metadata = {}, {}
        if metadata.get("key") == _key_text(key) and {"mean", "matrix"} <= set(tensors):
            return ZCA(tensors["mean"], tensors["matrix"], eps)
    zca = fit_zca(images, normalize, eps)
    try:
        atomic_save_file({"mean": zca.mean, "matrix": zca.matrix}, path, metadata={"key": _key_text(key)})
    except LatentDistillError as error:  # a read-only shared cache must not stop the run: the fit is only not kept
        warnings.warn(f"ZCA not kept: {error}", stacklevel=2)
    return zca


def _key_text(key: dict) -> str:
    import json

    return json.dumps(key, sort_keys=True)
