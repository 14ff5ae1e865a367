"""What each CLI verb and pipeline script does, as one library call each, for any task.

These functions own the side effects at the edges (run folders, locks, reports); the task chosen by
``config.task`` owns its data, loss and evaluation, and the parts it calls take and return tensors.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from latentdistill import nets
from latentdistill.autoencoders import load_autoencoder
from latentdistill.config import RunConfig, config_to_dict
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.buffer import train_experts
from latentdistill.distill.classifier_training import ClassifierTraining
from latentdistill.distill.loop import distill
from latentdistill.distill.objective import build_objective
from latentdistill.distill.synthetic import ImageGenerator, SyntheticSet
from latentdistill.errors import LatentDistillError
from latentdistill.export import FORMAT_VERSION, DistilledSet, package_versions, read_distilled, write_distilled
from latentdistill.priors import PRIORS, build_prior
from latentdistill.registry import import_user_modules
from latentdistill.run_folder import DISTILL_FIXED, DISTILL_MAY_CHANGE, RunFolder, changed_key, describe_change
from latentdistill.runtime import Processes, cpu_emulates_bf16, resolve_device, set_threads
from latentdistill.tasks import build_task
from latentdistill.tasks.classification import ClassificationTask


def _setup(config: RunConfig) -> None:
    set_threads(config.threads)
    import_user_modules(config.imports)
    if config.precision == "bf16" and resolve_device(config.device).type == "cpu" and cpu_emulates_bf16():
        print("note: this CPU has no native bf16 (AVX512-BF16): precision=bf16 is emulated and much slower here "
              "than precision=fp32", file=sys.stderr)


def _autoencoder(config: RunConfig):
    return load_autoencoder(config.autoencoder.name_or_path, config.autoencoder.kind, config.autoencoder.subfolder,
                            normalization=(config.data.mean, config.data.std))


def run_encode(config: RunConfig, progress: bool = True):
    """Build (or reuse, or resume) the task's cached data; returns it (``build_task(config).summary`` says what it is)."""
    _setup(config)
    return build_task(config).prepare(_autoencoder(config), resolve_device(config.device), progress=progress)


def run_distill(config: RunConfig, resume: bool = False, processes: Processes | None = None, progress: bool = True) -> Path:
    """Distill into ``output_dir``; export ``distilled.safetensors`` and ``grid.png`` there."""
    _setup(config)
    processes = processes or Processes()
    task = build_task(config)
    task.check_names()
    task.check_prior(config.prior.name)
    PRIORS.get(config.prior.name)
    if processes.count > 1 and config.distill.objective == "mtt":
        raise LatentDistillError("objective 'mtt' runs in one process: its student sees every class at once")
    folder, resolved = RunFolder(config.output_dir), config_to_dict(config)
    device = processes.accelerator.device if processes.count > 1 else resolve_device(config.device)
    folder.check_distill(resolved, resume)  # reads only (every process: all refuse alike); changes nothing
    with folder.lock() if processes.is_main else contextlib.nullcontext():
        if processes.is_main:
            folder.check_distill(resolved, resume)
        autoencoder = _autoencoder(config)
        with processes.main_first():  # the main process builds (or checks) the caches before the others read them
            data = task.prepare(autoencoder, device, progress=progress and processes.is_main)
        classes = task.classes(data)
        prior = build_prior(config.prior, classes, config.precision)
        problem = task.matching_problem(data, device)
        if processes.count > problem.num_classes:
            raise LatentDistillError(f"{processes.count} processes share {problem.num_classes} classes: launch at most "
                                     f"{problem.num_classes}")
        objective = build_objective(task.objective_setup(data))
        if processes.is_main:
            folder.write_config(resolved)
        generator = ImageGenerator(autoencoder, prior)

        def export(synthetic: SyntheticSet, iterations: int, path: Path):
            # a storage-matched set stores fp16, as counted, and its images are decoded from what is stored
            latents = synthetic.latents.half() if config.distill.storage_ipc else synthetic.latents
            soft_labels = None if synthetic.label_logits is None else synthetic.label_logits.softmax(dim=1).to(latents.dtype)
            images = generator.images(latents.float(), synthetic.embeddings, device, task.export_batch)
            metadata = {
                "format_version": FORMAT_VERSION, "task": task.name, **task.export_metadata(data),
                "autoencoder": autoencoder.spec(), "prior": prior.spec(), "config": resolved, "seed": config.seed,
                "versions": package_versions(), "distill_iterations": iterations,
                "distill_minutes": round(folder.distill_minutes(), 2), "device": str(device), "processes": processes.count,
                # e.g. MTT's learned student learning rate
                **({"learned": {k: float(v) for k, v in synthetic.learned.items()}} if synthetic.learned else {}),
            }
            write_distilled(path, DistilledSet(latents, synthetic.labels, images, synthetic.embeddings, metadata, soft_labels))
            return images

        synthetic = distill(problem, objective, config.distill, generator, folder, resolved, config.seed, device,
                            processes, resume=resume, progress=progress,
                            on_snapshot=lambda done, current: export(current, done, folder.snapshot(done)))
        if processes.is_main:
            task.save_grid(export(synthetic, config.distill.iterations, folder.distilled), synthetic.labels, folder.grid)
    processes.wait()  # nobody reads the file before the main process has written it
    return folder.distilled


