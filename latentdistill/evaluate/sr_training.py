"""How an SR evaluation trains its networks: one named protocol (``sr.protocol``), run by run, resumable.

A converged protocol is hours of a CPU per network, so a training saves its whole state (weights, Adam's
moments, the batch generator) every minute and continues from it bit for bit, and an evaluation keeps each
finished run's scores: interrupted, it loses at most a minute.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from latentdistill import nets
from latentdistill.config import SRProtocol, SuperResolutionConfig
from latentdistill.config.sr_protocols import sr_protocol
from latentdistill.data.super_resolution import dihedral, make_lr
from latentdistill.errors import LatentDistillError
from latentdistill.evaluate.super_resolution import evaluate_sr
from latentdistill.io import atomic_save_file, atomic_write_text, read_json_object, read_safetensors
from latentdistill.training_state import optimizer_state, optimizer_tensors


def make_lr_patches(hr_patches: torch.Tensor, scale: int) -> torch.Tensor:
    """LR partners of uint8 HR patches, made exactly as the test LR images are (PIL bicubic, 8 bits)."""
    return torch.stack([make_lr(patch, scale) for patch in hr_patches])


def protocol_key(protocol: SRProtocol) -> dict:
    """What a cached result trained under ``protocol`` depends on: its numbers, not its name. The schedule
    is left out when it is the one every protocol had before they were named, so results cached then stay valid."""
    schedule = {} if protocol.decay_at == (0.5, 0.75) else {"decay_at": list(protocol.decay_at)}
    return {"iterations": protocol.iterations, "batch_size": protocol.batch_size, "lr": protocol.lr, **schedule}


def protocol_record(protocol: SRProtocol) -> dict:
    """What a report says of the protocol that produced it."""
    return {"name": protocol.name, "iterations": protocol.iterations, "batch_size": protocol.batch_size,
            "lr": protocol.lr, "decay_at": list(protocol.decay_at), "note": protocol.note}


class SRTraining:
    """One SR network under a protocol, one batch at a time: L1 between net(LR) and HR with Adam, the lr halved
    after each fraction in ``decay_at``, each batch under one random flip/rotation when ``config.augment``.

    A state that can be saved at any iteration and resumed to the same weights, bit for bit (the Adam moments
    and the batch generator go with it), because a converged protocol is hours of a CPU per network."""

    def __init__(self, lr_patches: torch.Tensor, hr_patches: torch.Tensor, config: SuperResolutionConfig, seed: int,
                 device: torch.device, net: str | None = None):
        self.protocol = sr_protocol(config)
        self.augment = config.augment
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.model = nets.build(net or config.net, scale=config.scale, task="sr").to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.protocol.lr)
        self.milestones = [int(self.protocol.iterations * fraction) for fraction in self.protocol.decay_at]
        self.lr_patches, self.hr_patches = lr_patches.to(device), hr_patches.to(device)
        self.device = device
        self.iteration = 0

    def lr_now(self) -> float:
        """The protocol's lr at this iteration (what torch's MultiStepLR with gamma 0.5 gives, without its state)."""
        return self.protocol.lr * 0.5 ** sum(self.iteration >= milestone for milestone in self.milestones)

    def step(self) -> None:
        """One batch: the protocol's lr for this iteration, one random dihedral view, one Adam step."""
        self.model.train()
        rows = torch.randint(len(self.hr_patches), (self.protocol.batch_size,), generator=self.generator).to(self.device)
        low, high = self.lr_patches[rows].float() / 255, self.hr_patches[rows].float() / 255
        if self.augment:
            flip, rotations = bool(torch.randint(2, (1,), generator=self.generator)), int(torch.randint(4, (1,), generator=self.generator))
            low, high = dihedral(low, flip, rotations), dihedral(high, flip, rotations)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_now()
        loss = F.l1_loss(self.model(low), high)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1

    def save(self, path: Path, key: str) -> None:
        """Write the state atomically; ``key`` says which training it is (the set, protocol and seed)."""
        adam, groups = optimizer_tensors(self.optimizer.state_dict(), "adam.")
        tensors = {f"model.{name}": value.detach().cpu().contiguous() for name, value in self.model.state_dict().items()}
        tensors.update(adam, generator=self.generator.get_state())
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_file(tensors, path, metadata={"key": key, "iteration": str(self.iteration), "param_groups": groups})

    def load(self, path: Path, key: str) -> None:
        """Continue from a state ``save`` wrote for the same ``key``; a file of another training, a damaged
        one or one whose weights do not fit is one line naming it."""
        tensors, metadata = read_safetensors(path, "SR training checkpoint")
        if metadata.get("key") != key:
            raise LatentDistillError(f"SR training checkpoint {path} belongs to another training (other data, protocol or "
                                     "seed): delete it to start over")
        try:
            self.model.load_state_dict({name.removeprefix("model."): value for name, value in tensors.items()
                                        if name.startswith("model.")})
            self.optimizer.load_state_dict(optimizer_state(tensors, metadata["param_groups"], "adam."))
            self.generator.set_state(tensors["generator"])
            self.iteration = int(metadata["iteration"])
        except (RuntimeError, KeyError, ValueError, TypeError) as error:
            raise LatentDistillError(f"SR training checkpoint {path} does not fit this training "
                                     f"({str(error).splitlines()[0] if str(error) else type(error).__name__}): delete it to start over") from None
        if not 0 <= self.iteration <= self.protocol.iterations:
            raise LatentDistillError(f"SR training checkpoint {path} is at iteration {self.iteration}, outside this protocol's "
                                     f"{self.protocol.iterations}: delete it to start over")


