"""Distilling a super-resolution training set: synthetic HR patch latents, matched per pseudo-class.

SR data has no classes, so k-means over the real patch latents stands in for them (patches of one
cluster share texture and structure). The objectives are gradient matching and distribution matching
with the SR loss in place of cross-entropy: for an HR patch x, an SR network sees down(x) (torch's
differentiable bicubic) and is judged by L1(SR(down(x)), x). A fresh SR network each iteration.

The synthetic set is large (a percentage of the training patches), so each iteration decodes only a
batch of each class's synthetic latents (``sr.synthetic_batch``); over iterations every latent is
visited. Checkpoints and resume work as in the classification loop.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from latentdistill import nets
from latentdistill.config import RunConfig, config_to_dict
from latentdistill.data.super_resolution import downsample
from latentdistill.distill.checkpoint import CHECKPOINT_FILE, Checkpoint, load_checkpoint, save_checkpoint
from latentdistill.distill.gradient_matching import gradient_distance
from latentdistill.distill.loop import changed_section
from latentdistill.distill.synthetic import SyntheticSet
from latentdistill.errors import LatentDistillError
from latentdistill.runtime import autocast, iteration_seed


def sr_loss(net: nn.Module, hr: torch.Tensor, scale: int) -> torch.Tensor:
    return F.l1_loss(net(downsample(hr, scale)).float(), hr)


class SRGradientMatching:
    name = "gm"

    def loss(self, net: nn.Module, real: torch.Tensor, synthetic: torch.Tensor, scale: int) -> torch.Tensor:
        params = [p for p in net.parameters() if p.requires_grad]
        g_real = [g.detach() for g in torch.autograd.grad(sr_loss(net, real, scale), params)]
        g_syn = torch.autograd.grad(sr_loss(net, synthetic, scale), params, create_graph=True)
        return gradient_distance(g_real, list(g_syn))


class SRDistributionMatching:
    name = "dm"

    def loss(self, net: nn.Module, real: torch.Tensor, synthetic: torch.Tensor, scale: int) -> torch.Tensor:
        with torch.no_grad():
            real_mean = net.features(downsample(real, scale)).float().flatten(1).mean(0)
        syn_mean = net.features(downsample(synthetic, scale)).float().flatten(1).mean(0)
        return ((real_mean - syn_mean) ** 2).sum()


SR_OBJECTIVES = {"gm": SRGradientMatching, "dm": SRDistributionMatching}


def synthetic_counts(labels: torch.Tensor, classes: int, total: int) -> list[int]:
    """Split ``total`` synthetic patches over the pseudo-classes in proportion to their sizes (at least one
    each, largest remainders first), so the distilled set keeps the data's mix of textures."""
    sizes = torch.bincount(labels, minlength=classes).double()
    exact = sizes / sizes.sum() * total
    counts = exact.floor().long().clamp(min=1)
    for index in torch.argsort(exact - exact.floor(), descending=True).tolist():
        if int(counts.sum()) >= total:
            break
        counts[index] += 1
    return [min(int(c), int(s)) for c, s in zip(counts, sizes)]


