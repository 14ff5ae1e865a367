"""The distillation loop: generator -> augmentation -> objective -> step on the latents.

Read top to bottom: prepare the real images once, start (or resume) the synthetic latents, then for
each iteration draw a fresh network and let the objective run its matching steps on it (``gm``: DC's
outer/inner loop; ``dm``: one step; ``mtt``: one unrolled student). Under ``accelerate launch`` with
several processes, each process matches a share of the classes and the gradients are summed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from latentdistill import nets
from latentdistill.config import RunConfig, config_to_dict
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.buffer import buffer_directory, load_buffer
from latentdistill.distill.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from latentdistill.distill.distribution_matching import DistributionMatching
from latentdistill.distill.gradient_matching import GradientMatching, loop_lengths
from latentdistill.distill.objective import IterationContext
from latentdistill.distill.synthetic import SyntheticSet, initial_synthetic_set
from latentdistill.distill.trajectory_matching import TrajectoryMatching
from latentdistill.errors import LatentDistillError
from latentdistill.io import atomic_write_text
from latentdistill.runtime import Normalize, iteration_seed

OBJECTIVES = ("gm", "dm", "mtt")
# Config sections that must not change when a run is resumed; the run may be extended, though.
RESUME_KEYS = ("seed", "data", "autoencoder", "prior", "augment", "distill", "buffer", "precision")
RESUME_MAY_CHANGE = ("iterations", "checkpoint_every")


def build_objective(config: RunConfig, augment: DifferentiableAugment):
    """The objective named by ``distill.objective``, configured from the run config."""
    settings = config.distill
    if settings.objective == "gm":
        outer, inner = loop_lengths(settings.ipc, settings.outer_loop, settings.inner_loop)
        return GradientMatching(augment, config.precision, outer, inner, settings.inner_lr, settings.inner_batch)
    if settings.objective == "dm":
        return DistributionMatching(augment, config.precision)
    if settings.objective == "mtt":
        buffer = load_buffer(buffer_directory(config))
        expected = {"net": settings.net, "width": settings.net_width, "depth": settings.net_depth,
                    "resolution": config.data.resolution}
        differs = [k for k, v in expected.items() if buffer.meta.get(k) != v]
        if differs:
            raise LatentDistillError(
                f"expert buffer {buffer.directory} was trained with another {differs[0]} "
                f"({buffer.meta.get(differs[0])!r}, this run: {expected[differs[0]]!r})")
        return TrajectoryMatching(augment, buffer, config.precision, settings.syn_steps, settings.expert_epochs,
                                  settings.max_start_epoch, settings.syn_batch, settings.syn_lr,
                                  settings.syn_steps_per_checkpoint)
    raise LatentDistillError(f"config key 'distill.objective': unknown objective '{settings.objective}' (known: {', '.join(OBJECTIVES)})")


def changed_section(saved: dict, wanted: dict, keys: tuple[str, ...] = RESUME_KEYS) -> str | None:
    """The first config section (of ``keys``) in which a saved run and a resumed one differ."""
    for key in keys:
        old, new = saved.get(key), wanted.get(key)
        if key == "distill" and isinstance(old, dict) and isinstance(new, dict):
            old = {k: v for k, v in old.items() if k not in RESUME_MAY_CHANGE}
            new = {k: v for k, v in new.items() if k not in RESUME_MAY_CHANGE}
        if old != new:
            return key
    return None


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
    is_main = accelerator is None or accelerator.is_main_process
    process_index = 0 if accelerator is None else accelerator.process_index
    num_processes = 1 if accelerator is None else accelerator.num_processes
    normalize = Normalize(config.data.mean, config.data.std).to(device)
    augment = DifferentiableAugment(config.augment)
    objective = build_objective(config, augment)
    if settings.objective == "mtt" and num_processes > 1:
        raise LatentDistillError("objective 'mtt' runs in one process: its student sees every class at once")
    autoencoder = autoencoder.to(device)
    prior = prior.to(device)
    resolution = images.shape[-1]

    # Real images: normalised once, grouped by class; only the rows outside the validation split.
    # Trajectory matching compares with expert trajectories instead, and needs none.
    real_by_class = {}
    if settings.objective != "mtt":
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
    extra = {name: tensor.clone() for name, tensor in getattr(objective, "learnable", dict)().items()}
    if resume and checkpoint_path.exists():
        saved = load_checkpoint(checkpoint_path)
        changed = changed_section(saved.config, resolved)
        if changed:
            raise LatentDistillError(f"cannot resume {checkpoint_path}: config section '{changed}' differs from the saved run")
        synthetic = SyntheticSet(saved.latents, saved.labels, saved.embeddings)
        start_iteration, optimizer_state = saved.iteration, saved.optimizer_state
        extra.update({name: saved.extra[name] for name in extra if name in saved.extra})
    else:
        synthetic.embeddings = prior.initial_conditioning(synthetic.labels)

    # The learnable tensors: z always, the conditioning c when the prior takes one, and the objective's
    # own (MTT's learning rate), each group with its own learning rate.
    synthetic_latents = synthetic.latents.to(device).requires_grad_(True)
    synthetic_labels = synthetic.labels.to(device)
    groups = [{"params": [synthetic_latents], "lr": settings.lr}]
    synthetic_embeddings = None
    if synthetic.embeddings is not None:
        synthetic_embeddings = synthetic.embeddings.to(device).requires_grad_(settings.embedding_lr > 0)
        if settings.embedding_lr > 0:
            groups.append({"params": [synthetic_embeddings], "lr": settings.embedding_lr})
    extra = {name: tensor.to(device).requires_grad_(True) for name, tensor in extra.items()}
    for name, tensor in extra.items():
        setattr(objective, name, tensor)
        groups.append({"params": [tensor], "lr": settings.syn_lr_lr})
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

    def real_batches(generator: torch.Generator) -> dict[int, torch.Tensor]:
        # Every process draws every class's rows (the generators stay in step), gathers only its own.
        picks = {c: torch.randint(len(real_by_class[c]), (settings.real_batch,), generator=generator)
                 for c in range(num_classes)}
        return {c: real_by_class[c][picks[c].to(device)] for c in my_classes}

    def update(loss: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        if num_processes > 1:
            for tensor in learnable:
                tensor.grad = accelerator.reduce(tensor.grad, reduction="sum")
            loss = accelerator.reduce(loss.detach(), reduction="sum")
        optimizer.step()
        return float(loss.detach())

    def write_checkpoint(iteration: int) -> None:
        if is_main:
            save_checkpoint(
                checkpoint_path,
                Checkpoint(iteration, synthetic_latents, synthetic_labels, optimizer.state_dict(), resolved,
                           synthetic_embeddings, {name: tensor.detach() for name, tensor in extra.items()}),
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
        context = IterationContext(net, generator, generate, real_batches, update, synthetic_labels, num_classes,
                                   augment, device)
        losses = objective.iteration(context)
        mean_loss = sum(losses) / len(losses)
        bar.set_postfix(loss=f"{mean_loss:.3f}")
        done = iteration + 1
        if is_main:
            record = {"iteration": done, "loss": mean_loss, "seconds": time.perf_counter() - started}
            record.update({name: float(tensor.detach()) for name, tensor in extra.items() if tensor.numel() == 1})
            with open(log_path, "a") as log:
                log.write(json.dumps(record) + "\n")
        if done % settings.checkpoint_every == 0 or done == settings.iterations:
            write_checkpoint(done)
    bar.close()
    if start_iteration >= settings.iterations:
        write_checkpoint(settings.iterations)
    embeddings = None if synthetic_embeddings is None else synthetic_embeddings.detach().cpu()
    learned = {name: tensor.detach().cpu() for name, tensor in extra.items()}
    return SyntheticSet(synthetic_latents.detach().cpu(), synthetic_labels.cpu(), embeddings, learned)
