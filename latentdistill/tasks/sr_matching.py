"""What super-resolution's distillation is made of: the reconstruction criterion the objectives see, the
synthetic set's start, and the experts trained for matching on trained networks.

SR data has no classes; k-means pseudo-classes over the real patch latents stand in for them.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from latentdistill import nets
from latentdistill.data.super_resolution import dihedral, downsample
from latentdistill.distill.buffer import ExpertBuffer, load_buffer, open_buffer, record_epoch, resume_expert
from latentdistill.distill.synthetic import SyntheticSet
from latentdistill.errors import LatentDistillError
from latentdistill.runtime import iteration_seed


class Reconstruction:
    """The SR criterion: L1 between SR(down(x)) and x, and the SR network's features of down(x)."""

    def __init__(self, scale: int):
        self.scale = scale

    def loss(self, net, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return F.l1_loss(net(downsample(images, self.scale)).float(), images)

    def embed(self, net, images: torch.Tensor) -> torch.Tensor:
        return net.features(downsample(images, self.scale)).flatten(1)


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


def train_sr_experts(patches: torch.Tensor, directory: Path, meta: dict, criterion: Reconstruction, augment: bool,
                     device: torch.device, progress: bool = True) -> ExpertBuffer:
    """Train ``meta["experts"]`` SR networks (``meta["net"]``, Adam at ``meta["lr"]``) on the uint8 HR
    ``patches`` with the reconstruction loss and record their parameters after each epoch (one pass over the
    patches, each batch under a random flip/rotation when ``augment``). Finished experts are kept; an interrupted
    one resumes from its last epoch with its Adam moments, so its trajectory is the one it would have had."""
    for index in open_buffer(directory, meta):
        torch.manual_seed(iteration_seed(meta["seed"], 1_000_000 + index))
        expert = resume_expert(directory, index, nets.build(meta["net"], scale=meta["scale"], task="sr").to(device))
        parameters = list(expert.net.parameters())
        optimizer = torch.optim.Adam(parameters, lr=meta["lr"])
        if expert.momentum is not None:
            load_adam_state(optimizer, parameters, expert.momentum.to(device))
        batches = -(-len(patches) // meta["batch_size"])
        done = len(expert.rows) - 1
        bar = tqdm(total=meta["epochs"] * batches, initial=done * batches, unit="batch",
                   desc=f"expert {index + 1}/{meta['experts']}", disable=not progress)
        for epoch in range(done, meta["epochs"]):
            generator = torch.Generator().manual_seed(iteration_seed(meta["seed"], (index + 1) * 100_000 + epoch))
            for rows in torch.randperm(len(patches), generator=generator).split(meta["batch_size"]):
                batch = patches[rows].to(device).float() / 255
                if augment:
                    batch = dihedral(batch, bool(torch.randint(2, (1,), generator=generator)),
                                     int(torch.randint(4, (1,), generator=generator)))
                loss = criterion.loss(expert.net, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss.detach()):.4f}")
            record_epoch(directory, expert, parameters, epoch + 1 == meta["epochs"], adam_state(optimizer, parameters))
        bar.close()
    return load_buffer(directory)


def adam_state(optimizer: torch.optim.Adam, parameters: list[torch.Tensor]) -> torch.Tensor:
    """Adam's moments and step for ``parameters`` as one flat float32 tensor (what a partial expert file keeps)."""
    states = [optimizer.state[p] for p in parameters]
    return torch.cat([s["exp_avg"].reshape(-1) for s in states] + [s["exp_avg_sq"].reshape(-1) for s in states]
                     + [states[0]["step"].reshape(1).float()]).float().cpu()


def load_adam_state(optimizer: torch.optim.Adam, parameters: list[torch.Tensor], flat: torch.Tensor) -> None:
    """Put back what ``adam_state`` saved."""
    sizes = [p.numel() for p in parameters]
    if flat.numel() != 2 * sum(sizes) + 1:
        raise LatentDistillError(f"a partial expert file's optimiser state has {flat.numel()} values, not "
                                 f"{2 * sum(sizes) + 1}: delete the .partial file to retrain that expert")
    first, second = flat[: sum(sizes)].split(sizes), flat[sum(sizes) : 2 * sum(sizes)].split(sizes)
    for parameter, average, square in zip(parameters, first, second):
        optimizer.state[parameter] = {"step": flat[-1].clone().cpu(), "exp_avg": average.view_as(parameter).clone(),
                                      "exp_avg_sq": square.view_as(parameter).clone()}
