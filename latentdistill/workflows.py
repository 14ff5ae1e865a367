"""What each CLI verb and pipeline script does, as one library call each.

These functions own the side effects at the edges (run folders, caches, reports); the parts they
call take and return tensors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from latentdistill import nets
from latentdistill.autoencoders import load_autoencoder
from latentdistill.config import (
    RunConfig,
    apply_config_file,
    config_from_dict,
    config_to_dict,
    parse_overrides,
    save_config,
    update_config,
)
from latentdistill.data.image_folder import ImageFolder, split_train_validation
from latentdistill.data.latent_cache import LatentCache, encode_dataset
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.buffer import buffer_directory, buffer_meta, train_experts
from latentdistill.distill.loop import distill
from latentdistill.errors import LatentDistillError
from latentdistill.evaluate.classification import (
    BaselineCache,
    evaluate_classification,
    markdown_table,
    network_names,
)
from latentdistill.export import (
    FORMAT_VERSION,
    DistilledSet,
    package_versions,
    read_distilled,
    save_grid,
    write_distilled,
)
from latentdistill.io import atomic_write_text
from latentdistill.priors import build_prior
from latentdistill.runtime import Normalize, resolve_device, set_threads

DISTILLED_FILE = "distilled.safetensors"
# Baseline accuracies (random real, full data) kept beside the train latent cache and reused.
BASELINES_FILE = "baselines.json"


@dataclass
class PreparedData:
    train: LatentCache
    test: LatentCache
    train_rows: torch.Tensor
    validation_rows: torch.Tensor

    @property
    def classes(self) -> list[str]:
        return self.train.classes


def _cache_root() -> Path:
    return Path(os.environ.get("LATENTDISTILL_CACHE", "outputs/cache"))


def cache_directory(config: RunConfig) -> Path:
    if config.cache.dir:
        return Path(config.cache.dir)
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{Path(config.autoencoder.name_or_path).name}-{config.autoencoder.subfolder or ''}").strip("-")
    dataset = Path(config.data.root).resolve().name
    return _cache_root() / f"{dataset}-{config.data.resolution}px-{tag}"


def prepare_data(config: RunConfig, autoencoder=None, progress: bool = True) -> PreparedData:
    """Read (or build) the train latent cache and the test image cache, and carve the validation rows."""
    if autoencoder is None:
        autoencoder = load_autoencoder(config.autoencoder.name_or_path, config.autoencoder.kind, config.autoencoder.subfolder)
    directory = cache_directory(config)
    if not Path(config.data.root).is_dir():
        raise LatentDistillError(
            f"config key 'data.root': dataset folder not found: {config.data.root} (relative paths are read from {Path.cwd()})"
        )
    train_folder = ImageFolder.scan(config.data.root, config.data.train_split)
    test_folder = ImageFolder.scan(config.data.root, config.data.test_split, classes=train_folder.classes)
    common = dict(shard_size=config.cache.shard_size, batch_size=config.cache.batch_size, skip_bad=config.data.skip_bad, progress=progress)
    train = encode_dataset(train_folder, autoencoder, config.data.resolution, directory / config.data.train_split, **common)
    test = encode_dataset(test_folder, None, config.data.resolution, directory / config.data.test_split, **common)
    for cache in (train, test):
        if cache.meta["skipped"]:
            print(f"skipped {len(cache.meta['skipped'])} unreadable images in {cache.directory} (listed in its meta.json)")
    train_rows, validation_rows = split_train_validation(
        train.labels, config.data.val_per_class, config.data.split_seed, train.classes
    )
    return PreparedData(train, test, train_rows, validation_rows)


def run_encode(config: RunConfig, progress: bool = True) -> PreparedData:
    set_threads(config.threads)
    return prepare_data(config, progress=progress)


def run_train_prior(config: RunConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train a class-conditional latent diffusion prior on the dataset's latent cache (built if missing)."""
    from latentdistill.priors.training import train_prior

    set_threads(config.threads)
    device = resolve_device(config.device)
    autoencoder = load_autoencoder(config.autoencoder.name_or_path, config.autoencoder.kind, config.autoencoder.subfolder)
    data = prepare_data(config, autoencoder, progress=progress)
    if data.train.latents is None:
        raise LatentDistillError(f"latent cache {data.train.directory} holds no latents")
    return train_prior(
        config, data.train.latents, data.train.labels, data.train_rows, data.validation_rows, data.classes,
        autoencoder.spec(), device, resume=resume, progress=progress,
    )


