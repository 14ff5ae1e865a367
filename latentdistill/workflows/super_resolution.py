"""The super-resolution verbs: ``sr-train`` (an SR network on patches or a distilled SR set) and ``sr-eval``."""

from __future__ import annotations

import json
from pathlib import Path

from latentdistill.config import RunConfig, config_to_dict
from latentdistill.errors import LatentDistillError
from latentdistill.export import read_distilled
from latentdistill.run_folder import RunFolder
from latentdistill.runtime import resolve_device
from latentdistill.workflows.common import setup


def run_sr_train(config: RunConfig, distilled_path: str | None = None, progress: bool = True) -> Path:
    """Train ``sr.net`` on the ``sr.train`` folders' patches, or on a distilled file's; save the model to
    ``output_dir/sr_model.safetensors`` and print PSNR/SSIM on ``sr.test``. The training checkpoints into
    ``output_dir`` every minute; the same command run again continues an interrupted one."""
    from latentdistill.evaluate.sr_training import (
        TrainingCheckpoint,
        make_lr_patches,
        pixels_digest,
        protocol_record,
        sr_protocol,
        train_sr,
    )
    from latentdistill.evaluate.super_resolution import evaluate_sr, save_sr_model
    from latentdistill.tasks.super_resolution import SuperResolutionTask

    setup(config)
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
        # The key names the training exactly, so a checkpoint of other patches or another protocol is refused.
        protocol = sr_protocol(config.sr)
        key = json.dumps({"pixels": pixels_digest(hr), "net": config.sr.net, "scale": config.sr.scale, "device": device.type,
                          "augment": config.sr.augment, "seed": config.seed, **protocol_record(protocol)}, sort_keys=True)
        checkpoint = TrainingCheckpoint(folder.path / RunFolder.SR_MODEL_CHECKPOINT, key)
        model = train_sr(make_lr_patches(hr, config.sr.scale), hr, config.sr, config.seed, device, progress=progress,
                         checkpoint=checkpoint)
        if not folder.config.exists():  # the folder may be a distillation's: its config stays
            folder.write_config(config_to_dict(config))
        save_sr_model(output, model, config.sr.net, config.sr.scale, {"trained_on": distilled_path or config.sr.train,
                                                                       "patches": len(hr), "protocol": protocol_record(protocol)})
        checkpoint.path.unlink()  # only now: the model is kept
    for name, images in task.test_sets().items():
        print(json.dumps({"test": name, **evaluate_sr(model, images, config.sr.scale, device), "protocol": protocol.name}))
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