def distilled_but_not_evaluated(config: RunConfig) -> bool:
    """Whether ``output_dir`` holds this config's finished set without its report (``run --resume`` after an
    interrupted evaluation): then only the evaluation remains to do."""
    folder = RunFolder(config.output_dir)
    if not folder.distilled.exists() or folder.report.exists():
        return False
    saved = read_distilled(folder.distilled).metadata.get("config", {})
    resolved = config_to_dict(config)
    key = changed_key(saved, resolved, DISTILL_FIXED, DISTILL_MAY_CHANGE)
    if key:
        raise LatentDistillError(f"{folder.distilled} was distilled with config key {describe_change(key, saved, resolved)}: "
                                 "evaluate it with its own config, or choose another output_dir")
    return True


def run_evaluate(path: str | Path, config: RunConfig, folder: RunFolder | None = None, processes: Processes | None = None,
                 progress: bool = True) -> dict:
    """Train fresh networks on a distilled file; print the table and write ``report.json`` into ``folder``
    (None: a fresh ``evaluation-N`` folder beside the file, made just before the work).

    The file is only read. Every path (data, cache, weights) comes from ``config``; the file's metadata
    only has to agree with it (task, classes, resolution)."""
    _setup(config)
    processes = processes or Processes()
    path = Path(path)
    distilled = read_distilled(path)
    if distilled.images is None:
        raise LatentDistillError(f"{path} holds no decoded images to train on")
    if distilled.metadata["task"] != config.task:
        raise LatentDistillError(f"{path} is a '{distilled.metadata['task']}' set; config key 'task' is '{config.task}' "
                                 f"(pass the config it was distilled with, or task={distilled.metadata['task']})")
    task = build_task(config)
    if folder is not None:
        folder.check_report()
    if not processes.is_main:  # the main process evaluates alone; the others are done (no barrier to time out)
        return {}
    folder = folder or RunFolder.fresh(path.parent, "evaluation")
    with folder.lock():  # made (and proved writable) before the work, so a finished evaluation has a home
        folder.check_report()
        started = time.perf_counter()
        report = {"distilled_file": str(path.resolve()), **task.evaluate(distilled, path, progress=progress)}
        report.setdefault("minutes", round((time.perf_counter() - started) / 60, 2))
        print(task.table(report), flush=True)
        folder.write_report(json.dumps(report, indent=2))
        if not folder.config.exists():
            folder.write_config(config_to_dict(config))
    return report


