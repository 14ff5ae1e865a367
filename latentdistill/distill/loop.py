"""The distillation loop: generator -> augmentation -> objective -> step on the latents.

Read top to bottom: prepare the real images once, start (or resume) the synthetic latents, then for
each iteration draw a fresh network and alternate matching steps on the latents (outer loop) with
training that network on the synthetic images (inner loop), as in DC. Under ``accelerate launch`` with
several processes, each process matches a share of the classes and the latent gradients are summed.
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
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.checkpoint import CHECKPOINT_FILE, Checkpoint, load_checkpoint, save_checkpoint
from latentdistill.distill.gradient_matching import GradientMatching
from latentdistill.distill.synthetic import SyntheticSet, initial_synthetic_set
from latentdistill.errors import LatentDistillError
from latentdistill.io import atomic_write_text
from latentdistill.runtime import Normalize, iteration_seed

# DC's (outer, inner) loop lengths by images per class.
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
OBJECTIVES = {"gm": GradientMatching}
# Config sections that must not change when a run is resumed; the run may be extended, though.
RESUME_KEYS = ("seed", "data", "autoencoder", "prior", "augment", "distill", "precision")
RESUME_MAY_CHANGE = ("iterations", "checkpoint_every")


def _changed_section(saved: dict, wanted: dict) -> str | None:
    for key in RESUME_KEYS:
        old, new = saved.get(key), wanted.get(key)
        if key == "distill" and isinstance(old, dict) and isinstance(new, dict):
            old = {k: v for k, v in old.items() if k not in RESUME_MAY_CHANGE}
            new = {k: v for k, v in new.items() if k not in RESUME_MAY_CHANGE}
        if old != new:
            return key
    return None


def loop_lengths(ipc: int, outer: int, inner: int) -> tuple[int, int]:
    default_outer, default_inner = DC_LOOPS.get(ipc, DC_LOOPS[min(DC_LOOPS, key=lambda k: abs(k - ipc))])
    return outer or default_outer, inner or default_inner


def _truncate_log(path: Path, iteration: int) -> None:
    """Keep the log lines up to ``iteration``: later ones belong to work a killed run never saved."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["iteration"] <= iteration:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the kill
    atomic_write_text(path, "".join(kept))


