"""Task ``classification``: class folders, cross-entropy, accuracy on the real test split.

Data: the train split's latent cache (images, labels, latents) and the test split's image cache, with
validation images carved from train. Distillation matches, per class, a network's cross-entropy
gradients (gm), features (dm) or trajectories (mtt). Evaluation trains fresh classifiers on the set and
on random real subsets of the same size, and tests them once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from latentdistill import nets
from latentdistill.config import EvaluateConfig, RunConfig
from latentdistill.data.image_folder import ImageFolder, split_train_validation
from latentdistill.data.latent_cache import LatentCache, encode_dataset
from latentdistill.data.statistics import cached_statistics
from latentdistill.data.zca import ZCA, load_or_fit_zca
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.loop import MatchingProblem
from latentdistill.distill.objective import OBJECTIVES, ObjectiveSetup
from latentdistill.distill.soft_labels import ExpertTeacher, correctly_classified, expert_teacher
from latentdistill.distill.synthetic import INITIALISATIONS, initial_synthetic_set
from latentdistill.errors import LatentDistillError
from latentdistill.evaluate.classification import evaluate_classification, markdown_table, network_names
from latentdistill.export import DistilledSet, save_grid
from latentdistill.export.sets import set_storage
from latentdistill.runtime import Normalize, use_batched
from latentdistill.storage import latents_in_storage
from latentdistill.tasks.base import TASKS, autoencoder_tag, cache_root
from latentdistill.tasks.judging import BASELINES_FILE, prepare_judging  # noqa: F401 - BASELINES_FILE: where baselines live


class CrossEntropy:
    """The classification criterion the objectives match: cross-entropy, and the classifier's features."""

    def loss(self, net, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(net(images), labels)

    def embed(self, net, images: torch.Tensor) -> torch.Tensor:
        return net.embed(images)


@dataclass
class PreparedData:
    train: LatentCache
    test: LatentCache
    train_rows: torch.Tensor
    validation_rows: torch.Tensor
    zca: ZCA | None = None  # data.zca: fitted on train_rows, kept beside the train cache

    @property
    def classes(self) -> list[str]:
        return self.train.classes


@TASKS.register("classification")
class ClassificationTask:
    name = "classification"
    export_batch = 0  # the set is small, and a diffusion prior's fixed noise is drawn for the whole set

    def __init__(self, config: RunConfig):
        self.config = config

    # --- data -----------------------------------------------------------------------------------

    def cache_directory(self) -> Path:
        config = self.config
        if config.cache.dir:
            return Path(config.cache.dir)
        tag = autoencoder_tag(config)
        return cache_root() / f"{Path(config.data.root).resolve().name}-{config.data.resolution}px-{tag}"

    def prepare(self, autoencoder=None, device: torch.device | None = None, progress: bool = True) -> PreparedData:
        """Read (or build) the train latent cache and the test image cache, and carve the validation rows."""
        data = self.config.data
        if not Path(data.root).is_dir():
            raise LatentDistillError(
                f"config key 'data.root': dataset folder not found: {data.root} (relative paths are read from {Path.cwd()})")
        directory = self.cache_directory()
        train_folder = ImageFolder.scan(data.root, data.train_split)
        test_folder = ImageFolder.scan(data.root, data.test_split, classes=train_folder.classes)
        common = dict(shard_size=self.config.cache.shard_size, batch_size=self.config.cache.batch_size,
                      skip_bad=data.skip_bad, progress=progress)
        train = encode_dataset(train_folder, autoencoder, data.resolution, directory / data.train_split, **common)
        test = encode_dataset(test_folder, None, data.resolution, directory / data.test_split, **common)
        for cache in (train, test):
            if cache.meta["skipped"]:
                print(f"skipped {len(cache.meta['skipped'])} unreadable images in {cache.directory} (listed in its meta.json)")
        if "auto" in (data.mean, data.std):  # from here on this task normalises with the split's own statistics
            mean, std = cached_statistics(train.directory, train.images, train.meta.get("fingerprint"))
            data = dataclasses.replace(data, mean=mean if data.mean == "auto" else data.mean,
                                       std=std if data.std == "auto" else data.std)
            self.config = dataclasses.replace(self.config, data=data)
        train_rows, validation_rows = split_train_validation(train.labels, data.val_per_class, data.split_seed, train.classes)
        zca = self._zca(train, train_rows) if data.zca else None
        return PreparedData(train, test, train_rows, validation_rows, zca)

    def _zca(self, train: LatentCache, rows: torch.Tensor) -> ZCA:
        """The ZCA of the training rows (validation left out), fitted once per cache, split and normalisation."""
        data = self.config.data
        key = {"fingerprint": train.meta.get("fingerprint"), "val_per_class": data.val_per_class,
               "split_seed": data.split_seed, "mean": data.mean, "std": data.std, "eps": data.zca_eps}
        path = train.directory / f"zca-eps{data.zca_eps:g}.safetensors"
        return load_or_fit_zca(path, train.images[rows], Normalize(data.mean, data.std), data.zca_eps, key)

    def summary(self, data: PreparedData) -> str:
        return (f"latent cache: {data.train.directory} ({len(data.train.labels)} train images), "
                f"{data.test.directory} ({len(data.test.labels)} test images)")

    def classes(self, data: PreparedData) -> list[str]:
        return data.classes

    def check_prior(self, prior_name: str) -> None:
        return None

    def check_names(self) -> None:
        settings = self.config.distill
        OBJECTIVES.get(settings.objective)
        if settings.init not in INITIALISATIONS:
            raise LatentDistillError(f"config key 'distill.init': unknown initialisation '{settings.init}' "
                                     f"(known: {', '.join(INITIALISATIONS)})")
        nets.build(settings.net, num_classes=2, resolution=self.config.data.resolution, task="classification",
                   config_key="distill.net", width=settings.net_width, depth=settings.net_depth)
        if settings.learn_labels and settings.objective != "mtt":
            raise LatentDistillError(f"config key 'distill.learn_labels' needs objective mtt (a student that trains on the "
                                     f"labels), not '{settings.objective}'")
        if settings.storage_ipc and self.config.prior.name != "vae":
            raise LatentDistillError(f"config key 'distill.storage_ipc' counts latents and soft labels only; prior "
                                     f"'{self.config.prior.name}' adds conditioning per image (use prior vae)")
        if settings.learn_labels and settings.init not in ("random_real", "kmeans"):
            raise LatentDistillError(f"config key 'distill.learn_labels' needs distill.init random_real or kmeans (a real "
                                     f"image to label), not '{settings.init}'")
        self.check_evaluation_names()

    def check_evaluation_names(self) -> None:
        unknown = [name for name in network_names(self.config.evaluate) if name not in nets.names("classification")]
        if unknown:
            raise LatentDistillError(f"config key 'evaluate.nets': unknown network '{unknown[0]}' "
                                     f"(known: {', '.join(nets.names('classification'))})")

    def normalize(self, data: PreparedData) -> Normalize:
        """What every network's input goes through: the per-channel normalisation, then ZCA with ``data.zca``."""
        whitening = None if data.zca is None else (data.zca.mean, data.zca.matrix)
        return Normalize(self.config.data.mean, self.config.data.std, whitening)

    # --- distillation ---------------------------------------------------------------------------

    def matching_problem(self, data: PreparedData, device: torch.device) -> MatchingProblem:
        config, settings = self.config, self.config.distill
        if data.train.latents is None:
            raise LatentDistillError(f"latent cache {data.train.directory} holds no latents")
        normalize = self.normalize(data).to(device)
        num_classes = len(data.classes)
        # Real images: normalised once, grouped by class, only the rows outside the validation split.
        # Trajectory matching compares with expert trajectories instead, and needs none.
        real_by_class = {}
        for label in range(num_classes if settings.objective != "mtt" else 0):
            rows = data.train_rows[data.train.labels[data.train_rows] == label]
            real_by_class[label] = normalize(data.train.images[rows].to(device).float() / 255)
        rows = data.train_rows
        if settings.learn_labels:  # DATM: start only from images the teacher classifies correctly
            teacher = self.teacher(data, device)
            ipc = self.ipc(data)
            rows = correctly_classified(teacher, data.train.images, data.train.labels, rows, max(100, 20 * ipc), ipc,
                                        config.seed)
        start = initial_synthetic_set(data.train.latents, data.train.labels, rows, num_classes, self.ipc(data),
                                      settings.init, config.seed)
        if settings.learn_labels:
            start.label_logits = teacher(data.train.images[start.source_rows].to(device)).cpu()
        resolution = data.train.images.shape[-1]

        def matching_network():
            return nets.build(settings.net, num_classes=num_classes, resolution=resolution, width=settings.net_width,
                              depth=settings.net_depth)

        return MatchingProblem(num_classes, real_by_class, lambda batch: batch, start, matching_network, CrossEntropy(),
                               normalize)

    def ipc(self, data: PreparedData) -> int:
        """Latents per class: ``distill.ipc``, or with ``distill.storage_ipc`` as many as fit in that many uint8
        images' bytes per class."""
        settings = self.config.distill
        if not settings.storage_ipc:
            return settings.ipc
        latent_shape = tuple(data.train.latents.shape[1:])
        label_values = len(data.classes) if settings.learn_labels else 0
        return latents_in_storage(settings.storage_ipc, tuple(data.train.images.shape[1:]), latent_shape, label_values)

    def teacher(self, data: PreparedData, device: torch.device) -> ExpertTeacher:
        """uint8 images -> logits of the experts of ``buffer.dir`` (their mean at the last epoch), with this run's
        normalisation and ZCA: DATM's label initialiser, and the soft-label evaluation's teacher."""
        settings = self.config.distill
        expects = self.objective_setup(data).buffer_expects
        net = nets.build(settings.net, num_classes=len(data.classes), resolution=data.train.images.shape[-1],
                         width=settings.net_width, depth=settings.net_depth)
        return expert_teacher(self.buffer_directory(), expects, net, self.normalize(data), device)

    def objective_setup(self, data: PreparedData) -> ObjectiveSetup:
        settings = self.config.distill
        expects = {"net": settings.net, "width": settings.net_width, "depth": settings.net_depth,
                   "resolution": self.config.data.resolution, "zca": self.config.data.zca_eps if self.config.data.zca else None,
                   "mean": self.config.data.mean, "std": self.config.data.std}  # the experts saw inputs normalised so
        settings = dataclasses.replace(settings, ipc=self.ipc(data))  # DC's loop lengths follow the latents per class
        return ObjectiveSetup(settings, DifferentiableAugment(self.config.augment), CrossEntropy(), self.config.precision,
                              self.buffer_directory(), expects)

    def save_grid(self, images: torch.Tensor, labels: torch.Tensor, path: Path) -> None:
        save_grid(images, labels, path)  # one row per class, 2x for viewing

    def export_metadata(self, data: PreparedData) -> dict:
        metadata = {"dataset": Path(self.config.data.root).resolve().name, "classes": data.classes, "ipc": self.ipc(data),
                    "normalization": {"mean": self.config.data.mean, "std": self.config.data.std}}
        # evaluation applies what the set was distilled for (whitened or not), whatever its config says
        metadata["zca"] = {"eps": data.zca.eps, "fingerprint": data.zca.fingerprint} if data.zca is not None else None
        if self.config.distill.storage_ipc:
            metadata["storage_ipc"] = self.config.distill.storage_ipc
        return metadata

    # --- expert buffers (trajectory matching) -----------------------------------------------------

    def buffer_directory(self) -> Path:
        """``buffer.dir``, or outputs/buffers/<dataset>-<resolution>px-<net> when it is empty."""
        config, settings = self.config, self.config.distill
        if config.buffer.dir:
            return Path(config.buffer.dir)
        net = settings.net + (f"-w{settings.net_width}" if settings.net_width else "") + (
            f"-d{settings.net_depth}" if settings.net_depth else "")
        return Path("outputs/buffers") / f"{Path(config.data.root).resolve().name}-{config.data.resolution}px-{net}"

    def buffer_meta(self) -> dict:
        """The protocol that trains the experts, as recorded in (and checked against) the buffer's meta.json."""
        config, b, d = self.config, self.config.buffer, self.config.distill
        return {"net": d.net, "width": d.net_width, "depth": d.net_depth, "resolution": config.data.resolution,
                "dataset": Path(config.data.root).resolve().name, "experts": b.experts, "epochs": b.epochs, "lr": b.lr,
                "momentum": b.momentum, "weight_decay": b.weight_decay, "batch_size": b.batch_size,
                "augment": config.augment.strategy if b.augment else "none", "seed": config.seed,
                "precision": config.precision, "mean": config.data.mean, "std": config.data.std,
                **({"zca": config.data.zca_eps} if config.data.zca else {})}  # no key without ZCA: older buffers stay valid

    # --- evaluation -------------------------------------------------------------------------------

    def evaluate(self, distilled: DistilledSet, source: Path, progress: bool = True, folder: Path | None = None) -> dict:
        self.check_evaluation_names()  # no progress in folder: its runs are minutes, and its baselines are cached per run
        judging = prepare_judging(ClassificationTask, self.config, distilled, source, progress)
        config, evaluation, task, data, device = judging.config, judging.evaluation, judging.task, judging.data, judging.device
        teacher = None
        if evaluation.labels == "soft" and evaluation.random_real:
            teacher = task.teacher(data, device)
        report = evaluate_classification(
            judging.images, distilled.labels, judging.real, data.train_rows, data.validation_rows, data.test.images,
            data.test.labels, evaluation, progress=progress, baselines=judging.baselines, protocol_key=judging.protocol_key,
            soft_labels=distilled.soft_labels if evaluation.labels == "soft" else None, teacher=teacher,
            random_real_ipc=distilled.metadata.get("storage_ipc"),  # per byte: the real images of the same bytes
        )
        protocol = {"nets": network_names(evaluation), "epochs": evaluation.epochs, "lr": evaluation.lr,
                    "lr_source": "learned (from the file)" if config.evaluate.lr == "learned" else "config",
                    "labels": evaluation.labels, "teacher": teacher.name if teacher is not None else None,
                    "soft_label_loss": "soft cross-entropy to the soft labels (= KL up to a constant)"
                    if evaluation.labels == "soft" else None,
                    "zca": {"eps": data.zca.eps, "fingerprint": data.zca.fingerprint} if data.zca is not None else None,
                    "normalization": {"mean": task.config.data.mean, "std": task.config.data.std}}  # as resolved
        return {"dataset": distilled.metadata.get("dataset", Path(config.data.root).name), "ipc": report.pop("ipc"),
                **({"set": distilled.metadata["source"]} if "source" in distilled.metadata else {}),
                "protocol": {**protocol, **self.protocol(evaluation, device)}, "storage": set_storage(distilled, source),
                "notes": judging.notes, **report}

    def protocol(self, evaluation: EvaluateConfig, device: torch.device) -> dict:
        """The training protocol every row of an evaluation shares, as its report records it."""
        config = self.config
        return {"momentum": evaluation.momentum, "weight_decay": evaluation.weight_decay,
                "batch_size": evaluation.batch_size, "lr_schedule": "x0.1 at half",
                "augment": config.augment.strategy if evaluation.augment else "none",
                "precision": config.precision, "selection": "none: last epoch, tested once",
                # runs of a row trained as one stacked model (networks with batch norm or dropout: one at a time)
                "batched": use_batched(evaluation.batched, device), "compile": config.compile,
                "test_split": config.data.test_split, "device": str(device),
                "full_data_epochs": evaluation.full_epochs if evaluation.full_data else None}

    def table(self, report: dict) -> str:
        lines = [markdown_table(report)]
        storage = report.get("storage")
        if storage and storage.get("image_bytes"):
            lines.append(f"storage: {storage['mean_bytes_per_class']:.0f} bytes per class ({', '.join(storage['counted'])}), "
                         f"{storage['image_equivalent']:.2f} uint8 images of {storage['image_bytes']} bytes")
        lines += [f"note: {note}" for note in report.get("notes", [])]
        return "\n".join(lines)
