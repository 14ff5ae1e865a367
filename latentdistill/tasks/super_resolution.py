"""Task ``sr``: a super-resolution training set of HR patches, judged by the PSNR/SSIM of SR networks.

SR data has no classes, so k-means over the real patch latents stands in for them (patches of one
cluster share texture and structure). The objectives see the reconstruction loss in place of
cross-entropy: for an HR patch x, an SR network sees down(x) (torch's differentiable bicubic) and is
judged by L1(SR(down(x)), x). The synthetic set is large (a percentage of the training patches), so a
matching step decodes only a batch of each pseudo-class's latents (``sr.synthetic_batch``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from latentdistill import nets
from latentdistill.config import SR_PROTOCOLS, RunConfig
from latentdistill.data.super_resolution import extract_patches, list_images, load_hr_images
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.buffer import ExpertBuffer
from latentdistill.distill.loop import MatchingProblem
from latentdistill.distill.objective import OBJECTIVES, ObjectiveSetup
from latentdistill.distill.synthetic import kmeans
from latentdistill.errors import LatentDistillError
from latentdistill.evaluate.baselines import BaselineCache
from latentdistill.evaluate.sr_training import (
    RunRecords,
    make_lr_patches,
    pixels_digest,
    protocol_key,
    protocol_record,
    sr_protocol,
    train_and_score,
    train_sr,
)
from latentdistill.evaluate.super_resolution import (
    evaluate_sr,
    patch_losses,
    pruned_subset,
    set_row,
    sr_table,
    summarize_sr,
)
from latentdistill.export import DistilledSet, save_grid
from latentdistill.io import atomic_save_file, check_writable, read_safetensors
from latentdistill.runtime import resolve_device
from latentdistill.storage import storage_per_class
from latentdistill.tasks.base import TASKS, autoencoder_tag, cache_root, safe_tag
from latentdistill.tasks.sr_matching import Reconstruction, initial_sr_set, train_sr_experts


@dataclass
class SRData:
    patches: torch.Tensor  # (N, 3, P, P) uint8 HR patches of the pool the distillation draws from
    latents: torch.Tensor  # (N, C, h, w) their encodings
    pseudo_labels: torch.Tensor  # (N,) k-means cluster of each latent
    training_patches: int  # all the training patches (the budget is a fraction of these)


BASELINES = ("full", "random", "pruned", "bicubic")


@TASKS.register("sr")
class SuperResolutionTask:
    name = "sr"
    export_batch = 64

    def __init__(self, config: RunConfig):
        self.config = config
        self.sr = config.sr

    # --- data -----------------------------------------------------------------------------------

    def cache_root(self) -> Path:
        return Path(self.config.cache.dir) if self.config.cache.dir else cache_root()

    @functools.cached_property
    def fingerprint(self) -> str:
        """Names and sizes of the ``sr.train`` images: read once per task, it names every SR cache file."""
        files = [path for folder in self.sr.train for path in list_images(folder)]
        return hashlib.sha256(json.dumps([[str(p.name), p.stat().st_size] for p in files]).encode()).hexdigest()[:16]

    def _prefix(self) -> str:
        return f"sr-{self.fingerprint}-{self.sr.patch_size}px-s{self.sr.stride}"

    def training_patches(self) -> torch.Tensor:
        return extract_patches(load_hr_images(self.sr.train), self.sr.patch_size, self.sr.stride)

    def patch_difficulty(self, patches: torch.Tensor, device: torch.device, progress: bool = True) -> torch.Tensor:
        """Each training patch's L1 under an SRCNN trained on all of them (the ranking of loss-based pruning).
        Cached beside the latents: it depends on the patches, the scale and the quick protocol's numbers, not on a run."""
        # The ranking trains under the quick protocol (with any number sr.iterations/batch_size/lr give), whatever
        # sr.protocol names: the protocol judges a set, and must not change which set is made, nor cost 100k batches.
        sr = dataclasses.replace(self.sr, protocol="quick")
        protocol = sr_protocol(sr)
        key = json.dumps({"ranker": "srcnn", "scale": sr.scale, **protocol_key(protocol), "augment": sr.augment,
                          "seed": self.config.seed, "patches": len(patches)}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        path = self.cache_root() / f"{self._prefix()}-x{sr.scale}-difficulty-{digest}.safetensors"
        if path.is_file():
            tensors, metadata = read_safetensors(path, "SR difficulty cache")
            if metadata.get("key") == key and "loss" in tensors:
                return tensors["loss"]
        lr = make_lr_patches(patches, sr.scale)
        ranker = train_sr(lr, patches, sr, self.config.seed, device, net="srcnn", progress=progress)
        losses = patch_losses(ranker, lr, patches, device)
        try:
            atomic_save_file({"loss": losses.contiguous()}, path, metadata={"key": key})
        except LatentDistillError as error:  # a read-only shared cache only costs the ranking next time
            warnings.warn(f"patch ranking not kept: {error}", stacklevel=2)
        return losses

    def prepare(self, autoencoder, device: torch.device | None = None, progress: bool = True) -> SRData:
        """HR patches of ``sr.train`` (or of their loss-pruned pool, ``sr.pool`` < 1), their latents (cached:
        encoding is the slow part) and k-means pseudo-labels."""
        sr = self.sr
        if sr.patch_size % sr.scale or sr.patch_size % 8:
            raise LatentDistillError(f"config key 'sr.patch_size': {sr.patch_size} must be a multiple of sr.scale ({sr.scale}) and of 8")
        if not sr.budget <= sr.pool <= 1:
            raise LatentDistillError(f"config key 'sr.pool': {sr.pool} must lie between sr.budget ({sr.budget}) and 1")
        patches = self.training_patches()
        cache = self.cache_root() / f"{self._prefix()}-{autoencoder_tag(self.config, subfolder=False)}.safetensors"
        latents = None
        if cache.is_file():
            tensors, metadata = read_safetensors(cache, "SR latent cache")
            if metadata.get("autoencoder") == json.dumps(autoencoder.spec()) and len(tensors.get("latents", ())) == len(patches):
                latents = tensors["latents"]
        if latents is None:
            check_writable(cache.parent, "cache.dir")  # before minutes of encoding, not after
            latents = autoencoder.encode_batched(patches.float() / 255, batch_size=64, progress=progress)
            atomic_save_file({"latents": latents.contiguous()}, cache, metadata={"autoencoder": json.dumps(autoencoder.spec())})
        training_patches = len(patches)
        if sr.pool < 1:
            losses = self.patch_difficulty(patches, device or torch.device("cpu"), progress)
            rows = pruned_subset(losses, max(1, round(sr.pool * training_patches)), sr.prune_drop)
            patches, latents = patches[rows], latents[rows]
        _, assignment = kmeans(latents.flatten(1), sr.pseudo_classes, torch.Generator().manual_seed(self.config.seed))
        _, pseudo_labels = torch.unique(assignment, return_inverse=True)  # no empty pseudo-class
        return SRData(patches, latents, pseudo_labels, training_patches)

    def summary(self, data: SRData) -> str:
        return (f"SR patches: {data.training_patches} training patches, {len(data.patches)} in the pool, "
                f"latents cached in {self.cache_root()}")

    def classes(self, data: SRData) -> list[str]:
        return [f"cluster_{c}" for c in range(int(data.pseudo_labels.max()) + 1)]

    def check_names(self) -> None:
        OBJECTIVES.get(self.config.distill.objective)
        if self.config.distill.objective == "mtt":
            raise LatentDistillError("config key 'distill.objective': task sr's experts train with Adam, which mtt's SGD "
                                     "student cannot follow; match trained networks with gm or pm and distill.matching_nets=experts")
        nets.build(self.sr.net, scale=self.sr.scale, task="sr", config_key="sr.net")
        for key, value in (("data.zca", self.config.data.zca), ("distill.storage_ipc", self.config.distill.storage_ipc),
                           ("distill.learn_labels", self.config.distill.learn_labels),
                           ("evaluate.labels", self.config.evaluate.labels == "soft"),
                           ("evaluate.lr", self.config.evaluate.lr == "learned")):
            if value:
                raise LatentDistillError(f"config key '{key}' is for classification; task sr does not read it")
        defaults = type(self.config.buffer)()
        for key in ("lr", "momentum", "weight_decay", "batch_size", "augment", "parallel"):
            if getattr(self.config.buffer, key) != getattr(defaults, key):
                raise LatentDistillError(f"config key 'buffer.{key}' is for classification experts; task sr trains its "
                                         "experts as its protocol trains (sr.protocol, sr.augment)")
        if not self.sr.train or not self.sr.test:
            raise LatentDistillError(f"config key 'sr.{'train' if not self.sr.train else 'test'}' names no image folder")
        unknown = [name for name in self.sr.baselines if name not in BASELINES]
        if unknown:
            raise LatentDistillError(f"config key 'sr.baselines': unknown baseline '{unknown[0]}' (known: {', '.join(BASELINES)})")

    def check_prior(self, prior_name: str) -> None:
        if prior_name != "vae":
            raise LatentDistillError(f"config key 'prior.name': task sr decodes its latents directly (prior 'vae'), not '{prior_name}'")

    # --- distillation ---------------------------------------------------------------------------

    def matching_problem(self, data: SRData, device: torch.device) -> MatchingProblem:
        sr = self.sr
        classes = int(data.pseudo_labels.max()) + 1
        total = max(classes, round(sr.budget * data.training_patches))
        if total > len(data.patches):
            raise LatentDistillError(f"the pool holds {len(data.patches)} patches, fewer than the {total} to distil "
                                     "(config keys 'sr.pool', 'sr.budget')")
        start = initial_sr_set(data.latents, data.pseudo_labels, classes, total, self.config.seed)
        real_by_class = {c: data.patches[data.pseudo_labels == c] for c in range(classes)}

        def prepare_real(batch: torch.Tensor) -> torch.Tensor:
            return batch.to(device).float() / 255

        matching_network = functools.partial(nets.build, sr.net, scale=sr.scale, task="sr")
        return MatchingProblem(classes, real_by_class, prepare_real, start, matching_network, Reconstruction(sr.scale),
                               lambda images: images.float(), synthetic_batch=sr.synthetic_batch)

    def objective_setup(self, data: SRData) -> ObjectiveSetup:
        # No DSA: flips and crops of SR patches change what the network must reconstruct.
        no_augment = DifferentiableAugment(type(self.config.augment)(strategy="none"))
        expects = {key: self.buffer_meta()[key] for key in ("task", "net", "scale", "patches", "lr", "batch_size")}
        return ObjectiveSetup(self.config.distill, no_augment, Reconstruction(self.sr.scale), self.config.precision,
                              self.buffer_directory(), expects)

    def save_grid(self, images: torch.Tensor, labels: torch.Tensor, path: Path) -> None:
        shown = images[:64]  # a sample of the patches, at their own size
        save_grid(shown, torch.zeros(len(shown), dtype=torch.long), path, scale=1)

    def export_metadata(self, data: SRData) -> dict:
        sr = self.sr
        return {"classes": self.classes(data), "dataset": [Path(folder).name for folder in sr.train], "scale": sr.scale,
                "patch_size": sr.patch_size, "budget": sr.budget, "real_patches": data.training_patches,
                "pool": sr.pool, "pool_patches": len(data.patches)}

    # --- expert trajectories (gradient matching on trained networks) ------------------------------

    def buffer_directory(self) -> Path:
        """``buffer.dir``, or outputs/buffers/sr-<patches>-x<scale>-<net> when it is empty."""
        if self.config.buffer.dir:
            return Path(self.config.buffer.dir)
        protocol, quick = sr_protocol(self.sr), SR_PROTOCOLS["quick"]  # experts depend on the lr and batch only
        same = (protocol.lr, protocol.batch_size) == (quick.lr, quick.batch_size)
        suffix = "" if same else "-" + safe_tag(f"lr{protocol.lr:g}-b{protocol.batch_size}")
        return Path("outputs/buffers") / f"{self._prefix()}-x{self.sr.scale}-{self.sr.net}{suffix}"

    def buffer_meta(self) -> dict:
        """How SR experts are trained: as the evaluation trains its networks (Adam at the protocol's lr and
        batch, flips and rotations), on the reconstruction loss the objectives see (torch's bicubic), without the
        lr decay; an epoch is one pass over the training patches."""
        protocol, buffer = sr_protocol(self.sr), self.config.buffer
        return {"task": "sr", "net": self.sr.net, "scale": self.sr.scale, "patches": self._prefix(),
                "experts": buffer.experts, "epochs": buffer.epochs, "optimizer": "adam", "lr": protocol.lr,
                "batch_size": protocol.batch_size, "augment": "dihedral" if self.sr.augment else "none",
                "seed": self.config.seed}

    def train_buffer(self, device: torch.device, progress: bool = True) -> ExpertBuffer:
        """Train ``buffer.experts`` SR networks on every training patch and record their parameters after each
        epoch (``train_sr_experts``)."""
        return train_sr_experts(self.training_patches(), self.buffer_directory(), self.buffer_meta(),
                                Reconstruction(self.sr.scale), self.sr.augment, device, progress)

    # --- evaluation -------------------------------------------------------------------------------

    def test_sets(self) -> dict[str, list[torch.Tensor]]:
        return {Path(folder).name: load_hr_images(folder) for folder in self.sr.test}

    def check_set(self, distilled: DistilledSet, source: Path) -> None:
        """Refuse, before any training, a set this config cannot judge."""
        self.check_names()
        if distilled.metadata.get("scale") not in (None, self.sr.scale):
            raise LatentDistillError(f"{source} was distilled for x{distilled.metadata['scale']}; config key 'sr.scale' "
                                     f"is {self.sr.scale}: set sr.scale={distilled.metadata['scale']}")
        if distilled.images.shape[-1] % self.sr.scale:
            raise LatentDistillError(f"{source} holds {distilled.images.shape[-1]}px patches, not a multiple of "
                                     f"config key 'sr.scale' ({self.sr.scale})")

    def evaluate(self, distilled: DistilledSet, source: Path, progress: bool = True, folder: Path | None = None) -> dict:
        """Train ``sr.runs`` SR networks on the distilled patches and on each baseline of the same size, with
        one protocol; PSNR/SSIM (Y, border = scale) on every test set. With ``folder``, each finished run and the
        running network's checkpoint are kept in ``folder/progress``, so the same evaluation run again into the
        same folder continues (a converged protocol is hours of a CPU per network)."""
        sr, seed = self.sr, self.config.seed
        device = resolve_device(self.config.device)
        self.check_set(distilled, source)
        real = self.training_patches()
        count = len(distilled.images)
        tests = self.test_sets()
        # Baselines do not depend on the distilled set: kept beside the latent cache and reused by every later
        # evaluation with the same data, size, protocol, seed and device type.
        baselines = BaselineCache(self.cache_root() / f"sr-{self.fingerprint}-baselines.json"
                                  if self.config.evaluate.reuse_baselines else None)
        training = protocol_record(sr_protocol(sr))
        protocol = {"scale": sr.scale, "net": sr.net, "patch_size": sr.patch_size, "stride": sr.stride,
                    **protocol_key(sr_protocol(sr)), "augment": sr.augment, "runs": sr.runs, "seed": seed,
                    "tests": [str(Path(t).resolve()) for t in sr.test], "device": device.type}
        choices = {
            "full": lambda: real,
            "random": lambda: real[torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:count]],
            "pruned": lambda: real[pruned_subset(self.patch_difficulty(real, device, progress), count, sr.prune_drop)],
        }
        started = time.perf_counter()
        results: dict[str, dict] = {}
        patches_used: dict[str, int] = {}
        reused: list[str] = []
        own, label = set_row(distilled.metadata)  # "distilled" only for a set that took matching steps
        for name in [own] + [b for b in sr.baselines if b in choices]:
            key = json.dumps({"set": name, "count": len(real) if name == "full" else count,
                              "prune_drop": sr.prune_drop if name == "pruned" else None, **protocol}, sort_keys=True)
            if name != own and (saved := baselines.get(key)) is not None:
                results[name], patches_used[name] = saved["results"], saved["patches"]
                reused.append(name)
                continue
            hr = distilled.images if name == own else choices[name]()
            row = json.dumps({"pixels": pixels_digest(hr), "row": key})  # progress is kept by what was trained on
            records = RunRecords(folder / "progress", row) if folder is not None else None
            per_test = train_and_score(hr, tests, sr, self.config.seed, device, progress, records)
            results[name], patches_used[name] = per_test, len(hr)
            if name != own:
                baselines.put(key, {"results": per_test, "patches": len(hr)})
        if "bicubic" in sr.baselines:
            results["bicubic"] = {name: {k: [v] for k, v in evaluate_sr("bicubic", images, sr.scale).items() if k != "images"}
                                  for name, images in tests.items()}
        return {
            "task": "sr", "scale": sr.scale, "net": sr.net, "patches": patches_used, "budget": count / len(real),
            "labels": {own: label},
            "protocol": {**training, "loss": "L1", "optimizer": "Adam",
                         "augment": "flips, 90-degree rotations" if sr.augment else "none",
                         "patch_size": sr.patch_size, "runs": sr.runs, "device": str(device),
                         "metrics": "PSNR/SSIM on Y (BT.601), border = scale, LR by PIL bicubic"},
            "storage": storage_per_class(source),  # bytes per pseudo-class
            "minutes": round((time.perf_counter() - started) / 60, 2), "reused_baselines": reused,
            "results": {name: {test: summarize_sr(values) for test, values in per_test.items()}
                        for name, per_test in results.items()},
        }

    def table(self, report: dict) -> str:
        return sr_table(report)
