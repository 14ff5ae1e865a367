"""``latentdistill train-prior``: a small class-conditional latent diffusion model, trained on a latent cache.

The result is an ordinary diffusers folder (``transformer/`` or ``unet/`` plus ``scheduler/``) with a
``latentdistill_prior.json`` beside it holding the latent normalisation and the class names, so prior
``diffusion`` can run on real trained weights where no hub is reachable, and a user with an unusual
domain (medical, satellite) can train the prior their data needs.

Standard DDPM training: epsilon prediction, uniform timesteps, AdamW with a short warm-up, labels
dropped to a null class with probability ``class_dropout`` (for classifier-free guidance), and an EMA of
the weights, which is what gets saved. Checkpoints are atomic and a killed run resumes from the last.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiTTransformer2DModel, UNet2DModel
from diffusers.models.modeling_utils import ModelMixin
from tqdm.auto import tqdm

from latentdistill.config import TrainPriorConfig
from latentdistill.errors import LatentDistillError
from latentdistill.io import atomic_save_file, atomic_write_text, read_safetensors
from latentdistill.priors.denoisers import PRIOR_FILE
from latentdistill.run_folder import RunFolder, changed_key, describe_change
from latentdistill.runtime import autocast, iteration_seed
from latentdistill.training_state import optimizer_state, optimizer_tensors

WARMUP_STEPS = 100
VALIDATION_SIZE = 1024


def build_denoiser_model(settings: TrainPriorConfig, latent_channels: int, latent_size: int, num_classes: int) -> ModelMixin:
    """A fresh class-conditional denoiser; the table has one extra row, the null class."""
    if settings.architecture == "dit":
        if settings.width % settings.heads:
            raise LatentDistillError(f"config key 'train_prior.width' ({settings.width}) must be a multiple of train_prior.heads ({settings.heads})")
        if latent_size % settings.patch_size:
            raise LatentDistillError(f"config key 'train_prior.patch_size' ({settings.patch_size}) must divide the latent size {latent_size}")
        return DiTTransformer2DModel(
            num_attention_heads=settings.heads, attention_head_dim=settings.width // settings.heads,
            in_channels=latent_channels, out_channels=latent_channels, num_layers=settings.depth,
            sample_size=latent_size, patch_size=settings.patch_size, num_embeds_ada_norm=num_classes,
        )
    if settings.architecture == "unet":
        groups = math.gcd(32, settings.width)
        return UNet2DModel(
            sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels,
            block_out_channels=(settings.width, settings.width * 2), layers_per_block=settings.depth,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=groups, num_class_embeds=num_classes + 1,
        )
    raise LatentDistillError(f"config key 'train_prior.architecture': unknown '{settings.architecture}' (dit | unet)")


# What a resumed prior training must share with the saved one; it may train longer or checkpoint more often.
PRIOR_FIXED = ("seed", "precision", "imports", "task", "data", "autoencoder", "train_prior")
PRIOR_MAY_CHANGE = ("train_prior.steps", "train_prior.checkpoint_every")


def _model_folder(settings: TrainPriorConfig) -> str:
    return "transformer" if settings.architecture == "dit" else "unet"


def diffusion_loss(model: ModelMixin, scheduler: DDPMScheduler, x0: torch.Tensor, labels: torch.Tensor,
                   generator: torch.Generator, class_dropout: float, null_class: int) -> torch.Tensor:
    """The DDPM objective: predict the noise added at a uniformly drawn timestep."""
    count = len(x0)
    timesteps = torch.randint(scheduler.config.num_train_timesteps, (count,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    dropped = torch.rand(count, generator=generator) < class_dropout
    labels = torch.where(dropped, torch.full_like(labels, null_class), labels.cpu())
    device = x0.device
    timesteps, noise, labels = timesteps.to(device), noise.to(device), labels.to(device)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    return F.mse_loss(model(noisy, timesteps, class_labels=labels).sample.float(), noise)


def _without_internal_dropout(model: ModelMixin) -> None:
    # DiT's label embedding drops labels itself in train mode; the trainer does it instead, so that
    # every architecture drops the same way and the draw comes from the seeded generator.
    for module in model.modules():
        if hasattr(module, "dropout_prob") and hasattr(module, "embedding_table"):
            module.dropout_prob = 0.0


def check_prior_folder(folder: RunFolder, resolved: dict, resume: bool) -> None:
    """Refuse, changing nothing, a training that would overwrite a trained prior or mix with another run."""
    output, checkpoint_path = folder.path, folder.path / RunFolder.PRIOR_CHECKPOINT
    if (output / PRIOR_FILE).exists():
        raise LatentDistillError(f"{output / PRIOR_FILE} exists: this prior is trained; choose another output_dir (nothing was overwritten)")
    if checkpoint_path.exists() and not resume:
        raise LatentDistillError(f"{checkpoint_path} exists: pass --resume to continue that run, or choose another output_dir")
    if checkpoint_path.exists():
        try:
            saved = json.loads(read_safetensors(checkpoint_path)[1].get("config", "{}"))
        except ValueError:
            raise LatentDistillError(f"checkpoint {checkpoint_path} holds no readable config: delete it to start over") from None
        key = changed_key(saved, resolved, PRIOR_FIXED, PRIOR_MAY_CHANGE)
        if key:
            raise LatentDistillError(f"cannot resume {checkpoint_path}: config key {describe_change(key, saved, resolved)} "
                                     "differs from the saved run (nothing was changed)")


def train_prior(
    settings: TrainPriorConfig,
    seed: int,
    precision: str,
    folder: RunFolder,
    resolved: dict,
    latents: torch.Tensor,
    labels: torch.Tensor,
    train_rows: torch.Tensor,
    validation_rows: torch.Tensor,
    classes: list[str],
    autoencoder_spec: dict,
    device: torch.device,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train, checkpoint and save the prior into the run folder (checked with ``check_prior_folder`` and
    locked by the caller); returns that folder.

    Long on purpose: the whole training (resume, EMA, validation, checkpoints, the final save) reads top to
    bottom as one script."""
    output = folder.path
    checkpoint_path = output / RunFolder.PRIOR_CHECKPOINT
    check_prior_folder(folder, resolved, resume)
    folder.write_config(resolved)
    num_classes = len(classes)
    channels, size = latents.shape[1], latents.shape[-1]

    # Latents are normalised to unit variance, as a diffusion model expects (SD's scaling factor).
    train_latents = latents[train_rows].float()
    shift, scale = float(train_latents.mean()), float(1 / train_latents.std())
    train_latents = ((train_latents - shift) * scale).to(device)
    train_labels = labels[train_rows].to(device)
    validation = validation_rows[:VALIDATION_SIZE]
    validation_latents = ((latents[validation].float() - shift) * scale).to(device)
    validation_labels = labels[validation].to(device)

    torch.manual_seed(seed)
    model = build_denoiser_model(settings, channels, size, num_classes).to(device)
    _without_internal_dropout(model)
    ema = {name: value.detach().clone() for name, value in model.state_dict().items()}
    scheduler = DDPMScheduler(num_train_timesteps=settings.train_timesteps, beta_schedule=settings.beta_schedule)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    learning_rate = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / WARMUP_STEPS))
    start = 0
    if resume and checkpoint_path.exists():
        tensors, metadata = read_safetensors(checkpoint_path)
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        ema = {k[len("ema."):]: v.to(device) for k, v in tensors.items() if k.startswith("ema.")}
        optimizer.load_state_dict(optimizer_state(tensors, metadata["optimizer_param_groups"]))
        start = int(metadata["step"])
        learning_rate = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / WARMUP_STEPS), last_epoch=start - 1
        )

    def validation_loss() -> float:
        """Held-out loss with fixed timesteps and noise, comparable across checkpoints."""
        model.eval()
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad(), autocast(device, precision):
            loss = diffusion_loss(model, scheduler, validation_latents, validation_labels, generator, 0.0, num_classes)
        model.train()
        return float(loss)

    def save_checkpoint(step: int) -> None:
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.items()})
        state, groups = optimizer_tensors(optimizer.state_dict())
        tensors.update(state)
        atomic_save_file(tensors, checkpoint_path, metadata={
            "step": str(step), "optimizer_param_groups": groups, "config": json.dumps(resolved)})

    log_path = output / RunFolder.PRIOR_LOG
    model.train()
    bar = tqdm(range(start, settings.steps), initial=start, total=settings.steps,
               desc=f"train-prior {settings.architecture}", disable=not progress)
    started = time.perf_counter()
    running = None
    for step in bar:
        generator = torch.Generator().manual_seed(iteration_seed(seed, step))
        rows = torch.randint(len(train_latents), (settings.batch_size,), generator=generator).to(device)
        with autocast(device, precision):
            loss = diffusion_loss(model, scheduler, train_latents[rows], train_labels[rows], generator,
                                  settings.class_dropout, num_classes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        learning_rate.step()
        decay = min(settings.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for name, value in model.state_dict().items():
                if value.is_floating_point():
                    ema[name].lerp_(value, 1 - decay)
                else:
                    ema[name].copy_(value)
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.set_postfix(loss=f"{running:.4f}")
        done = step + 1
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            record = {"step": done, "loss": running, "validation_loss": validation_loss(),
                      "seconds": time.perf_counter() - started}
            save_checkpoint(done)
            with open(log_path, "a") as log:
                log.write(json.dumps(record) + "\n")
            started = time.perf_counter()
    bar.close()

    # The EMA weights become the saved model; the folder appears whole or not at all.
    model.load_state_dict(ema)
    model.eval()
    model_folder = _model_folder(settings)
    staging = output / f".{model_folder}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    shutil.rmtree(output / model_folder, ignore_errors=True)
    staging.rename(output / model_folder)
    scheduler.save_pretrained(output / "scheduler")
    final_validation = validation_loss()
    seconds = folder.distill_minutes(log_path) * 60  # a line cut short by a kill is skipped
    info = {
        "latent_shift": shift,
        "latent_scale": scale,
        "classes": classes,
        "null_class": num_classes if settings.class_dropout > 0 else None,
        "autoencoder": autoencoder_spec,
        "latent_shape": [channels, size, size],
        "architecture": settings.architecture,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": settings.steps,
        "validation_loss": final_validation,
        "train_minutes": round(seconds / 60, 2),
    }
    atomic_write_text(output / PRIOR_FILE, json.dumps(info, indent=2))
    return output
