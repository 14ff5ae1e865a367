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

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from latentdistill import nets
from latentdistill.distill.classifier_training import ClassifierTraining, TrainingStream, member_parameters, sgd_epoch
from latentdistill.errors import LatentDistillError
from latentdistill.io import atomic_save_file, atomic_write_text, read_safetensors
from latentdistill.nets.stacked import StackedNetworks, can_stack
from latentdistill.run_folder import changed_key, describe_change
from latentdistill.runtime import iteration_seed

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
        tensors, _ = read_safetensors(self.files[index], "expert trajectory")
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


@dataclass(frozen=True)
class StartWindow:
    """The expert epochs a student may start from: ``[low, upper)``, the upper bound growing linearly from
    ``high`` to ``final_high`` over the first ``growth_iterations`` iterations (0: the whole run; ``final_high``
    0: no growth), reaching ``final_high`` at the last of them, as DATM's schedule (integer steps: a window
    that grows by one epoch over the whole run opens that epoch only at its end). A window whose upper bound is
    not above ``low`` starts at ``low``."""

    low: int
    high: int
    final_high: int = 0
    growth_iterations: int = 0

    def bounds(self, iteration: int, iterations: int) -> tuple[int, int]:
        high = self.high
        if self.final_high > self.high:
            span = self.growth_iterations or iterations
            high = min(self.final_high, self.high + (self.final_high - self.high) * (iteration + 1) // max(1, span))
        return self.low, max(high, self.low + 1)

    @property
    def last_start(self) -> int:
        return max(self.low, max(self.high, self.final_high) - 1)


def load_checked_buffer(directory: str | Path | None, expects: dict | None) -> ExpertBuffer:
    """The buffer an objective matches against, refused in one line when it is missing or its experts were
    trained as something else than what ``expects`` says (another network, data, scale...)."""
    if directory is None:
        raise LatentDistillError("this objective needs an expert buffer (config key 'buffer.dir'); this task has none")
    buffer = load_buffer(directory)
    for key, wanted in (expects or {}).items():
        if buffer.meta.get(key) != wanted:
            raise LatentDistillError(f"expert buffer {buffer.directory} was trained with another {key} "
                                     f"({buffer.meta.get(key)!r}, this run: {wanted!r})")
    return buffer


def check_start_window(settings) -> StartWindow:
    """The window of expert epochs ``distill.min_start_epoch`` .. ``max_start_epoch`` (growing to
    ``max_start_epoch_final``) name, refused in one line when it is empty or its growth keys contradict it."""
    if settings.max_start_epoch and settings.min_start_epoch >= settings.max_start_epoch:
        raise LatentDistillError(f"config key 'distill.min_start_epoch' ({settings.min_start_epoch}) must be below "
                                 f"'distill.max_start_epoch' ({settings.max_start_epoch}): the window would be empty")
    if 0 < settings.max_start_epoch_final <= settings.max_start_epoch:
        raise LatentDistillError(f"config key 'distill.max_start_epoch_final' ({settings.max_start_epoch_final}) must "
                                 f"exceed 'distill.max_start_epoch' ({settings.max_start_epoch}), or be 0 (a fixed window)")
    if settings.window_iterations and not settings.max_start_epoch_final:
        raise LatentDistillError("config key 'distill.window_iterations' is set but the window does not grow "
                                 "(set distill.max_start_epoch_final)")
    return StartWindow(settings.min_start_epoch, settings.max_start_epoch, settings.max_start_epoch_final,
                       settings.window_iterations)


class ExpertDraws:
    """Random rows of a buffer: a random expert at a random epoch of ``window``, each trajectory read once. The
    networks gm matches on and pm's student starts are drawn here."""

    def __init__(self, buffer: ExpertBuffer, window: StartWindow):
        self.buffer, self.window = buffer, window
        self.trajectories: dict[int, torch.Tensor] = {}

    def draw(self, net: nn.Module, generator: torch.Generator, iteration: int, iterations: int) -> torch.Tensor:
        """A flat parameter vector for ``net``'s architecture (the cached row itself: copy before training it)."""
        index = int(torch.randint(len(self.buffer.files), (1,), generator=generator))
        low, high = self.window.bounds(iteration, iterations)
        epoch = int(torch.randint(low, high, (1,), generator=generator))
        if index not in self.trajectories:
            self.trajectories[index] = self.buffer.trajectory(index)
        trajectory = self.trajectories[index]
        if trajectory.shape[1] != sum(p.numel() for p in net.parameters()):
            raise LatentDistillError(f"expert buffer {self.buffer.directory} was trained on another network than the one matched")
        return trajectory[epoch]


def expert_networks(setup) -> tuple[ExpertBuffer | None, StartWindow | None]:
    """For objectives that match on networks (gm, pm): with ``distill.matching_nets: experts`` the checked buffer
    and the window of epochs to draw a trained network from; ``(None, None)`` for fresh networks."""
    settings = setup.settings
    if settings.matching_nets != "experts":
        return None, None
    experts = load_checked_buffer(setup.buffer_dir, setup.buffer_expects)
    window = check_start_window(settings)
    if window.last_start > experts.epochs:
        raise LatentDistillError(f"config key 'distill.max_start_epoch' (or max_start_epoch_final) reaches epoch "
                                 f"{window.last_start}, past the {experts.epochs} epochs recorded in the buffer {experts.directory}")
    return experts, window


@dataclass
class _Expert:
    """One expert being trained: its index, network, trajectory so far and (when resumed) momentum."""

    index: int
    net: nn.Module
    rows: list[torch.Tensor]
    momentum: torch.Tensor | None = None


def _start_expert(directory: Path, index: int, meta: dict, num_classes: int, resolution: int, seed: int,
                  device: torch.device) -> _Expert:
    """A fresh expert from its own seed, or the state its partial file left."""
    torch.manual_seed(iteration_seed(seed, 1_000_000 + index))
    net = nets.build(meta["net"], num_classes=num_classes, resolution=resolution, width=meta["width"], depth=meta["depth"]).to(device)
    return resume_expert(directory, index, net)


def resume_expert(directory: Path, index: int, net: nn.Module) -> _Expert:
    """Expert ``index`` starting from ``net`` (freshly initialised), or from the last epoch its partial file
    recorded, with the optimiser state saved there (``momentum``)."""
    expert = _Expert(index, net, [flat_parameters(net)])
    partial = expert_path(directory, index, partial=True)
    if partial.exists():
        tensors, _ = read_safetensors(partial, "partial expert")
        expert.rows = list(tensors["trajectory"].unbind(0))
        with torch.no_grad():
            for parameter, value in zip(net.parameters(), unflatten(expert.rows[-1], parameter_layout(net)).values()):
                parameter.copy_(value)
        expert.momentum = tensors.get("momentum")
    return expert


def open_buffer(directory: Path, meta: dict) -> list[int]:
    """Create the buffer folder with ``meta``, or check that the one there was made with the same protocol
    (only the number of experts may change); the indices of the experts still to train."""
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
    return [index for index in range(int(meta["experts"])) if not expert_path(directory, index).exists()]


def record_epoch(directory: Path, expert: _Expert, parameters: list[torch.Tensor], final: bool,
                 state: torch.Tensor | None = None) -> None:
    """Append the expert's parameters after an epoch and save its trajectory atomically: the partial file
    (with the optimiser ``state`` to resume from) until ``final``, then the finished expert file."""
    expert.rows.append(torch.cat([p.detach().reshape(-1).float().cpu() for p in parameters]))
    tensors = {"trajectory": torch.stack(expert.rows)}
    if state is not None:
        tensors["momentum"] = state
    layout = json.dumps(parameter_layout(expert.net))
    atomic_save_file(tensors, expert_path(directory, expert.index, partial=not final), metadata={"layout": layout})
    if final and expert_path(directory, expert.index, partial=True).exists():
        expert_path(directory, expert.index, partial=True).unlink()


def train_experts(training: ClassifierTraining, directory: Path, meta: dict, progress: bool = True,
                  parallel: int = 1) -> ExpertBuffer:
    """Train ``meta["experts"]`` networks on ``training.images`` (uint8) with SGD and record their trajectories.

    ``meta`` holds the protocol (net, width, depth, epochs, lr, momentum, batch_size, ...); a folder
    that already holds a buffer must have been made with the same protocol, and its finished experts
    are kept. ``parallel`` experts train at once as one ``StackedNetworks`` (networks without batch norm or
    dropout), each with the seed, data order and augmentation it has when trained alone, so the files are the
    same up to floating-point rounding.
    """
    pending = open_buffer(directory, meta)
    resolution, parallel = training.images.shape[-1], max(1, parallel)
    on_device = dataclasses.replace(training, images=training.images.to(training.device),
                                    labels=training.labels.to(training.device))  # moved once, not per expert
    for start in range(0, len(pending), parallel):
        group = [_start_expert(directory, index, meta, training.num_classes, resolution, training.seed, training.device)
                 for index in pending[start : start + parallel]]
        # Experts resumed at different epochs (or with and without saved momentum), or networks that cannot be
        # stacked, train in smaller groups.
        if not can_stack(group[0].net):
            subgroups = [[expert] for expert in group]
        else:
            states = sorted({(len(e.rows), e.momentum is not None) for e in group})
            subgroups = [[e for e in group if (len(e.rows), e.momentum is not None) == state] for state in states]
        for subgroup in subgroups:
            _train_group(subgroup, on_device, directory, meta, progress)
    return load_buffer(directory)


def _train_group(experts: list[_Expert], training: ClassifierTraining, directory: Path, meta: dict, progress: bool) -> None:
    """Train experts that are at the same epoch together, saving each one's trajectory atomically after every
    epoch (``expert-NNN.partial.safetensors``, then ``expert-NNN.safetensors``)."""
    model = StackedNetworks([e.net for e in experts]) if len(experts) > 1 else experts[0].net
    if training.compile:
        model.compile()
    optimizer = torch.optim.SGD(model.parameters(), lr=meta["lr"], momentum=meta["momentum"], weight_decay=meta["weight_decay"])
    if all(e.momentum is not None for e in experts):
        saved = [list(unflatten(e.momentum, parameter_layout(experts[0].net)).values()) for e in experts]
        for position, parameter in enumerate(model.parameters()):
            value = saved[0][position] if len(experts) == 1 else torch.stack([m[position] for m in saved])
            optimizer.state[parameter]["momentum_buffer"] = value.clone().to(parameter.device)
    images, labels = training.images, training.labels
    epochs, done = int(meta["epochs"]), len(experts[0].rows) - 1
    batches = -(-len(images) // meta["batch_size"])
    names = ", ".join(str(e.index + 1) for e in experts)
    bar = tqdm(total=epochs * batches, initial=done * batches, desc=f"expert {names}/{meta['experts']}",
               disable=not progress, unit="batch")
    model.train()
    for epoch in range(done, epochs):
        streams = [TrainingStream(images, labels, torch.Generator().manual_seed(
            iteration_seed(training.seed, (e.index + 1) * 100_000 + epoch))) for e in experts]
        loss = sgd_epoch(model, optimizer, streams, meta["batch_size"], training.normalize, training.augment,
                         training.precision, on_batch=lambda: bar.update(1))
        bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss.mean()):.3f}")
        buffers = [optimizer.state[p].get("momentum_buffer") for p in model.parameters()]
        for member, expert in enumerate(experts):
            momentum = None
            if all(b is not None for b in buffers):
                momentum = torch.cat([(b if len(experts) == 1 else b[member]).reshape(-1).float().cpu() for b in buffers])
            record_epoch(directory, expert, member_parameters(model, member), epoch + 1 == epochs, momentum)
    bar.close()


def expert_weights(buffer: ExpertBuffer, net: nn.Module, epoch: int = -1) -> list[dict[str, torch.Tensor]]:
    """Each expert's parameters at ``epoch`` (default: its last) as ``functional_call`` weights for ``net``'s
    architecture, each trajectory read once."""
    layout = parameter_layout(net)
    size = sum(torch.Size(shape).numel() for _, shape in layout)
    weights = []
    for index in range(len(buffer.files)):
        trajectory = buffer.trajectory(index)
        if trajectory.shape[1] != size:
            raise LatentDistillError(f"expert buffer {buffer.directory} was trained on another network than distill.net")
        weights.append(unflatten(trajectory[epoch].clone(), layout))
    return weights