def run_buffer(config: RunConfig, progress: bool = True) -> Path:
    """Train the expert trajectories that objective ``mtt`` matches (kept, resumed and reused in buffer.dir)."""
    set_threads(config.threads)
    device = resolve_device(config.device)
    data = prepare_data(config, progress=progress)
    if nets.TASKS.get(config.distill.net) != "classification":
        raise LatentDistillError(f"config key 'distill.net': unknown network '{config.distill.net}' (known: {', '.join(sorted(nets.NETWORKS))})")
    directory = buffer_directory(config)
    normalize = Normalize(config.data.mean, config.data.std).to(device)
    augment = DifferentiableAugment(config.augment) if config.buffer.augment else None
    rows = data.train_rows
    train_experts(data.train.images[rows], data.train.labels[rows], len(data.classes), directory, buffer_meta(config),
                  normalize, augment, config.seed, device, config.precision, progress=progress)
    save_config(config, directory / "config.yaml")
    return directory


def distill_minutes(log_path: Path) -> float:
    """Time spent in the distillation loop, summed over every session of a (resumed) run."""
    if not log_path.exists():
        return 0.0
    return sum(json.loads(line)["seconds"] for line in log_path.read_text().splitlines() if line.strip()) / 60


def run_distill(config: RunConfig, resume: bool = False, accelerator=None, progress: bool = True) -> Path:
    """Distill into ``config.output_dir`` and export ``distilled.safetensors`` and ``grid.png``."""
    set_threads(config.threads)
    device = accelerator.device if (accelerator is not None and config.device == "auto") else resolve_device(config.device)
    run_dir = Path(config.output_dir)
    output = run_dir / DISTILLED_FILE
    if output.exists() and not resume:
        raise LatentDistillError(f"{output} already exists: choose another output_dir (nothing was overwritten)")
    is_main = accelerator is None or accelerator.is_main_process
    autoencoder = load_autoencoder(config.autoencoder.name_or_path, config.autoencoder.kind, config.autoencoder.subfolder)
    # The main process builds (or checks) the cache before the others read it.
    with accelerator.main_process_first() if accelerator is not None else contextlib.nullcontext():
        data = prepare_data(config, autoencoder, progress=progress and is_main)
    prior = build_prior(config.prior, data.classes, config.precision)
    if data.train.latents is None:
        raise LatentDistillError(f"latent cache {data.train.directory} holds no latents")
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_main:
        save_config(config, run_dir / "config.yaml")
    synthetic = distill(
        config, data.train.latents, data.train.labels, data.train.images, data.train_rows, len(data.classes),
        autoencoder, prior, run_dir, device, resume=resume, accelerator=accelerator, progress=progress,
    )
    minutes = distill_minutes(run_dir / "distill_log.jsonl")
    if is_main:
        embeddings = None if synthetic.embeddings is None else synthetic.embeddings.to(device)
        with torch.no_grad():
            images = autoencoder.to(device).decode(prior.to(device)(synthetic.latents.to(device), embeddings)).cpu()
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        metadata = {
            "format_version": FORMAT_VERSION,
            "task": "classification",
            "dataset": Path(config.data.root).resolve().name,
            "classes": data.classes,
            "ipc": config.distill.ipc,
            "autoencoder": autoencoder.spec(),
            "prior": prior.spec(),
            "config": config_to_dict(config),
            "seed": config.seed,
            "versions": package_versions(),
            "distill_iterations": config.distill.iterations,
            "distill_minutes": round(minutes, 2),
            "device": str(device),
            "processes": 1 if accelerator is None else accelerator.num_processes,
        }
        if synthetic.learned:  # e.g. MTT's learned student learning rate
            metadata["learned"] = {name: float(value) for name, value in synthetic.learned.items()}
        write_distilled(output, DistilledSet(synthetic.latents, synthetic.labels, images, synthetic.embeddings, metadata))
        save_grid(images, synthetic.labels, run_dir / "grid.png")
    return output


def evaluation_config(distilled: DistilledSet, config_path: str | None, overrides: list[str]) -> RunConfig:
    """The run's own config from the file, then the keys a YAML file sets, then ``key=value`` overrides."""
    config = config_from_dict(distilled.metadata["config"]) if "config" in distilled.metadata else RunConfig()
    if config_path:
        apply_config_file(config, config_path)
    if overrides:
        update_config(config, parse_overrides(overrides))
    return config


