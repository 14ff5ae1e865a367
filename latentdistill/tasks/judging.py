"""What every judgement of a classification set shares (``evaluate`` and ``rank-nets``): the set checked against
the config before any cache is read, then the real data and the training protocol prepared the way the set
asks (its ZCA, its learned lr, the same normalisation, augmentation and baseline cache)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from latentdistill.autoencoders import load_autoencoder
from latentdistill.config import EvaluateConfig, RunConfig, config_to_dict
from latentdistill.data.image_folder import ImageFolder
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.classifier_training import ClassifierTraining
from latentdistill.errors import LatentDistillError
from latentdistill.evaluate.baselines import BaselineCache
from latentdistill.evaluate.protocol import file_protocol
from latentdistill.export import DistilledSet
from latentdistill.export.sets import unwhiten
from latentdistill.runtime import resolve_device

# Baseline accuracies (random real, full data) kept beside the train latent cache and reused.
BASELINES_FILE = "baselines.json"


@dataclass
class Judging:
    """A set ready to be judged: the config and evaluation section it is judged with, the prepared real data,
    the set's images in the pixel scale, and the notes on what the set decided."""

    config: RunConfig
    evaluation: EvaluateConfig
    task: object  # the ClassificationTask of ``config``
    data: object  # its PreparedData
    device: torch.device
    images: torch.Tensor
    real: ClassifierTraining
    baselines: BaselineCache
    protocol_key: dict
    notes: list[str] = field(default_factory=list)


def check_compatible(config: RunConfig, distilled: DistilledSet, source: Path) -> None:
    """Before any cache is read or built: the task, images to train on, the resolution, then the class names."""
    task = distilled.metadata.get("task")
    if task != "classification" or config.task != "classification":
        raise LatentDistillError(f"{source} is a '{task}' set and config key 'task' is '{config.task}' (a classifier "
                                 "is judged on a 'classification' set)")
    if distilled.images is None:
        raise LatentDistillError(f"{source} holds no decoded images to train on")
    resolution = distilled.images.shape[-1]
    if resolution != config.data.resolution:
        raise LatentDistillError(f"{source} holds {resolution}px images; config key 'data.resolution' is "
                                 f"{config.data.resolution}: set data.resolution={resolution}")
    if not Path(config.data.root).is_dir():
        raise LatentDistillError(f"config key 'data.root': dataset folder not found: {config.data.root}")
    classes = list(ImageFolder.scan(config.data.root, config.data.train_split).classes)
    if classes != distilled.classes:
        raise LatentDistillError(f"{source} was distilled for classes {distilled.classes}, the dataset at "
                                 f"{config.data.root} (config key 'data.root') has {classes}")


def prepare_judging(task_class, config: RunConfig, distilled: DistilledSet, source: Path, progress: bool = True) -> Judging:
    """Check ``distilled`` (``check_compatible``), then prepare the real data with the file's preprocessing."""
    check_compatible(config, distilled, source)
    device = resolve_device(config.device)
    config, evaluation, notes = file_protocol(distilled, source, config)
    task = task_class(config)  # with the file's preprocessing, whatever the config said
    autoencoder = load_autoencoder(config.autoencoder.name_or_path, config.autoencoder.kind, config.autoencoder.subfolder,
                                   normalization=(config.data.mean, config.data.std))
    data = task.prepare(autoencoder, device, progress=progress)  # the train cache is the autoencoder's
    recorded_zca = distilled.metadata.get("zca")
    if recorded_zca is not None and recorded_zca.get("fingerprint") != data.zca.fingerprint:
        notes.append(f"ZCA refitted on {config.data.root} (fingerprint {data.zca.fingerprint}; the set's: "
                     f"{recorded_zca.get('fingerprint')})")
    images = unwhiten(distilled, data.zca) if "whitened" in distilled.metadata else distilled.images
    notes += distilled.metadata.get("notes", [])
    augment = DifferentiableAugment(config.augment) if evaluation.augment else None
    resolved = config_to_dict(config)
    real = ClassifierTraining(data.train.images, data.train.labels, len(data.classes), task.normalize(data).to(device),
                              augment, config.seed, device, config.precision, config.compile)
    baselines = BaselineCache(data.train.directory / BASELINES_FILE if evaluation.reuse_baselines else None)
    protocol_key = {"data": resolved["data"], "augment": resolved["augment"], "augmented": evaluation.augment,
                    "device": device.type, "fingerprint": data.train.meta.get("fingerprint")}
    return Judging(config, evaluation, task, data, device, images, real, baselines, protocol_key, notes)