def initial_sr_set(latents: torch.Tensor, labels: torch.Tensor, classes: int, total: int, seed: int) -> SyntheticSet:
    """Encoded real patches, drawn at random within each pseudo-class."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for label, count in enumerate(synthetic_counts(labels, classes, total)):
        candidates = torch.nonzero(labels == label).flatten()
        rows.append(candidates[torch.randperm(len(candidates), generator=generator)[:count]])
    rows = torch.cat(rows)
    return SyntheticSet(latents[rows].clone().float(), labels[rows].clone())


def distill_sr(
    config: RunConfig,
    patches: torch.Tensor,
    latents: torch.Tensor,
    pseudo_labels: torch.Tensor,
    autoencoder: nn.Module,
    run_dir: Path,
    device: torch.device,
    total: int,
    resume: bool = False,
    progress: bool = True,
) -> SyntheticSet:
    """Optimise ``total`` synthetic HR patch latents (``sr.budget`` of all training patches; ``patches`` may
    be a smaller pool) so that SR networks see in them what they see in the real patches; returns the
    final set (also in the checkpoint)."""
    settings, sr = config.distill, config.sr
    if settings.objective not in SR_OBJECTIVES:
        raise LatentDistillError(f"config key 'distill.objective': objective '{settings.objective}' has no SR form (task sr: {', '.join(SR_OBJECTIVES)})")
    objective = SR_OBJECTIVES[settings.objective]()
    classes = int(pseudo_labels.max()) + 1
    total = max(classes, total)
    if total > len(patches):
        raise LatentDistillError(f"the pool holds {len(patches)} patches, fewer than the {total} to distil (config keys 'sr.pool', 'sr.budget')")
    checkpoint_path = run_dir / CHECKPOINT_FILE
    resolved = config_to_dict(config)
    if checkpoint_path.exists() and not resume:
        raise LatentDistillError(f"{checkpoint_path} exists: pass --resume to continue that run, or choose another output_dir")
    synthetic, start_iteration, optimizer_state = initial_sr_set(latents, pseudo_labels, classes, total, config.seed), 0, None
    if resume and checkpoint_path.exists():
        saved = load_checkpoint(checkpoint_path)
        changed = changed_section(saved.config, resolved, ("seed", "task", "sr", "autoencoder", "distill", "precision"))
        if changed:
            raise LatentDistillError(f"cannot resume {checkpoint_path}: config section '{changed}' differs from the saved run")
        synthetic = SyntheticSet(saved.latents, saved.labels)
        start_iteration, optimizer_state = saved.iteration, saved.optimizer_state

    autoencoder = autoencoder.to(device)
    synthetic_latents = synthetic.latents.to(device).requires_grad_(True)
    labels = synthetic.labels
    if settings.optimizer == "adam":
        optimizer = torch.optim.Adam([synthetic_latents], lr=settings.lr)
    else:
        optimizer = torch.optim.SGD([synthetic_latents], lr=settings.lr, momentum=settings.momentum)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    real_rows = {c: torch.nonzero(pseudo_labels == c).flatten() for c in range(classes)}
    synthetic_rows = {c: torch.nonzero(labels == c).flatten() for c in range(classes)}

    log_path = run_dir / "distill_log.jsonl"
    bar = tqdm(range(start_iteration, settings.iterations), initial=start_iteration, total=settings.iterations,
               desc=f"distill sr {settings.objective} x{sr.scale}", disable=not progress)
    for iteration in bar:
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(iteration_seed(config.seed, iteration))
        torch.manual_seed(iteration_seed(config.seed, iteration))
        net = nets.build(sr.net, scale=sr.scale, task="sr").to(device)
        optimizer.zero_grad(set_to_none=False)
        total_loss = 0.0
        for c in range(classes):
            real = patches[real_rows[c][torch.randint(len(real_rows[c]), (settings.real_batch,), generator=generator)]]
            rows = synthetic_rows[c][torch.randperm(len(synthetic_rows[c]), generator=generator)[: sr.synthetic_batch]]
            with autocast(device, config.precision):
                synthetic_hr = autoencoder.decode(synthetic_latents[rows.to(device)]).float()
                loss = objective.loss(net, real.to(device).float() / 255, synthetic_hr, sr.scale)
            loss.backward()  # class by class: only this class's graph is held at once
            total_loss += float(loss.detach())
        optimizer.step()
        bar.set_postfix(loss=f"{total_loss:.4f}")
        done = iteration + 1
        with open(log_path, "a") as log:
            log.write(json.dumps({"iteration": done, "loss": total_loss, "seconds": time.perf_counter() - started}) + "\n")
        if done % settings.checkpoint_every == 0 or done == settings.iterations:
            save_checkpoint(checkpoint_path, Checkpoint(done, synthetic_latents, labels, optimizer.state_dict(), resolved))
    bar.close()
    return SyntheticSet(synthetic_latents.detach().cpu(), labels.cpu())