def run_evaluate(path: str | Path, config_path: str | None = None, overrides: list[str] | None = None, progress: bool = True) -> dict:
    """Evaluate a distilled file; writes ``report.json`` beside it and records the result in the file."""
    path = Path(path)
    distilled = read_distilled(path)
    config = evaluation_config(distilled, config_path, overrides or [])
    if distilled.metadata.get("task") == "sr":
        return run_sr_evaluate(path, distilled, config, progress=progress)
    set_threads(config.threads)
    device = resolve_device(config.device)
    if distilled.images is None:
        raise LatentDistillError(f"{path} holds no decoded images to train on")
    data = prepare_data(config, progress=progress)
    if data.classes != distilled.classes:
        raise LatentDistillError(f"{path} was distilled for classes {distilled.classes}, the dataset at {config.data.root} has {data.classes}")
    classifiers = sorted(name for name, task in nets.TASKS.items() if task == "classification")
    unknown = [name for name in network_names(config.evaluate) if name not in classifiers]
    if unknown:
        raise LatentDistillError(f"config key 'evaluate.nets': unknown network '{unknown[0]}' (known: {', '.join(classifiers)})")
    normalize = Normalize(config.data.mean, config.data.std).to(device)
    augment = DifferentiableAugment(config.augment) if config.evaluate.augment else None
    report = evaluate_classification(
        distilled.images, distilled.labels, data.train.images, data.train.labels, data.train_rows, data.validation_rows,
        data.test.images, data.test.labels, len(data.classes), config.evaluate, normalize, augment,
        seed=config.seed, device=device, precision=config.precision, progress=progress,
        baselines=BaselineCache(data.train.directory / BASELINES_FILE if config.evaluate.reuse_baselines else None),
        protocol_key={"data": config_to_dict(config)["data"], "augment": config_to_dict(config)["augment"],
                      "augmented": config.evaluate.augment, "device": device.type,
                      "fingerprint": data.train.meta.get("fingerprint")},
    )
    report = {
        "dataset": distilled.metadata.get("dataset", Path(config.data.root).name),
        "ipc": report.pop("ipc"),
        "protocol": {
            "nets": network_names(config.evaluate), "epochs": config.evaluate.epochs, "lr": config.evaluate.lr,
            "momentum": config.evaluate.momentum, "weight_decay": config.evaluate.weight_decay,
            "batch_size": config.evaluate.batch_size, "lr_schedule": "x0.1 at half",
            "augment": config.augment.strategy if config.evaluate.augment else "none",
            "precision": config.precision, "selection": "none: last epoch, tested once",
            "test_split": config.data.test_split, "device": str(device),
            "full_data_epochs": config.evaluate.full_epochs if config.evaluate.full_data else None,
        },
        **report,
    }
    atomic_write_text(path.parent / "report.json", json.dumps(report, indent=2))
    distilled.metadata["evaluation"] = report
    write_distilled(path, distilled)
    print(markdown_table(report))
    return report


# --- task "sr": super-resolution training sets ------------------------------------------------


@dataclass
class SRData:
    patches: torch.Tensor  # (N, 3, P, P) uint8 HR patches of the pool the distillation draws from
    latents: torch.Tensor  # (N, C, h, w) their encodings
    pseudo_labels: torch.Tensor  # (N,) k-means cluster of each latent
    training_patches: int  # all the training patches (the budget is a fraction of these)


def _sr_cache_root(config: RunConfig) -> Path:
    return Path(config.cache.dir) if config.cache.dir else _cache_root()


def _sr_fingerprint(config: RunConfig) -> str:
    from latentdistill.data.super_resolution import list_images

    files = [path for folder in config.sr.train for path in list_images(folder)]
    return hashlib.sha256(json.dumps([[str(p.name), p.stat().st_size] for p in files]).encode()).hexdigest()[:16]


def _sr_cache_path(config: RunConfig) -> Path:
    sr = config.sr
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(config.autoencoder.name_or_path).name)
    return _sr_cache_root(config) / f"sr-{_sr_fingerprint(config)}-{sr.patch_size}px-s{sr.stride}-{tag}.safetensors"


