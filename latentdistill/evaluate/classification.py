"""Train-from-scratch evaluation for classification.

A distilled set is judged by the accuracy, on the real test split, of fresh networks trained on it,
next to the random real subset of the same size trained the same way in the same run (and, when
asked, the full training set). Nothing is selected on the test set: every network trains for the
fixed number of epochs and its last state is tested once. Validation accuracy (on images carved from
train) is reported beside it. With several networks (``evaluate.nets``) each gets its own rows: the
cross-architecture table. DD-Ranking's scores come from the same runs.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from typing import Protocol

import torch
from tqdm.auto import tqdm

from latentdistill import nets
from latentdistill.config import EvaluateConfig
from latentdistill.distill.classifier_training import ClassifierTraining, TrainingStream, sgd_epoch
from latentdistill.evaluate.baselines import BaselineCache
from latentdistill.evaluate.scores import augmentation_robust_score, label_robust_score
from latentdistill.nets.stacked import StackedNetworks, can_stack
from latentdistill.runtime import Normalize, autocast, use_batched


class Teacher(Protocol):
    """What labels real images for a soft-label row: called on uint8 images, it returns logits; ``name`` says
    what it is (in the report) and ``key`` identifies it exactly (in the baseline cache's key). The expert
    buffer's ``distill.soft_labels.ExpertTeacher`` is one."""

    name: str
    key: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def train_classifier(
    training: ClassifierTraining,
    config: EvaluateConfig,
    net: str | None = None,
    epochs: int | None = None,
) -> torch.nn.Module:
    """The standard protocol: SGD with momentum, weight decay, lr x0.1 at half, optional DSA.

    ``net`` and ``epochs`` default to ``config.net`` and ``config.epochs``."""
    return train_classifiers([training], config, net, epochs)[0]


def train_classifiers(
    trainings: list[ClassifierTraining],
    config: EvaluateConfig,
    net: str | None = None,
    epochs: int | None = None,
    batched: bool = False,
    on_trained: Callable[[int, torch.nn.Module], None] | None = None,
    net_kwargs: dict | None = None,
) -> list[torch.nn.Module]:
    """``train_classifier`` for each training: its own images, seed, data order and augmentation draws, one
    protocol. With ``batched``, all at once as one ``StackedNetworks`` where the network allows it (no batch
    norm or dropout) and the sets are the same size; otherwise one after another. ``on_trained(index, model)``
    is called as each network finishes, so a caller keeps every finished result if it is interrupted.
    ``net_kwargs`` (e.g. ``width``, ``depth``, ``norm``) go to the network's builder."""
    same = {(id(t.normalize), id(t.augment), t.precision, t.compile, t.device) for t in trainings}
    if len(same) > 1:
        raise ValueError("train_classifiers trains with one protocol: normalize, augment, precision, compile and "
                         "device must be the same for every training")
    epochs = epochs or config.epochs
    models = []
    for index, training in enumerate(trainings):  # each initialisation comes from its own seed, as when alone
        torch.manual_seed(training.seed)
        models.append(nets.build(net or config.net, num_classes=training.num_classes,
                                 resolution=training.images.shape[-1], **(net_kwargs or {})).to(training.device))
        if not batched:
            _train_together(models[-1:], [training], config, epochs)
            if on_trained is not None:
                on_trained(index, models[-1])
    if batched:
        together = can_stack(models[0]) and len({len(t.images) for t in trainings}) == 1
        groups = [list(range(len(models)))] if together else [[i] for i in range(len(models))]
        for group in groups:
            _train_together([models[i] for i in group], [trainings[i] for i in group], config, epochs)
            for index in group:
                if on_trained is not None:
                    on_trained(index, models[index])
    return models


def _train_together(models: list[torch.nn.Module], trainings: list[ClassifierTraining], config: EvaluateConfig,
                    epochs: int) -> None:
    """The protocol's epochs for one network, or for several stacked into one model (one optimizer over the
    stacked parameters is one SGD per network: momentum and weight decay act elementwise)."""
    first = trainings[0]
    model = StackedNetworks(models) if len(models) > 1 else models[0]
    if first.compile:
        model.compile()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[epochs // 2], gamma=0.1)
    streams = [TrainingStream(t.images.to(t.device), t.labels.to(t.device), torch.Generator().manual_seed(t.seed))
               for t in trainings]
    model.train()
    for _ in range(epochs):
        sgd_epoch(model, optimizer, streams, config.batch_size, first.normalize, first.augment, first.precision)
        scheduler.step()
    if isinstance(model, StackedNetworks):
        model.unstacked()


@torch.no_grad()
def accuracy(
    net: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalize: Normalize,
    device: torch.device,
    batch_size: int = 1000,
    precision: str = "fp32",
) -> float:
    """Top-1 accuracy in percent."""
    net.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        batch = normalize(images[start : start + batch_size].to(device).float() / 255)
        with autocast(device, precision):
            predictions = net(batch).argmax(1)
        correct += int((predictions.cpu() == labels[start : start + batch_size]).sum())
    return 100.0 * correct / max(1, len(images))


def summarize(values: list[float]) -> dict:
    return {
        "mean": round(statistics.fmean(values), 2),
        "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
        "runs": [round(v, 2) for v in values],
    }


def random_real_subset(labels: torch.Tensor, rows: torch.Tensor, ipc: int, seed: int) -> torch.Tensor:
    """``ipc`` random rows per class among ``rows``."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in labels[rows].unique().tolist():
        candidates = rows[labels[rows] == label]
        chosen.append(candidates[torch.randperm(len(candidates), generator=generator)[:ipc]])
    return torch.cat(chosen)


def network_names(config: EvaluateConfig) -> list[str]:
    return list(config.nets) or [config.net]


def evaluate_classification(
    distilled_images: torch.Tensor,
    distilled_labels: torch.Tensor,
    real: ClassifierTraining,
    train_rows: torch.Tensor,
    validation_rows: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    config: EvaluateConfig,
    progress: bool = True,
    baselines: BaselineCache | None = None,
    protocol_key: dict | None = None,
    soft_labels: torch.Tensor | None = None,
    teacher: Teacher | None = None,
    random_real_ipc: int | None = None,
) -> dict:
    """For each network, train ``config.runs`` models on the distilled set (and on random real subsets
    of the same IPC, and on the full training set when asked), test each once on the real test split,
    and return the summary with DD-Ranking's scores where their inputs were measured.

    ``real`` holds the real training images (all rows; ``train_rows`` are those outside validation) and
    how every network is trained (normalisation, augmentation, seed, device, precision). ``baselines``
    (with ``protocol_key``, everything else the baselines depend on: data, augmentation, device) keeps and
    reuses the random real and full-data results. With ``soft_labels`` (the set's probability rows) and a
    ``teacher``, two more rows train with soft cross-entropy: the distilled images on their soft labels, and the
    random real images (the same subsets) on the teacher's; the hard-label rows stay beside them.
    ``random_real_ipc`` sizes the random real subsets (default: the set's images per class); a storage-matched
    set compares with the real images that take its bytes.

    Long on purpose: the whole protocol (every set, network and run; cached baselines) reads top to bottom."""
    train_images, train_labels, normalize, augment = real.images, real.labels, real.normalize, real.augment
    seed, device, precision = real.seed, real.device, real.precision
    baselines = baselines or BaselineCache(None)
    ipc = int(torch.bincount(distilled_labels).max())
    real_ipc = random_real_ipc or ipc
    sets = ["distilled"] + (["random_real"] if config.random_real else []) + (["full"] if config.full_data else [])
    variants = [(name, True) for name in sets]
    if config.without_augment and augment is not None:
        variants += [(name, False) for name in sets if name != "full"]
    if soft_labels is not None:
        variants.append(("distilled_soft", True))
        if config.random_real and teacher is not None:
            variants.append(("random_real_soft", True))
    validation_images, validation_labels = train_images[validation_rows], train_labels[validation_rows]
    started = time.perf_counter()
    networks: dict[str, dict] = {}
    rows = [(net, name, augmented) for net in network_names(config) for name, augmented in variants]
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    bar = tqdm(total=len(rows) * config.runs, desc=f"evaluate ipc={ipc}", disable=not progress, unit="net")
    for net, name, augmented in rows:
        # One row: config.runs networks of one architecture on one kind of set, trained together when batched.
        measured: dict[int, dict] = {}
        cache_keys: dict[int, str] = {}
        trainings: dict[int, ClassifierTraining] = {}
        epochs = config.full_epochs if name == "full" else config.epochs
        for run in range(config.runs):
            run_seed = seed * 1000 + run
            if not name.startswith("distilled"):  # baselines only: a distilled row belongs to its file
                protocol = {k: v for k, v in dataclasses.asdict(config).items()
                            if k in ("lr", "momentum", "weight_decay", "batch_size", "test_batch")}
                protocol["epochs"] = epochs
                subset_ipc = real_ipc if name.startswith("random_real") else None
                key = [name, augmented, net, subset_ipc, run_seed, protocol, precision, protocol_key or {}]
                if name == "random_real_soft":
                    key.append(teacher.key)
                cache_keys[run] = json.dumps(key, sort_keys=True)
                cached = baselines.get(cache_keys[run])
                if cached is not None:
                    measured[run] = cached
                    bar.update(1)
                    continue
            if name == "distilled":
                images, labels = distilled_images, distilled_labels
            elif name == "distilled_soft":
                images, labels = distilled_images, soft_labels.float()
            elif name.startswith("random_real"):
                chosen = random_real_subset(train_labels, train_rows, real_ipc, seed=run_seed)
                images, labels = train_images[chosen], train_labels[chosen]
                if name == "random_real_soft":
                    labels = teacher(images).softmax(dim=1).cpu()
            else:
                images, labels = train_images[train_rows], train_labels[train_rows]
            trainings[run] = dataclasses.replace(real, images=images, labels=labels, seed=run_seed,
                                                 augment=augment if augmented else None)
        if trainings:
            def measure(index: int, model: torch.nn.Module, runs: list[int] = list(trainings)) -> None:
                run = runs[index]
                measured[run] = {"test": accuracy(model, test_images, test_labels, normalize, device, config.test_batch,
                                                  precision), "validation": None}
                if len(validation_rows):
                    measured[run]["validation"] = accuracy(model, validation_images, validation_labels, normalize,
                                                           device, config.test_batch, precision)
                if run in cache_keys:
                    baselines.put(cache_keys[run], measured[run])
                bar.update(1)

            train_classifiers(list(trainings.values()), config, net=net, epochs=epochs,
                              batched=use_batched(config.batched, device), on_trained=measure)
        values = results.setdefault((net, name if augmented else f"{name}_no_augment"), {"test": [], "validation": []})
        for run in range(config.runs):
            for split in ("test", "validation"):
                if measured[run].get(split) is not None:
                    values[split].append(measured[run][split])
    bar.close()
    for (net, name), values in results.items():
        row = networks.setdefault(net, {})
        row[name] = summarize(values["test"])
        if values["validation"]:
            row[name]["validation"] = summarize(values["validation"])
    for row in networks.values():
        scores = ranking_scores(row, config)
        if scores:
            row["scores"] = scores
    return {"ipc": ipc, "random_real_ipc": real_ipc, "minutes": round((time.perf_counter() - started) / 60, 2), "networks": networks}


def ranking_scores(row: dict, config: EvaluateConfig) -> dict:
    """DD-Ranking's label-robust score (needs the full-data row) and augmentation-robust score (needs
    the rows without augmentation), from mean test accuracies as fractions."""
    mean = {name: row[name]["mean"] / 100 for name in row if isinstance(row[name], dict) and "mean" in row[name]}
    scores = {}
    if {"distilled", "random_real", "full"} <= set(mean):
        scores["label_robust"] = {k: round(v, 4) for k, v in label_robust_score(
            mean["distilled"], mean["random_real"], mean["full"], config.score_weight).items()}
    if {"distilled", "random_real", "distilled_no_augment", "random_real_no_augment"} <= set(mean):
        scores["augmentation_robust"] = {k: round(v, 4) for k, v in augmentation_robust_score(
            mean["distilled"], mean["random_real"], mean["distilled_no_augment"], mean["random_real_no_augment"],
            config.score_gamma).items()}
    return scores


ROW_NAMES = {"distilled": "distilled", "random_real": "random real", "distilled_soft": "distilled, soft labels",
             "random_real_soft": "random real, teacher labels", "full": "full training set",
             "distilled_no_augment": "distilled, no augmentation", "random_real_no_augment": "random real, no augmentation"}


def markdown_table(report: dict) -> str:
    """One row per network: mean ± std test accuracy of each set, and the scores when measured."""
    networks = report["networks"]
    columns = [name for name in ROW_NAMES if any(name in row for row in networks.values())]
    has_lrs = any("label_robust" in row.get("scores", {}) for row in networks.values())
    has_ars = any("augmentation_robust" in row.get("scores", {}) for row in networks.values())
    real_ipc = report.get("random_real_ipc", report["ipc"])
    names = {c: ROW_NAMES[c] + (f" (IPC {real_ipc})" if c.startswith("random_real") and real_ipc != report["ipc"] else "")
             for c in columns}
    header = [f"{report.get('dataset', 'dataset')} IPC {report['ipc']}"] + [names[c] for c in columns]
    header += ["LRS"] * has_lrs + ["ARS"] * has_ars + ["runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for net, row in networks.items():
        cells = [net] + [f"{row[c]['mean']:.2f} ± {row[c]['std']:.2f}" if c in row else "" for c in columns]
        scores = row.get("scores", {})
        if has_lrs:
            cells.append(f"{scores['label_robust']['score']:.3f}" if "label_robust" in scores else "")
        if has_ars:
            cells.append(f"{scores['augmentation_robust']['score']:.3f}" if "augmentation_robust" in scores else "")
        cells.append(str(len(row["distilled"]["runs"])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
