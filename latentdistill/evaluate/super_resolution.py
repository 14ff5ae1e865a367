"""Super-resolution metrics as the SR literature reports them, the test-set evaluation, pruning and model files
(how SR networks are trained for an evaluation: ``sr_training``).

PSNR and SSIM on the luma channel of ITU-R BT.601 (Y = 16 + 65.481 R + 128.553 G + 24.966 B for R, G, B
in [0, 1]; Y in 16..235), with ``scale`` pixels cropped from every border; PSNR with peak 255; SSIM with
an 11x11 Gaussian window of sigma 1.5 over the valid region (Wang et al. 2004, the reference code's
constants). The model's output is rounded to 8 bits before measuring, as saved images would be.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from latentdistill import nets
from latentdistill.data.super_resolution import bicubic_resize, make_lr, modcrop
from latentdistill.errors import LatentDistillError
from latentdistill.io import atomic_save_file, read_safetensors

Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in 0..255 (uint8 or float) -> (..., H, W) float64 Y in 16..235."""
    rgb = images.double() / 255.0
    weights = torch.tensor(Y_WEIGHTS, dtype=torch.float64).view(3, 1, 1)
    return 16.0 + (rgb * weights).sum(dim=-3)


def shave(image: torch.Tensor, border: int) -> torch.Tensor:
    return image[..., border : image.shape[-2] - border, border : image.shape[-1] - border] if border else image


def psnr_y(output: torch.Tensor, target: torch.Tensor, border: int) -> float:
    """PSNR (dB) between two RGB uint8 images on Y after cropping ``border``; inf for identical images."""
    mse = float(((shave(rgb_to_y(output), border) - shave(rgb_to_y(target), border)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(image: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The 2-D Gaussian window as two 1-D passes (the same sums, 5x fewer operations), valid region."""
    return F.conv2d(F.conv2d(image, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))


def ssim_y(output: torch.Tensor, target: torch.Tensor, border: int) -> float:
    """SSIM on Y after cropping ``border``: mean over the valid positions of an 11x11 Gaussian window."""
    x = shave(rgb_to_y(output), border)[None, None]
    y = shave(rgb_to_y(target), border)[None, None]
    g = _gaussian()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    sigma_x = _filter(x * x, g) - mu_x**2
    sigma_y = _filter(y * y, g) - mu_y**2
    sigma_xy = _filter(x * y, g) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2))
    return float(ssim_map.mean())


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    return bicubic_resize(lr, (lr.shape[-2] * scale, lr.shape[-1] * scale))


@torch.no_grad()
def super_resolve(model: torch.nn.Module, lr: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Run an SR network on one uint8 LR image; uint8 output (rounded, clamped)."""
    model.eval()
    output = model(lr[None].to(device).float() / 255.0)[0]
    return (output.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def evaluate_sr(model: torch.nn.Module | str, images: list[torch.Tensor], scale: int,
                device: torch.device | None = None) -> dict:
    """Mean PSNR/SSIM (Y, border ``scale``) over HR ``images``; ``model`` is an SR network or "bicubic"."""
    device = device or torch.device("cpu")
    psnrs, ssims = [], []
    for hr in images:
        hr = modcrop(hr, scale)
        lr = make_lr(hr, scale)
        output = bicubic_upscale(lr, scale) if model == "bicubic" else super_resolve(model, lr, device)
        psnrs.append(psnr_y(output, hr, scale))
        ssims.append(ssim_y(output, hr, scale))
    return {"psnr": statistics.fmean(psnrs), "ssim": statistics.fmean(ssims), "images": len(images)}


@torch.no_grad()
def patch_losses(model: torch.nn.Module, lr_patches: torch.Tensor, hr_patches: torch.Tensor, device: torch.device,
                 batch_size: int = 256) -> torch.Tensor:
    """Per-patch L1 of a trained model: how hard each training patch is (for loss-based pruning)."""
    model.eval()
    losses = []
    for start in range(0, len(hr_patches), batch_size):
        low = lr_patches[start : start + batch_size].to(device).float() / 255
        high = hr_patches[start : start + batch_size].to(device).float() / 255
        losses.append((model(low) - high).abs().mean(dim=(1, 2, 3)).cpu())
    return torch.cat(losses)


def pruned_subset(losses: torch.Tensor, count: int, drop: float) -> torch.Tensor:
    """Moser et al.'s SR pruning: sort by loss, drop the hardest ``drop`` fraction (likely noise), keep the
    next hardest ``count`` patches."""
    order = torch.argsort(losses, descending=True)
    skip = int(round(drop * len(losses)))
    return order[skip : skip + count]


# --- trained SR models as files ---------------------------------------------------------------


def save_sr_model(path: str | Path, model: torch.nn.Module, net: str, scale: int, extra: dict | None = None) -> None:
    metadata = {"net": net, "scale": str(scale), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    atomic_save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, Path(path), metadata=metadata)


def load_sr_model(path: str | Path) -> tuple[torch.nn.Module, int]:
    """A model saved by ``save_sr_model``; one-line errors for files that are not one."""
    tensors, metadata = read_safetensors(Path(path))
    if "net" not in metadata or "scale" not in metadata:
        raise LatentDistillError(f"{path} is not a latentdistill SR model (no 'net'/'scale' in its metadata)")
    scale = int(metadata["scale"])
    model = nets.build(metadata["net"], scale=scale, task="sr")
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise LatentDistillError(f"{path}: weights do not fit network '{metadata['net']}' x{scale} ({str(error).splitlines()[0]})") from None
    return model, scale


def summarize_sr(values: dict[str, list[float]]) -> dict:
    """Mean ± std (over runs) of each metric."""
    out = {}
    for metric, numbers in values.items():
        out[metric] = {"mean": round(statistics.fmean(numbers), 4 if metric == "ssim" else 3),
                       "std": round(statistics.stdev(numbers), 4 if metric == "ssim" else 3) if len(numbers) > 1 else 0.0,
                       "runs": [round(v, 4) for v in numbers]}
    return out


def set_row(metadata: dict) -> tuple[str, str]:
    """The row an evaluated SR set takes, and what the reports call it: "distilled" only for a set that took
    matching steps; a set that took none is the pool it was drawn from passed through the autoencoder."""
    steps, pool = metadata.get("distill_iterations"), metadata.get("pool", 1.0)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        return "set", "the evaluated set (matching steps not recorded)"
    if steps > 0:
        return "distilled", f"distilled ({steps} matching steps)"
    pool = "pruned pool" if isinstance(pool, (int, float)) and pool < 1 else "random patches"
    return "pool", f"{pool} through the autoencoder (zero matching steps)"


def sr_table(report: dict) -> str:
    """One row per training set: mean ± std PSNR / SSIM on each test set."""
    tests = list(next(iter(report["results"].values())))
    protocol = report.get("protocol", {}).get("name", "unnamed")  # reports before issue 15 named none
    header = [f"x{report['scale']} {report['net']} ({protocol} protocol)", "patches"] + [f"{t} PSNR / SSIM" for t in tests]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, per_test in report["results"].items():
        cells = [report.get("labels", {}).get(name, name), str(report["patches"].get(name, ""))]
        for test in tests:
            r = per_test[test]
            cells.append(f"{r['psnr']['mean']:.2f} ± {r['psnr']['std']:.2f} / {r['ssim']['mean']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