def sr_patch_difficulty(config: RunConfig, patches: torch.Tensor, device: torch.device, progress: bool = True) -> torch.Tensor:
    """Each training patch's L1 under an SRCNN trained on all of them (the ranking of loss-based pruning).
    Cached beside the latents: it depends on the patches, the scale and the SR protocol, not on a run."""
    from latentdistill.evaluate.super_resolution import make_lr_patches, patch_losses, train_sr
    from latentdistill.io import atomic_save_file, read_safetensors

    sr = config.sr
    key = json.dumps({"ranker": "srcnn", "scale": sr.scale, "iterations": sr.iterations, "batch_size": sr.batch_size,
                      "lr": sr.lr, "augment": sr.augment, "seed": config.seed, "patches": len(patches)}, sort_keys=True)
    path = _sr_cache_root(config) / f"sr-{_sr_fingerprint(config)}-{sr.patch_size}px-s{sr.stride}-x{sr.scale}-difficulty-{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"
    if path.is_file():
        tensors, metadata = read_safetensors(path)
        if metadata.get("key") == key:
            return tensors["loss"]
    lr = make_lr_patches(patches, sr.scale)
    ranker = train_sr(lr, patches, sr, config.seed, device, net="srcnn", progress=progress)
    losses = patch_losses(ranker, lr, patches, device)
    atomic_save_file({"loss": losses.contiguous()}, path, metadata={"key": key})
    return losses


def prepare_sr_data(config: RunConfig, autoencoder, device: torch.device | None = None, progress: bool = True) -> SRData:
    """HR patches of ``sr.train`` (or of their loss-pruned pool, ``sr.pool`` < 1), their latents (cached:
    encoding is the slow part) and k-means pseudo-labels."""
    from latentdistill.data.super_resolution import extract_patches, load_hr_images
    from latentdistill.distill.synthetic import kmeans
    from latentdistill.evaluate.super_resolution import pruned_subset
    from latentdistill.io import atomic_save_file, read_safetensors

    sr = config.sr
    if sr.patch_size % sr.scale or sr.patch_size % 8:
        raise LatentDistillError(f"config key 'sr.patch_size': {sr.patch_size} must be a multiple of sr.scale ({sr.scale}) and of 8")
    if not sr.budget <= sr.pool <= 1:
        raise LatentDistillError(f"config key 'sr.pool': {sr.pool} must lie between sr.budget ({sr.budget}) and 1")
    patches = extract_patches(load_hr_images(sr.train), sr.patch_size, sr.stride)
    cache = _sr_cache_path(config)
    latents = None
    if cache.is_file():
        tensors, metadata = read_safetensors(cache)
        if metadata.get("autoencoder") == json.dumps(autoencoder.spec()) and len(tensors["latents"]) == len(patches):
            latents = tensors["latents"]
    if latents is None:
        latents = autoencoder.encode_batched(patches.float() / 255, batch_size=64)
        atomic_save_file({"latents": latents.contiguous()}, cache, metadata={"autoencoder": json.dumps(autoencoder.spec())})
    training_patches = len(patches)
    if sr.pool < 1:
        losses = sr_patch_difficulty(config, patches, device or torch.device("cpu"), progress)
        rows = pruned_subset(losses, max(1, round(sr.pool * training_patches)), sr.prune_drop)
        patches, latents = patches[rows], latents[rows]
    _, pseudo_labels = kmeans(latents.flatten(1), sr.pseudo_classes, torch.Generator().manual_seed(config.seed))
    return SRData(patches, latents, pseudo_labels, training_patches)


