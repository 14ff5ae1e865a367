"""The one distillation loop, for every task: generator -> objective -> step on the latents.

Read top to bottom: start (or resume) the synthetic latents, then for each iteration draw a fresh
network and let the objective run its matching steps on it (``gm``: DC's outer/inner loop; ``dm``: one
step; ``mtt``: one unrolled student). What differs between tasks arrives as a ``MatchingProblem``:
the real data per class (classes, or k-means pseudo-classes of SR patches), the start, the network to
match through and the loss it trains on. Under ``accelerate launch`` / ``torchrun`` with several
processes, each process matches a share of the classes and the gradients are summed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from latentdistill.config import DistillConfig
from latentdistill.distill.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from latentdistill.distill.objective import Criterion, IterationContext
from latentdistill.distill.synthetic import ImageGenerator, SyntheticSet
from latentdistill.errors import LatentDistillError
from latentdistill.run_folder import RunFolder
from latentdistill.runtime import Processes, iteration_seed


@dataclass
class MatchingProblem:
    """What a task gives the loop."""

    num_classes: int  # classes, or pseudo-classes
    real_by_class: dict[int, torch.Tensor]  # per class, the stored real images a batch is drawn from (mtt: none)
    prepare_real: Callable[[torch.Tensor], torch.Tensor]  # a drawn batch -> network input, on the device
    start: SyntheticSet  # the synthetic set before the first iteration (labels fixed from here on)
    matching_network: Callable[[], nn.Module]  # a fresh network (the loop seeds torch first)
    criterion: Criterion  # the task's loss and features
    normalize: Callable[[torch.Tensor], torch.Tensor]  # decoded images in [0, 1] -> network input
    synthetic_batch: int = 0  # synthetic images per class in one matching step; 0: all of them


class Diverged(LatentDistillError):
    """The loss or the latents became non-finite: the run stops, its last good checkpoint kept."""


def _optimizer(settings: DistillConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(groups, lr=settings.lr)
    return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum)


def distill(
    problem: MatchingProblem,
    objective,
    settings: DistillConfig,
    generator: ImageGenerator,
    folder: RunFolder,
    resolved_config: dict,
    seed: int,
    device: torch.device,
    processes: Processes | None = None,
    resume: bool = False,
    progress: bool = True,
    on_snapshot: Callable[[int, SyntheticSet], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> SyntheticSet:
    """Optimise the synthetic latents; returns the final set (also left in the folder's checkpoint).

    ``on_snapshot(iteration, set)`` is called (main process) every ``settings.snapshot_every`` iterations before
    the last, for the accuracy-vs-iteration curve.

    Long on purpose: it is the whole loop (start or resume, the learnable tensors, one iteration, checkpoints,
    the divergence stop), read top to bottom as in accelerate's examples."""
    processes = processes or Processes()
    num_classes = problem.num_classes
    my_classes = [c for c in range(num_classes) if c % processes.count == processes.index]
    generator = generator.to(device)

    # Start, or resume, the synthetic set.
    synthetic, start_iteration, optimizer_state = problem.start, 0, None
    extra = {name: tensor.clone() for name, tensor in getattr(objective, "learnable", dict)().items()}
    if resume and folder.checkpoint.exists():
        saved = load_checkpoint(folder.checkpoint)
        if (saved.label_logits is None) != (synthetic.label_logits is None):
            raise LatentDistillError(f"{folder.checkpoint} was written {'without' if saved.label_logits is None else 'with'} "
                                     "learned labels (config key 'distill.learn_labels'): resume with the same setting")
        synthetic = SyntheticSet(saved.latents, saved.labels, saved.embeddings, label_logits=saved.label_logits)
        start_iteration, optimizer_state = saved.iteration, saved.optimizer_state
        extra.update({name: saved.extra[name] for name in extra if name in saved.extra})
    else:
        synthetic.embeddings = generator.prior.initial_conditioning(synthetic.labels)

    # The learnable tensors: z always, the conditioning c when the prior takes one, the objective's own (MTT's
    # learning rate) and the soft labels' logits when they are learned, each group with its own learning rate.
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
    label_logits = None
    if synthetic.label_logits is not None:
        label_logits = synthetic.label_logits.to(device).float().requires_grad_(True)
        groups.append({"params": [label_logits], "lr": settings.label_lr})
    learnable = [tensor for group in groups for tensor in group["params"]]
    optimizer = _optimizer(settings, groups)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    synthetic_rows = {c: torch.nonzero(synthetic_labels == c).flatten() for c in range(num_classes)}

    def decode(rows: torch.Tensor | None = None) -> torch.Tensor:
        latents = synthetic_latents if rows is None else synthetic_latents[rows]
        embeddings = synthetic_embeddings if rows is None or synthetic_embeddings is None else synthetic_embeddings[rows]
        return problem.normalize(generator(latents, embeddings, settings.decode_chunk))

    def real_batches(stream: torch.Generator) -> dict[int, torch.Tensor]:
        # Every process draws every class's rows (the streams stay in step), gathers only its own.
        picks = {c: torch.randint(len(problem.real_by_class[c]), (settings.real_batch,), generator=stream)
                 for c in range(num_classes)}
        return {c: problem.prepare_real(problem.real_by_class[c][picks[c].to(problem.real_by_class[c].device)])
                for c in my_classes}

    def synthetic_batches(stream: torch.Generator) -> dict[int, torch.Tensor]:
        if not problem.synthetic_batch:
            images = decode()
            return {c: images[synthetic_labels == c] for c in my_classes}
        picks = {c: rows[torch.randperm(len(rows), generator=stream)[: problem.synthetic_batch].to(device)]
                 for c, rows in synthetic_rows.items()}
        return {c: decode(picks[c]) for c in my_classes}

    last_saved = start_iteration if resume and folder.checkpoint.exists() else None

    def update(loss: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        if processes.count > 1:
            for tensor in learnable:
                tensor.grad = processes.sum(tensor.grad)
            loss = processes.sum(loss.detach())
        value = float(loss.detach())
        if not math.isfinite(value) or not all(t.grad is None or bool(torch.isfinite(t.grad).all()) for t in learnable):
            raise Diverged(diverged_message(f"the loss is {value}"))
        optimizer.step()
        if not all(bool(torch.isfinite(t).all()) for t in learnable):
            raise Diverged(diverged_message("the latents became non-finite"))
        return value

    def diverged_message(what: str) -> str:
        kept = f"the checkpoint of iteration {last_saved} in {folder.path} is kept" if last_saved else "no checkpoint was written"
        return (f"distillation diverged at iteration {iteration + 1}: {what}; {kept} and nothing was exported "
                "(check the data, or lower distill.lr and start again in a new output_dir)")

    def write_checkpoint(done: int) -> None:
        nonlocal last_saved
        if processes.is_main:
            save_checkpoint(folder.checkpoint, Checkpoint(
                done, synthetic_latents, synthetic_labels, optimizer.state_dict(), resolved_config, synthetic_embeddings,
                {name: tensor.detach() for name, tensor in extra.items()}, label_logits))
        last_saved = done

    def current() -> SyntheticSet:
        embeddings = None if synthetic_embeddings is None else synthetic_embeddings.detach().cpu()
        learned = {name: tensor.detach().cpu() for name, tensor in extra.items()}
        logits = None if label_logits is None else label_logits.detach().cpu()
        return SyntheticSet(synthetic_latents.detach().cpu(), synthetic_labels.cpu(), embeddings, learned, logits)

    if processes.is_main:
        folder.truncate_log(start_iteration)
    bar = tqdm(range(start_iteration, settings.iterations), initial=start_iteration, total=settings.iterations,
               desc=f"distill {settings.objective}", disable=not (progress and processes.is_main))
    iteration = start_iteration
    if on_snapshot and processes.is_main and start_iteration == 0:
        on_snapshot(0, current())  # the start, before any step
    for iteration in bar:
        started = time.perf_counter()
        stream = torch.Generator().manual_seed(iteration_seed(seed, iteration))
        torch.manual_seed(iteration_seed(seed, iteration))
        net = problem.matching_network().to(device)
        targets = synthetic_labels if label_logits is None else label_logits.softmax(dim=1)
        context = IterationContext(net, stream, decode, real_batches, synthetic_batches, update, synthetic_labels,
                                   num_classes, device, targets, iteration, settings.iterations)
        losses = objective.iteration(context)
        mean_loss = sum(losses) / len(losses)
        bar.set_postfix(loss=f"{mean_loss:.4g}")
        done = iteration + 1
        if processes.is_main:
            record = {"iteration": done, "loss": mean_loss, "seconds": time.perf_counter() - started}
            record.update({name: float(tensor.detach()) for name, tensor in extra.items() if tensor.numel() == 1})
            folder.append_log(record)
            if on_record:
                on_record(record)  # e.g. the trackers of ``log_with``
        if done % settings.checkpoint_every == 0 or done == settings.iterations:
            write_checkpoint(done)
        if on_snapshot and processes.is_main and settings.snapshot_every and done % settings.snapshot_every == 0 \
                and done < settings.iterations:
            on_snapshot(done, current())
    bar.close()
    if start_iteration >= settings.iterations:
        write_checkpoint(settings.iterations)
    return current()