@dataclass(frozen=True)
class TrainingCheckpoint:
    """Where one SR training keeps its state, and which training that is: written every ``every_seconds`` and
    at the end, continued from when present. The caller deletes it once the trained network's result is kept,
    so an interruption while the network is scored or saved costs no training."""

    path: Path
    key: str
    every_seconds: float = 60.0


def train_sr(
    lr_patches: torch.Tensor,
    hr_patches: torch.Tensor,
    config: SuperResolutionConfig,
    seed: int,
    device: torch.device,
    net: str | None = None,
    progress: bool = False,
    checkpoint: TrainingCheckpoint | None = None,
) -> torch.nn.Module:
    """An SR network trained under the protocol ``config`` names (``SRTraining``); patches are uint8. With a
    ``checkpoint``, an interrupted training continues where its last checkpoint left it (a finished one is
    only loaded)."""
    training = SRTraining(lr_patches, hr_patches, config, seed, device, net)
    if checkpoint is not None and checkpoint.path.is_file():
        training.load(checkpoint.path, checkpoint.key)
    description = f"train {net or config.net} x{config.scale} ({training.protocol.name})"
    saved = time.monotonic()
    with tqdm(total=training.protocol.iterations, initial=training.iteration, desc=description, disable=not progress) as bar:
        while training.iteration < training.protocol.iterations:
            training.step()
            bar.update(1)
            if checkpoint is not None and time.monotonic() - saved >= checkpoint.every_seconds:
                training.save(checkpoint.path, checkpoint.key)
                saved = time.monotonic()
    if checkpoint is not None:
        training.save(checkpoint.path, checkpoint.key)
    return training.model


def pixels_digest(images: torch.Tensor) -> str:
    """What identifies a training set in a key: its shape, dtype and every byte."""
    array = images.detach().cpu().contiguous().numpy()
    return hashlib.sha256(f"{tuple(array.shape)} {array.dtype}".encode() + array.tobytes()).hexdigest()


@dataclass(frozen=True)
class RunRecords:
    """Where one row of an SR evaluation (a set under one protocol) keeps the scores of its finished runs and
    the checkpoint of the network it is training, so that an interrupted evaluation run again into the same
    folder trains only what is missing. ``key`` names the row exactly (its set, protocol, seed and test sets)."""

    folder: Path
    key: str

    @property
    def path(self) -> Path:
        """The row's record: named by its key's digest, so rows (and other evaluations' rows) never share one."""
        return self.folder / f"runs-{hashlib.sha256(self.key.encode()).hexdigest()[:16]}.json"

    def finished(self, tests: list[str]) -> dict[int, dict[str, dict[str, float]]]:
        """``{run: {test: {metric: value}}}`` of the runs already done; a record of another row, or one whose
        runs do not score exactly ``tests`` by PSNR and SSIM, is one line naming the file."""
        if not self.path.is_file():
            return {}
        record = read_json_object(self.path, "SR evaluation progress record")
        problem = "is not this row's" if record.get("key") != self.key else None
        try:
            runs = {int(run): scores for run, scores in record["runs"].items()}
            for scores in runs.values():
                values = [scores[test][metric] for test in tests for metric in ("psnr", "ssim")]
                if sorted(scores) != sorted(tests) or not all(type(v) in (int, float) and not math.isnan(v) for v in values):
                    raise ValueError
        except (KeyError, ValueError, TypeError, AttributeError):
            problem = problem or "is damaged"
        if problem:
            raise LatentDistillError(f"SR evaluation progress record {self.path} {problem}: delete it to retrain its runs")
        return runs

    def put(self, run: int, scores: dict[str, dict[str, float]]) -> None:
        """Keep one finished run's scores (the record is rewritten atomically)."""
        runs = {**self.finished(list(scores)), run: scores}
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"key": self.key, "runs": {str(r): s for r, s in sorted(runs.items())}}, indent=1))

    def checkpoint(self, run: int) -> TrainingCheckpoint:
        """Where run ``run``'s network keeps its state while it trains."""
        return TrainingCheckpoint(self.path.with_name(f"{self.path.stem}-run{run}.safetensors"), f"{self.key} run {run}")


def train_and_score(hr: torch.Tensor, tests: dict[str, list[torch.Tensor]], config: SuperResolutionConfig, seed: int,
                    device: torch.device, progress: bool = False,
                    records: RunRecords | None = None) -> dict[str, dict[str, list[float]]]:
    """``config.runs`` networks trained on the uint8 HR patches under one protocol (run r with seed
    ``seed * 1000 + r``, the same for every set), each scored on every test set: ``{test: {metric: [per run]}}``.
    With ``records``, finished runs are kept and reused, and a run in progress resumes from its checkpoint."""
    lr = make_lr_patches(hr, config.scale)
    finished = records.finished(list(tests)) if records is not None else {}
    per_test: dict[str, dict[str, list[float]]] = {}
    for run in range(config.runs):
        scores = finished.get(run)
        if scores is None:
            checkpoint = records.checkpoint(run) if records is not None else None
            model = train_sr(lr, hr, config, seed * 1000 + run, device, progress=progress, checkpoint=checkpoint)
            scores = {test_name: {metric: value for metric, value in evaluate_sr(model, images, config.scale, device).items()
                                  if metric in ("psnr", "ssim")} for test_name, images in tests.items()}
            if records is not None:
                records.put(run, scores)
                checkpoint.path.unlink(missing_ok=True)  # only now: its result is kept
        for test_name in tests:
            entry = per_test.setdefault(test_name, {"psnr": [], "ssim": []})
            entry["psnr"].append(scores[test_name]["psnr"])
            entry["ssim"].append(scores[test_name]["ssim"])
    return per_test
