"""Train-from-scratch evaluation for classification.

A distilled set is judged by the accuracy, on the real test split, of fresh networks trained on it,
next to the random real subset of the same size trained the same way in the same run. Nothing is
selected on the test set: every network trains for the fixed number of epochs and its last state is
tested once. Validation accuracy (on images carved from train) is reported beside it.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from latentdistill import nets
from latentdistill.config import EvaluateConfig
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.runtime import Normalize, autocast


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    config: EvaluateConfig,
    normalize: Normalize,
    augment: DifferentiableAugment | None,
    seed: int,
    device: torch.device,
    precision: str = "fp32",
) -> torch.nn.Module:
    """The standard protocol: SGD with momentum, weight decay, lr x0.1 at half, optional DSA."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = nets.build(config.net, num_classes=num_classes, resolution=images.shape[-1]).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[config.epochs // 2], gamma=0.1)
    inputs = normalize(images.to(device).float() / 255)
    targets = labels.to(device)
    net.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(inputs), generator=generator).to(device)
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            batch = inputs[rows]
            if augment is not None:
                batch = augment.apply(batch, augment.sample(len(rows), generator))
            with autocast(device, precision):
                loss = F.cross_entropy(net(batch), targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.float().backward()
            optimizer.step()
        scheduler.step()
    return net


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


def evaluate_classification(
    distilled_images: torch.Tensor,
    distilled_labels: torch.Tensor,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    train_rows: torch.Tensor,
    validation_rows: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    config: EvaluateConfig,
    normalize: Normalize,
    augment: DifferentiableAugment | None,
    seed: int,
    device: torch.device,
    precision: str = "fp32",
    progress: bool = True,
) -> dict:
    """Train ``config.runs`` networks on the distilled set (and on random real subsets of the same
    IPC), test each once on the real test split, and return the summary."""
    ipc = int(torch.bincount(distilled_labels).max())
    results: dict[str, dict[str, list[float]]] = {"distilled": {"test": [], "validation": []}}
    if config.random_real:
        results["random_real"] = {"test": [], "validation": []}
    validation_images, validation_labels = train_images[validation_rows], train_labels[validation_rows]
    started = time.perf_counter()
    jobs = [(name, run) for run in range(config.runs) for name in results]
    for name, run in tqdm(jobs, desc=f"evaluate ipc={ipc}", disable=not progress):
        run_seed = seed * 1000 + run
        if name == "distilled":
            images, labels = distilled_images, distilled_labels
        else:
            rows = random_real_subset(train_labels, train_rows, ipc, seed=run_seed)
            images, labels = train_images[rows], train_labels[rows]
        net = train_classifier(images, labels, num_classes, config, normalize, augment, run_seed, device, precision)
        results[name]["test"].append(accuracy(net, test_images, test_labels, normalize, device, config.test_batch, precision))
        if len(validation_rows):
            results[name]["validation"].append(
                accuracy(net, validation_images, validation_labels, normalize, device, config.test_batch, precision)
            )
    report = {"ipc": ipc, "minutes": round((time.perf_counter() - started) / 60, 2)}
    for name, values in results.items():
        report[name] = summarize(values["test"])
        if values["validation"]:
            report[name]["validation"] = summarize(values["validation"])
    return report


def markdown_table(report: dict) -> str:
    lines = [
        f"| {report.get('dataset', 'dataset')} IPC {report['ipc']} | test accuracy (%) | runs |",
        "|---|---|---|",
    ]
    for name in ("distilled", "random_real"):
        if name in report:
            r = report[name]
            lines.append(f"| {name.replace('_', ' ')} | {r['mean']:.2f} ± {r['std']:.2f} | {len(r['runs'])} |")
    return "\n".join(lines)