def run_buffer(config: RunConfig, progress: bool = True) -> Path:
    """Train the expert trajectories that objective ``mtt`` matches (kept, resumed and reused in buffer.dir)."""
    _setup(config)
    task = build_task(config)
    if not isinstance(task, ClassificationTask):
        raise LatentDistillError(f"config key 'task': expert buffers are trained for classification, not '{config.task}'")
    device = resolve_device(config.device)
    nets.build(config.distill.net, num_classes=2, resolution=config.data.resolution, task="classification",
               config_key="distill.net")
    data = task.prepare(_autoencoder(config), device, progress=progress)
    augment = DifferentiableAugment(config.augment) if config.buffer.augment else None
    rows, directory = data.train_rows, task.buffer_directory()
    training = ClassifierTraining(data.train.images[rows], data.train.labels[rows], len(data.classes),
                                  task.normalize(data).to(device), augment, config.seed, device, config.precision,
                                  config.compile)
    with RunFolder(directory).lock():  # one trainer per buffer: two would write the same expert files
        train_experts(training, directory, task.buffer_meta(), progress=progress, parallel=config.buffer.parallel)
        RunFolder(directory).write_config(config_to_dict(config))
    return directory


def run_train_prior(config: RunConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train a class-conditional latent diffusion prior on the dataset's latent cache (built if missing)."""
    from latentdistill.priors.training import check_prior_folder, train_prior

    _setup(config)
    task = build_task(config)
    if not isinstance(task, ClassificationTask):
        raise LatentDistillError(f"config key 'task': a prior is trained on class-labelled latents, not for '{config.task}'")
    folder, resolved = RunFolder(config.output_dir), config_to_dict(config)
    check_prior_folder(folder, resolved, resume)
    with folder.lock():
        device = resolve_device(config.device)
        autoencoder = _autoencoder(config)
        data = task.prepare(autoencoder, device, progress=progress)
        if data.train.latents is None:
            raise LatentDistillError(f"latent cache {data.train.directory} holds no latents")
        return train_prior(config.train_prior, config.seed, config.precision, folder, resolved, data.train.latents,
                           data.train.labels, data.train_rows, data.validation_rows, data.classes, autoencoder.spec(),
                           device, resume=resume, progress=progress)


def run_sr_train(config: RunConfig, distilled_path: str | None = None, progress: bool = True) -> Path:
    """Train ``sr.net`` on the ``sr.train`` folders' patches, or on a distilled file's; save the model to
    ``output_dir/sr_model.safetensors`` and print PSNR/SSIM on ``sr.test``."""
    from latentdistill.evaluate.super_resolution import evaluate_sr, make_lr_patches, save_sr_model, train_sr
    from latentdistill.tasks.super_resolution import SuperResolutionTask

    _setup(config)
    task, device = SuperResolutionTask(config), resolve_device(config.device)
    folder = RunFolder(config.output_dir)
    output = folder.path / RunFolder.SR_MODEL

    def check() -> None:
        if output.exists():
            raise LatentDistillError(f"{output} already exists: choose another output_dir (nothing was overwritten)")

    check()
    task.check_names()
    if distilled_path:
        distilled = read_distilled(distilled_path)
        if distilled.metadata.get("task") != "sr" or distilled.images is None:
            raise LatentDistillError(f"{distilled_path} is not a distilled SR set with images")
        hr = distilled.images
    else:
        hr = task.training_patches()
    with folder.lock():
        check()
        model = train_sr(make_lr_patches(hr, config.sr.scale), hr, config.sr, config.seed, device, progress=progress)
        if not folder.config.exists():  # the folder may be a distillation's: its config stays
            folder.write_config(config_to_dict(config))
        save_sr_model(output, model, config.sr.net, config.sr.scale, {"trained_on": distilled_path or config.sr.train,
                                                                       "patches": len(hr)})
    for name, images in task.test_sets().items():
        print(json.dumps({"test": name, **evaluate_sr(model, images, config.sr.scale, device)}))
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