def run_sr_distill(config: RunConfig, resume: bool = False, progress: bool = True) -> Path:
    """Distill ``sr.budget`` of the SR training patches into ``output_dir/distilled.safetensors`` (task sr)."""
    from latentdistill.distill.super_resolution import distill_sr

    set_threads(config.threads)
    device = resolve_device(config.device)
    run_dir = Path(config.output_dir)
    output = run_dir / DISTILLED_FILE
    if output.exists() and not resume:
        raise LatentDistillError(f"{output} already exists: choose another output_dir (nothing was overwritten)")
    autoencoder = load_autoencoder(config.autoencoder.name_or_path, config.autoencoder.kind, config.autoencoder.subfolder)
    data = prepare_sr_data(config, autoencoder, device, progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    synthetic = distill_sr(config, data.patches, data.latents, data.pseudo_labels, autoencoder, run_dir, device,
                           total=round(config.sr.budget * data.training_patches), resume=resume, progress=progress)
    images = (autoencoder.to(device).decode_batched(synthetic.latents, batch_size=64).clamp(0, 1) * 255).round().to(torch.uint8)
    metadata = {
        "format_version": FORMAT_VERSION, "task": "sr",
        "classes": [f"cluster_{c}" for c in range(config.sr.pseudo_classes)],
        "dataset": [Path(folder).name for folder in config.sr.train], "scale": config.sr.scale,
        "patch_size": config.sr.patch_size, "budget": config.sr.budget, "real_patches": data.training_patches,
        "pool": config.sr.pool, "pool_patches": len(data.patches),
        "autoencoder": autoencoder.spec(), "config": config_to_dict(config), "seed": config.seed,
        "versions": package_versions(), "distill_iterations": config.distill.iterations,
        "distill_minutes": round(distill_minutes(run_dir / "distill_log.jsonl"), 2), "device": str(device),
    }
    write_distilled(output, DistilledSet(synthetic.latents, synthetic.labels, images, None, metadata))
    save_grid(images[:64], torch.zeros(min(64, len(images)), dtype=torch.long), run_dir / "grid.png", scale=1)
    return output


def _sr_test_sets(config: RunConfig) -> dict[str, list[torch.Tensor]]:
    from latentdistill.data.super_resolution import load_hr_images

    return {Path(folder).name: load_hr_images(folder) for folder in config.sr.test}


def run_sr_evaluate(path: Path, distilled: DistilledSet, config: RunConfig, progress: bool = True) -> dict:
    """Train ``sr.runs`` SR networks on the distilled patches and on each baseline of the same size, with
    one protocol; PSNR/SSIM (Y, border = scale) on every test set; writes ``report.json``."""
    from latentdistill.data.super_resolution import extract_patches, load_hr_images
    from latentdistill.evaluate.super_resolution import (
        evaluate_sr,
        make_lr_patches,
        pruned_subset,
        summarize_sr,
        train_sr,
    )

    sr = config.sr
    set_threads(config.threads)
    device = resolve_device(config.device)
    if distilled.images is None:
        raise LatentDistillError(f"{path} holds no decoded images to train on")
    real = extract_patches(load_hr_images(sr.train), sr.patch_size, sr.stride)
    count = len(distilled.images)
    tests = _sr_test_sets(config)
    # Baselines do not depend on the distilled set: kept beside the latent cache and reused by every later
    # evaluation with the same data, size, protocol, seed and device type.
    baselines = BaselineCache(_sr_cache_root(config) / f"sr-{_sr_fingerprint(config)}-{BASELINES_FILE}"
                              if config.evaluate.reuse_baselines else None)
    protocol = {"scale": sr.scale, "net": sr.net, "patch_size": sr.patch_size, "stride": sr.stride, "iterations": sr.iterations,
                "batch_size": sr.batch_size, "lr": sr.lr, "augment": sr.augment, "runs": sr.runs, "seed": config.seed,
                "tests": [str(Path(t).resolve()) for t in sr.test], "device": device.type}

    def pruned_rows() -> torch.Tensor:
        return pruned_subset(sr_patch_difficulty(config, real, device, progress), count, sr.prune_drop)

    choices = {"full": lambda: real, "random": lambda: real[torch.randperm(len(real), generator=torch.Generator().manual_seed(config.seed))[:count]],
               "pruned": lambda: real[pruned_rows()]}
    started = time.perf_counter()
    results: dict[str, dict] = {}
    patches_used: dict[str, int] = {}
    reused: list[str] = []
    for name in ["distilled"] + [b for b in sr.baselines if b in choices]:
        key = json.dumps({"set": name, "count": len(real) if name == "full" else count, "prune_drop": sr.prune_drop if name == "pruned" else None,
                          **protocol}, sort_keys=True)
        if name != "distilled" and (saved := baselines.get(key)) is not None:
            results[name], patches_used[name] = saved["results"], saved["patches"]
            reused.append(name)
            continue
        hr = distilled.images if name == "distilled" else choices[name]()
        lr = make_lr_patches(hr, sr.scale)
        per_test: dict[str, dict] = {}
        for run in range(sr.runs):
            model = train_sr(lr, hr, sr, config.seed * 1000 + run, device, progress=progress)
            for test_name, images in tests.items():
                scores = evaluate_sr(model, images, sr.scale, device)
                entry = per_test.setdefault(test_name, {"psnr": [], "ssim": []})
                entry["psnr"].append(scores["psnr"])
                entry["ssim"].append(scores["ssim"])
        results[name], patches_used[name] = per_test, len(hr)
        if name != "distilled":
            baselines.put(key, {"results": per_test, "patches": len(hr)})
    if "bicubic" in sr.baselines:
        results["bicubic"] = {name: {k: [v] for k, v in evaluate_sr("bicubic", images, sr.scale).items() if k != "images"}
                              for name, images in tests.items()}
    report = {
        "task": "sr", "scale": sr.scale, "net": sr.net, "patches": patches_used,
        "budget": count / len(real),
        "protocol": {"iterations": sr.iterations, "batch_size": sr.batch_size, "lr": sr.lr, "loss": "L1",
                     "optimizer": "Adam", "augment": "flips, 90-degree rotations" if sr.augment else "none",
                     "patch_size": sr.patch_size, "runs": sr.runs, "device": str(device),
                     "metrics": "PSNR/SSIM on Y (BT.601), border = scale, LR by PIL bicubic"},
        "minutes": round((time.perf_counter() - started) / 60, 2), "reused_baselines": reused,
        "results": {name: {test: summarize_sr(values) for test, values in per_test.items()} for name, per_test in results.items()},
    }
    atomic_write_text(path.parent / "report.json", json.dumps(report, indent=2))
    distilled.metadata["evaluation"] = report
    write_distilled(path, distilled)
    print(sr_table(report))
    return report


def sr_table(report: dict) -> str:
    tests = list(next(iter(report["results"].values())))
    header = [f"x{report['scale']} {report['net']}", "patches"] + [f"{t} PSNR / SSIM" for t in tests]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, per_test in report["results"].items():
        cells = [name, str(report["patches"].get(name, ""))]
        for test in tests:
            r = per_test[test]
            cells.append(f"{r['psnr']['mean']:.2f} ± {r['psnr']['std']:.2f} / {r['ssim']['mean']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_sr_train(config: RunConfig, distilled_path: str | None = None, progress: bool = True) -> Path:
    """Train ``sr.net`` on the ``sr.train`` folders' patches, or on a distilled file's; save the model to
    ``output_dir/sr_model.safetensors`` and print PSNR/SSIM on ``sr.test``."""
    from latentdistill.data.super_resolution import extract_patches, load_hr_images
    from latentdistill.evaluate.super_resolution import evaluate_sr, make_lr_patches, save_sr_model, train_sr

    set_threads(config.threads)
    device = resolve_device(config.device)
    sr = config.sr
    if distilled_path:
        distilled = read_distilled(distilled_path)
        if distilled.metadata.get("task") != "sr" or distilled.images is None:
            raise LatentDistillError(f"{distilled_path} is not a distilled SR set with images")
        hr = distilled.images
    else:
        hr = extract_patches(load_hr_images(sr.train), sr.patch_size, sr.stride)
    model = train_sr(make_lr_patches(hr, sr.scale), hr, sr, config.seed, device, progress=progress)
    run_dir = Path(config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    output = run_dir / "sr_model.safetensors"
    save_sr_model(output, model, sr.net, sr.scale, {"trained_on": distilled_path or sr.train, "patches": len(hr)})
    for name, images in _sr_test_sets(config).items():
        print(json.dumps({"test": name, **evaluate_sr(model, images, sr.scale, device)}))
    return output


def run_sr_eval(model: str, scale: int, folder: str, device: str = "auto") -> dict:
    """``latentdistill sr-eval``: mean PSNR/SSIM of bicubic or a saved SR model on a folder of HR images."""
    from latentdistill.data.super_resolution import load_hr_images
    from latentdistill.evaluate.super_resolution import evaluate_sr, load_sr_model

    images = load_hr_images(folder)
    if model == "bicubic":
        return evaluate_sr("bicubic", images, scale)
    network, trained_scale = load_sr_model(model)
    if trained_scale != scale:
        raise LatentDistillError(f"{model} was trained for x{trained_scale}, not x{scale}")
    target = resolve_device(device)
    return evaluate_sr(network.to(target), images, scale, target)