def distill(
    config: RunConfig,
    latents: torch.Tensor,
    labels: torch.Tensor,
    images: torch.Tensor,
    train_rows: torch.Tensor,
    num_classes: int,
    autoencoder: nn.Module,
    prior: nn.Module,
    run_dir: Path,
    device: torch.device,
    resume: bool = False,
    accelerator=None,
    progress: bool = True,
) -> SyntheticSet:
    """Optimise the synthetic latents; returns the final set (also left in ``run_dir``'s checkpoint)."""
    settings = config.distill
    if settings.objective not in OBJECTIVES:
        raise LatentDistillError(f"config key 'distill.objective': unknown objective '{settings.objective}' (known: {', '.join(OBJECTIVES)})")
    is_main = accelerator is None or accelerator.is_main_process
    process_index = 0 if accelerator is None else accelerator.process_index
    num_processes = 1 if accelerator is None else accelerator.num_processes
    outer_loop, inner_loop = loop_lengths(settings.ipc, settings.outer_loop, settings.inner_loop)
    normalize = Normalize(config.data.mean, config.data.std).to(device)
    augment = DifferentiableAugment(config.augment)
    objective = OBJECTIVES[settings.objective](augment, precision=config.precision)
    autoencoder = autoencoder.to(device)
    prior = prior.to(device)
    resolution = images.shape[-1]

    # Real images: normalised once, grouped by class; only the rows outside the validation split.
    real_by_class = {}
    for label in range(num_classes):
        rows = train_rows[labels[train_rows] == label]
        real_by_class[label] = normalize(images[rows].to(device).float() / 255)
    my_classes = [c for c in range(num_classes) if c % num_processes == process_index]

    # Start, or resume, the synthetic set.
    checkpoint_path = run_dir / CHECKPOINT_FILE
    resolved = config_to_dict(config)
    if checkpoint_path.exists() and not resume:
        raise LatentDistillError(f"{checkpoint_path} exists: pass --resume to continue that run, or choose another output_dir")
    start_iteration = 0
    synthetic = initial_synthetic_set(latents, labels, train_rows, num_classes, settings.ipc, settings.init, config.seed)
    optimizer_state = None
    if resume and checkpoint_path.exists():
        saved = load_checkpoint(checkpoint_path)
        changed = _changed_section(saved.config, resolved)
        if changed:
            raise LatentDistillError(f"cannot resume {checkpoint_path}: config section '{changed}' differs from the saved run")
        synthetic = SyntheticSet(saved.latents, saved.labels, saved.embeddings)
        start_iteration, optimizer_state = saved.iteration, saved.optimizer_state
    else:
        synthetic.embeddings = prior.initial_conditioning(synthetic.labels)

    # The learnable tensors: z always, the conditioning c when the prior takes one (with its own lr).
    synthetic_latents = synthetic.latents.to(device).requires_grad_(True)
    synthetic_labels = synthetic.labels.to(device)
    groups = [{"params": [synthetic_latents], "lr": settings.lr}]
    synthetic_embeddings = None
    if synthetic.embeddings is not None:
        synthetic_embeddings = synthetic.embeddings.to(device).requires_grad_(settings.embedding_lr > 0)
        if settings.embedding_lr > 0:
            groups.append({"params": [synthetic_embeddings], "lr": settings.embedding_lr})
    learnable = [tensor for group in groups for tensor in group["params"]]
    if settings.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum)
    elif settings.optimizer == "adam":
        optimizer = torch.optim.Adam(groups, lr=settings.lr)
    else:
        raise LatentDistillError(f"config key 'distill.optimizer': unknown optimizer '{settings.optimizer}' (sgd | adam)")
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)

    def generate() -> torch.Tensor:
        return normalize(autoencoder.decode_checkpointed(prior(synthetic_latents, synthetic_embeddings), settings.decode_chunk))

    def write_checkpoint(iteration: int) -> None:
        if is_main:
            save_checkpoint(
                checkpoint_path,
                Checkpoint(iteration, synthetic_latents, synthetic_labels, optimizer.state_dict(), resolved,
                           synthetic_embeddings),
            )

    log_path = run_dir / "distill_log.jsonl"
    if is_main and log_path.exists():
        _truncate_log(log_path, start_iteration)
    bar = tqdm(range(start_iteration, settings.iterations), initial=start_iteration, total=settings.iterations,
               desc=f"distill {settings.objective} ipc={settings.ipc}", disable=not (progress and is_main))
    for iteration in bar:
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(iteration_seed(config.seed, iteration))
        torch.manual_seed(iteration_seed(config.seed, iteration))
        net = nets.build(settings.net, num_classes=num_classes, resolution=resolution,
                         width=settings.net_width, depth=settings.net_depth).to(device)
        net_optimizer = torch.optim.SGD(net.parameters(), lr=settings.inner_lr)
        losses = []
        for outer in range(outer_loop):
            # Every process draws every class's rows (the generators stay in step), gathers only its own.
            picks = {c: torch.randint(len(real_by_class[c]), (settings.real_batch,), generator=generator)
                     for c in range(num_classes)}
            real_batches = {c: real_by_class[c][picks[c].to(device)] for c in my_classes}
            augment_params = augment.sample(num_classes, generator)
            synthetic_images = generate()
            loss = objective.loss(net, real_batches, synthetic_images, synthetic_labels, augment_params)
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            if num_processes > 1:
                for tensor in learnable:
                    tensor.grad = accelerator.reduce(tensor.grad, reduction="sum")
                loss = accelerator.reduce(loss.detach(), reduction="sum")
            optimizer.step()
            losses.append(float(loss.detach()))
            if outer == outer_loop - 1:
                break
            # Inner loop: train the network on the (fixed) synthetic images, with per-image DSA.
            with torch.no_grad():
                training_images = generate()
            for _ in range(inner_loop):
                order = torch.randperm(len(training_images), generator=generator)
                for start in range(0, len(order), settings.inner_batch):
                    rows = order[start : start + settings.inner_batch].to(device)
                    batch = augment.apply(training_images[rows], augment.sample(len(rows), generator))
                    with objective.autocast(device):
                        net_loss = F.cross_entropy(net(batch), synthetic_labels[rows])
                    net_optimizer.zero_grad()
                    net_loss.float().backward()
                    net_optimizer.step()
        mean_loss = sum(losses) / len(losses)
        bar.set_postfix(loss=f"{mean_loss:.3f}")
        done = iteration + 1
        if is_main:
            with open(log_path, "a") as log:
                log.write(json.dumps({"iteration": done, "loss": mean_loss, "seconds": time.perf_counter() - started}) + "\n")
        if done % settings.checkpoint_every == 0 or done == settings.iterations:
            write_checkpoint(done)
    bar.close()
    if start_iteration >= settings.iterations:
        write_checkpoint(settings.iterations)
    embeddings = None if synthetic_embeddings is None else synthetic_embeddings.detach().cpu()
    return SyntheticSet(synthetic_latents.detach().cpu(), synthetic_labels.cpu(), embeddings)
