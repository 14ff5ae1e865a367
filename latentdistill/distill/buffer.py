"""Expert trajectories for trajectory matching (MTT): networks trained on the real data, their
parameters recorded after every epoch.

A buffer is a folder: ``meta.json`` (what trained the experts: network, data, protocol) and one
``expert-NNN.safetensors`` per expert holding ``trajectory``, a (epochs + 1, num_params) float32
tensor of flattened parameters (row 0 is the initialisation). An expert in progress lives in
``expert-NNN.partial.safetensors`` (its trajectory so far and its optimiser's momentum), rewritten
atomically after each epoch, so an interrupted ``latentdistill buffer`` resumes where it stopped and
finished experts are reused by every distillation that names the buffer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from latentdistill import nets
from latentdistill.distill.classifier_training import ClassifierTraining
from latentdistill.errors import LatentDistillError
from latentdistill.io import atomic_save_file, atomic_write_text, read_safetensors
from latentdistill.run_folder import changed_key, describe_change
from latentdistill.runtime import autocast, iteration_seed

META_FILE = "meta.json"


def expert_path(directory: Path, index: int, partial: bool = False) -> Path:
    return directory / f"expert-{index:03d}{'.partial' if partial else ''}.safetensors"


def flat_parameters(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in net.parameters()])


def parameter_layout(net: nn.Module) -> list[tuple[str, list[int]]]:
    return [(name, list(p.shape)) for name, p in net.named_parameters()]


def unflatten(vector: torch.Tensor, layout: list[tuple[str, list[int]]]) -> dict[str, torch.Tensor]:
    """A flat parameter vector as the ``{name: tensor}`` dict ``torch.func.functional_call`` takes."""
    params, offset = {}, 0
    for name, shape in layout:
        count = 1
        for size in shape:
            count *= size
        params[name] = vector[offset : offset + count].view(shape)
        offset += count
    return params


@dataclass
class ExpertBuffer:
    directory: Path
    meta: dict
    files: list[Path]

    @property
    def epochs(self) -> int:
        return int(self.meta["epochs"])

    def trajectory(self, index: int) -> torch.Tensor:
        tensors, _ = read_safetensors(self.files[index])
        if "trajectory" not in tensors:
            raise LatentDistillError(f"{self.files[index]} holds no 'trajectory' tensor")
        return tensors["trajectory"]


def load_buffer(directory: str | Path) -> ExpertBuffer:
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise LatentDistillError(f"no expert buffer at {directory} (no {META_FILE}): run `latentdistill buffer` first")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:
        raise LatentDistillError(f"{meta_path} is not valid JSON") from None
    files = [expert_path(directory, i) for i in range(int(meta.get("experts", 0)))]
    files = [f for f in files if f.is_file()]
    if not files:
        raise LatentDistillError(f"expert buffer {directory} holds no finished expert: run `latentdistill buffer` to train them")
    return ExpertBuffer(directory, meta, files)


def train_experts(training: ClassifierTraining, directory: Path, meta: dict, progress: bool = True) -> ExpertBuffer:
    """Train ``meta["experts"]`` networks on ``training.images`` (uint8) with SGD and record their trajectories.

    ``meta`` holds the protocol (net, width, depth, epochs, lr, momentum, batch_size, ...); a folder
    that already holds a buffer must have been made with the same protocol, and its finished experts
    are kept.

    Long on purpose: the training loop with its per-epoch atomic save and exact resume reads top to bottom.
    """
    images, labels, num_classes, normalize = training.images, training.labels, training.num_classes, training.normalize
    augment, seed, device, precision = training.augment, training.seed, training.device, training.precision
    meta_path = directory / META_FILE
    if meta_path.exists():
        try:
            saved = json.loads(meta_path.read_text())
        except ValueError:
            raise LatentDistillError(f"{meta_path} is not valid JSON: delete the buffer folder to retrain it") from None
        changed = changed_key(saved, meta, sorted(set(saved) | set(meta)), may_change=("experts",))
        if changed:
            raise LatentDistillError(f"expert buffer {directory} was trained with another {describe_change(changed, saved, meta)}: "
                                     "choose another buffer.dir")
    atomic_write_text(meta_path, json.dumps(meta, indent=2))  # creates the folder
    resolution = images.shape[-1]
    epochs = int(meta["epochs"])
    for index in range(int(meta["experts"])):
        final = expert_path(directory, index)
        if final.exists():
            continue
        torch.manual_seed(iteration_seed(seed, 1_000_000 + index))
        net = nets.build(meta["net"], num_classes=num_classes, resolution=resolution, width=meta["width"], depth=meta["depth"]).to(device)
        optimizer = torch.optim.SGD(net.parameters(), lr=meta["lr"], momentum=meta["momentum"], weight_decay=meta["weight_decay"])
        rows = [flat_parameters(net)]
        partial = expert_path(directory, index, partial=True)
        if partial.exists():
            tensors, _ = read_safetensors(partial)
            rows = list(tensors["trajectory"].unbind(0))
            with torch.no_grad():
                for parameter, value in zip(net.parameters(), unflatten(rows[-1], parameter_layout(net)).values()):
                    parameter.copy_(value)
            if "momentum" in tensors:
                momentum = unflatten(tensors["momentum"], parameter_layout(net))
                for parameter, buffer in zip(net.parameters(), momentum.values()):
                    optimizer.state[parameter]["momentum_buffer"] = buffer.clone().to(device)
        batches = -(-len(images) // meta["batch_size"])
        bar = tqdm(total=epochs * batches, initial=(len(rows) - 1) * batches, desc=f"expert {index + 1}/{meta['experts']}",
                   disable=not progress, unit="batch")
        for epoch in range(len(rows) - 1, epochs):
            generator = torch.Generator().manual_seed(iteration_seed(seed, (index + 1) * 100_000 + epoch))
            order = torch.randperm(len(images), generator=generator)
            net.train()
            for start in range(0, len(order), meta["batch_size"]):
                batch_rows = order[start : start + meta["batch_size"]]
                batch = normalize(images[batch_rows].to(device).float() / 255)
                if augment is not None:
                    batch = augment.apply(batch, augment.sample(len(batch_rows), generator))
                with autocast(device, precision):
                    loss = F.cross_entropy(net(batch), labels[batch_rows].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.float().backward()
                optimizer.step()
                bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss.detach()):.3f}")
            rows.append(flat_parameters(net))
            tensors = {"trajectory": torch.stack(rows)}
            buffers = [optimizer.state[p].get("momentum_buffer") for p in net.parameters()]
            if all(b is not None for b in buffers):
                tensors["momentum"] = torch.cat([b.reshape(-1).float().cpu() for b in buffers])
            atomic_save_file(tensors, partial if epoch + 1 < epochs else final,
                             metadata={"layout": json.dumps(parameter_layout(net))})
        bar.close()
        if final.exists() and partial.exists():
            partial.unlink()
    return load_buffer(directory)
