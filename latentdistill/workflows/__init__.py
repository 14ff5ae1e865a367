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
from latentdistill.config import RunConfig, config_to_dict
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.buffer import load_buffer, train_experts
from latentdistill.distill.classifier_training import ClassifierTraining
from latentdistill.distill.loop import distill
from latentdistill.distill.objective import build_objective
from latentdistill.distill.synthetic import ImageGenerator, SyntheticSet
from latentdistill.errors import LatentDistillError
from latentdistill.export import FORMAT_VERSION, DistilledSet, package_versions, read_distilled, write_distilled
from latentdistill.export.folders import export_set
from latentdistill.export.sets import SetSource, detect_format
from latentdistill.priors import PRIORS, build_prior
from latentdistill.run_folder import DISTILL_FIXED, DISTILL_MAY_CHANGE, RunFolder, changed_key, describe_change
from latentdistill.runtime import Processes, resolve_device
from latentdistill.tasks import build_task
from latentdistill.tasks.classification import ClassificationTask
from latentdistill.tasks.judging import prepare_judging
from latentdistill.trackers import Trackers, check_tracker_names
from latentdistill.workflows.common import autoencoder_of, read_any_set, setup, write_report_page
from latentdistill.workflows.super_resolution import run_sr_eval, run_sr_train  # noqa: F401 - verbs of this module


def run_encode(config: RunConfig, progress: bool = True):
    """Build (or reuse, or resume) the task's cached data; returns it (``build_task(config).summary`` says what it is)."""
    setup(config)
    return build_task(config).prepare(autoencoder_of(config), resolve_device(config.device), progress=progress)


def _check_names(config: RunConfig, task, processes: Processes) -> None:
    """What a distillation refuses before it reads anything: unknown parts and trackers, MTT across processes."""
    task.check_names()
    task.check_prior(config.prior.name)
    check_tracker_names(config.log_with)
    PRIORS.get(config.prior.name)
    if processes.count > 1 and config.distill.objective == "mtt":
        raise LatentDistillError("objective 'mtt' runs in one process: its student sees every class at once")
    if config.distill.objective == "mtt" or config.distill.matching_nets == "experts":
        load_buffer(task.buffer_directory())  # before minutes of encoding: is there a buffer at all?


def run_distill(config: RunConfig, resume: bool = False, processes: Processes | None = None, progress: bool = True) -> Path:
    """Distill into ``output_dir``; export ``distilled.safetensors`` and ``grid.png`` there."""
    setup(config)
    processes = processes or Processes()
    task = build_task(config)
    _check_names(config, task, processes)
    folder, resolved = RunFolder(config.output_dir), config_to_dict(config)
    device = processes.accelerator.device if processes.count > 1 else resolve_device(config.device)
    folder.check_distill(resolved, resume)  # reads only (every process: all refuse alike); changes nothing
    with folder.lock() if processes.is_main else contextlib.nullcontext():
        if processes.is_main:
            folder.check_distill(resolved, resume)
        autoencoder = autoencoder_of(config)
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

        def snapshot(done: int, current: SyntheticSet) -> None:  # the start's grid; every distill.snapshot_every
            images = export(current, done, folder.snapshot(done)) if done else generator.images(
                current.latents.float(), current.embeddings, device, task.export_batch)
            task.save_grid(images, current.labels, folder.snapshot(done).with_suffix(".png") if done else folder.start_grid)

        trackers = Trackers(config.log_with if processes.is_main else [], folder.path.name, folder.path / "trackers", resolved)
        try:
            synthetic = distill(problem, objective, config.distill, generator, folder, resolved, config.seed, device,
                                processes, resume=resume, progress=progress, on_snapshot=snapshot, on_record=trackers.log)
        finally:
            trackers.finish()
        if processes.is_main:
            task.save_grid(export(synthetic, config.distill.iterations, folder.distilled), synthetic.labels, folder.grid)
            write_report_page(folder)
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
                 progress: bool = True, source: SetSource | None = None) -> dict:
    """Train fresh networks on a distilled file; print the table and write ``report.json`` into ``folder``
    (None: a fresh ``evaluation-N`` folder beside the file, made just before the work).

    The file is only read. Every path (data, cache, weights) comes from ``config``; the file's metadata
    only has to agree with it (task, classes, resolution). ``source`` reads a set another method made
    (``export.sets``: an ImageFolder, an image safetensors file, MTT's tensors)."""
    setup(config)
    processes = processes or Processes()
    path = Path(path)
    distilled = read_any_set(path, config, source)
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
        try:
            report = {"distilled_file": str(path.resolve()), **task.evaluate(distilled, path, progress=progress, folder=folder.path)}
        except BaseException:  # a stopped or failed evaluation names what it kept: a rerun without output_dir starts afresh
            kept = folder.path / "progress"
            if kept.is_dir() and any(kept.iterdir()):
                print(f"evaluation progress kept in {kept}: the same evaluation into {folder.path} continues it "
                      f"(evaluate: output_dir={folder.path}; run: --resume)", file=sys.stderr, flush=True)
            raise
        report.setdefault("minutes", round((time.perf_counter() - started) / 60, 2))
        print(task.table(report), flush=True)
        folder.write_report(json.dumps(report, indent=2))
        if not folder.config.exists():
            folder.write_config(config_to_dict(config))
        write_report_page(folder)
    return report


def run_buffer(config: RunConfig, progress: bool = True) -> Path:
    """Train the expert trajectories that objective ``mtt`` (and ``gm`` on trained networks) matches: kept,
    resumed and reused in buffer.dir."""
    setup(config)
    task = build_task(config)
    device = resolve_device(config.device)
    if hasattr(task, "train_buffer"):  # a task that trains its own kind of expert (super-resolution)
        task.check_names()
        with RunFolder(task.buffer_directory()).lock():
            buffer = task.train_buffer(device, progress=progress)
            RunFolder(buffer.directory).write_config(config_to_dict(config))
        return buffer.directory
    if not isinstance(task, ClassificationTask):
        raise LatentDistillError(f"config key 'task': task '{config.task}' has no expert buffers")
    nets.build(config.distill.net, num_classes=2, resolution=config.data.resolution, task="classification",
               config_key="distill.net")
    data = task.prepare(autoencoder_of(config), device, progress=progress)
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

    setup(config)
    task = build_task(config)
    if not isinstance(task, ClassificationTask):
        raise LatentDistillError(f"config key 'task': a prior is trained on class-labelled latents, not for '{config.task}'")
    folder, resolved = RunFolder(config.output_dir), config_to_dict(config)
    check_prior_folder(folder, resolved, resume)
    with folder.lock():
        device = resolve_device(config.device)
        autoencoder = autoencoder_of(config)
        data = task.prepare(autoencoder, device, progress=progress)
        if data.train.latents is None:
            raise LatentDistillError(f"latent cache {data.train.directory} holds no latents")
        return train_prior(config.train_prior, config.seed, config.precision, folder, resolved, data.train.latents,
                           data.train.labels, data.train_rows, data.validation_rows, data.classes, autoencoder.spec(),
                           device, resume=resume, progress=progress)


def run_export(path: str | Path, target: str, directory: str | Path, config: RunConfig | None = None,
               source: SetSource | None = None, push_to_hub: str | None = None, progress: bool = True) -> Path:
    """``latentdistill export``: a set as an ImageFolder of PNGs or a Hugging Face dataset. Our file needs no
    config; a set in another format is read against the real data ``config`` names (and a whitened one is
    unwhitened with that data's ZCA, so the export holds pixels)."""
    path, source = Path(path), source or SetSource()
    if config is None:
        if source != SetSource() or not path.is_file() or detect_format(path) != "distilled":
            raise LatentDistillError(f"{path} is not a latentdistill file: pass --config (and key=value overrides) naming "
                                     "the real data its classes are read against (data.root)")
        distilled = read_distilled(path)
    else:
        setup(config)
        distilled = read_any_set(path, config, source)
        if "whitened" in distilled.metadata:
            distilled.images = prepare_judging(ClassificationTask, config, distilled, path, progress).images
            del distilled.metadata["whitened"]
    return export_set(distilled, target, directory, push_to_hub, progress=progress)
