"""Prior ``diffusion``: LD3M's generator, T DDIM steps of a frozen denoiser between z and the decoder.

z (the learnable latent) is noised to level ``t_start`` with a fixed noise draw, then denoised in T
DDIM steps (eta 0) conditioned on the learnable embeddings c. Each step mixes the start back in with a
weight t/T that falls linearly to 0 (LD3M's residual), which keeps the gradient reaching z from
vanishing as T grows. Activation recomputation per segment of steps keeps peak memory nearly flat in T.

Noise levels count training timesteps from the clean latent: level 0 is clean (alpha_bar = 1) and level
t >= 1 is the scheduler's ``alphas_cumprod[t - 1]``, at which the model is queried with timestep t - 1.
So ``t_start = 0`` is the plain decoder, and the last step always lands on the clean latent.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler
from torch import nn
from torch.utils.checkpoint import checkpoint

from latentdistill.config import PriorConfig
from latentdistill.errors import LatentDistillError
from latentdistill.priors.denoisers import Denoiser, load_denoiser, read_prior_file
from latentdistill.runtime import autocast

RESIDUALS = ("mean", "x0", "none")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def load_noise_schedule(name_or_path: str) -> tuple[torch.Tensor, str, dict]:
    """``alphas_cumprod``, the prediction type and the schedule's description, from the scheduler config
    saved beside the denoiser (``scheduler/`` of a pipeline folder, or the folder itself)."""
    for subfolder in ("scheduler", None):
        try:
            values = DDIMScheduler.load_config(name_or_path, subfolder=subfolder)
        except (OSError, ValueError):
            continue
        scheduler = DDIMScheduler.from_config(values)
        config = scheduler.config
        described = {key: config[key] for key in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")}
        return scheduler.alphas_cumprod.float(), config.prediction_type, described
    raise LatentDistillError(
        f"prior.denoiser {name_or_path}: no scheduler config (scheduler/scheduler_config.json or "
        "scheduler_config.json) to read the noise schedule from"
    )


class DiffusionPrior(nn.Module):
    """(z, c) -> latents ready to decode, through T denoising steps; trainable: z and c only."""

    name = "diffusion"
    conditional = True

    def __init__(
        self,
        denoiser: Denoiser,
        alphas_cumprod: torch.Tensor,
        prediction_type: str = "epsilon",
        steps: int = 10,
        t_start: int = 300,
        residual: str = "x0",
        guidance_scale: float = 1.0,
        steps_per_recompute: int = 1,
        latent_shift: float = 0.0,
        latent_scale: float = 1.0,
        class_ids: list[int] | None = None,
        class_names: list[str] | None = None,
        noise_seed: int = 0,
        precision: str = "fp32",
        schedule: dict | None = None,
    ):
        super().__init__()
        if residual not in RESIDUALS:
            raise LatentDistillError(f"config key 'prior.residual' must be one of {' | '.join(RESIDUALS)}, got {residual!r}")
        if prediction_type not in PREDICTION_TYPES:
            raise LatentDistillError(f"denoiser scheduler: unsupported prediction_type '{prediction_type}'")
        if not 0 <= t_start <= len(alphas_cumprod):
            raise LatentDistillError(f"config key 'prior.t_start' must lie in [0, {len(alphas_cumprod)}], got {t_start}")
        self.denoiser = denoiser
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self.prediction_type = prediction_type
        self.steps, self.t_start, self.residual = int(steps), int(t_start), residual
        self.guidance_scale = float(guidance_scale)
        self.steps_per_recompute = int(steps_per_recompute)
        self.latent_shift, self.latent_scale = float(latent_shift), float(latent_scale)
        self.class_ids = list(class_ids) if class_ids else None
        self.class_names = list(class_names or [])
        self.noise_seed = int(noise_seed)
        self.precision = precision
        self.schedule = schedule or {}
        self._noise: torch.Tensor | None = None

    @classmethod
    def from_config(cls, config: PriorConfig, class_names: list[str], precision: str = "fp32") -> DiffusionPrior:
        """Load the denoiser, its noise schedule and (for a trained prior) its latent normalisation."""
        trained = read_prior_file(config.denoiser) if config.denoiser else {}
        denoiser = load_denoiser(config.denoiser, config.kind, config.prompt, null_class=trained.get("null_class", "auto"))
        alphas_cumprod, prediction_type, schedule = load_noise_schedule(config.denoiser)
        class_ids = list(config.class_ids)
        if class_ids and len(class_ids) != len(class_names):
            raise LatentDistillError(
                f"config key 'prior.class_ids' names {len(class_ids)} ids for the dataset's {len(class_names)} classes"
            )
        if not class_ids and trained.get("classes") and class_names:
            known = trained["classes"]
            missing = [name for name in class_names if name not in known]
            if missing:
                raise LatentDistillError(
                    f"prior.denoiser {config.denoiser} was trained on classes {known}, which lack {missing}: "
                    "set prior.class_ids to map the dataset's classes onto the model's"
                )
            class_ids = [known.index(name) for name in class_names]
        if config.guidance_scale != 1.0 and denoiser.unconditional(1) is None:
            raise LatentDistillError(
                f"config key 'prior.guidance_scale': {config.denoiser} has no unconditional (null-class) embedding, "
                "so classifier-free guidance is not available; use 1.0"
            )
        return cls(
            denoiser, alphas_cumprod, prediction_type, config.denoising_steps, config.t_start, config.residual,
            config.guidance_scale, config.steps_per_recompute, float(trained.get("latent_shift", 0.0)),
            float(trained.get("latent_scale", 1.0)), class_ids, class_names, config.noise_seed, precision, schedule,
        )

    # -- conditioning -------------------------------------------------------------------------------
    def initial_conditioning(self, labels: torch.Tensor) -> torch.Tensor:
        """c for each synthetic image, from the model's own embedding of the image's class."""
        ids = torch.as_tensor(self.class_ids)[labels.cpu()] if self.class_ids else labels.cpu()
        return self.denoiser.initial_conditioning(ids, self.class_names).cpu()

    # -- the chain ----------------------------------------------------------------------------------
    def levels(self) -> list[int]:
        """Noise levels visited: t_start, ..., 0 (T + 1 of them, evenly spaced)."""
        return [round(self.t_start * (self.steps - k) / self.steps) for k in range(self.steps + 1)]

    def alpha_bar(self, level: int) -> torch.Tensor:
        return self.alphas_cumprod.new_tensor(1.0) if level == 0 else self.alphas_cumprod[level - 1]

    def start_noise(self, latents: torch.Tensor) -> torch.Tensor:
        """One fixed noise draw per synthetic image (drawn on the CPU, so it is the same on every device)."""
        if self._noise is None or self._noise.shape != latents.shape or self._noise.device != latents.device:
            generator = torch.Generator().manual_seed(self.noise_seed)
            self._noise = torch.randn(latents.shape, generator=generator).to(latents.device)
        return self._noise

    def _model_output(self, x: torch.Tensor, level: int, conditioning: torch.Tensor,
                      unconditional: torch.Tensor | None) -> torch.Tensor:
        timesteps = torch.full((len(x),), max(level - 1, 0), device=x.device, dtype=torch.long)
        with autocast(x.device, self.precision):
            if unconditional is None:
                return self.denoiser.predict(x, timesteps, conditioning).float()
            both = self.denoiser.predict(torch.cat([x, x]), torch.cat([timesteps, timesteps]),
                                         torch.cat([conditioning, unconditional.to(conditioning)])).float()
        conditional, plain = both.chunk(2)
        return plain + self.guidance_scale * (conditional - plain)

    def _steps(self, x: torch.Tensor, x_clean: torch.Tensor, x_start: torch.Tensor, conditioning: torch.Tensor,
               unconditional: torch.Tensor | None, first: int, last: int) -> torch.Tensor:
        levels = self.levels()
        for k in range(first, last):
            a_t, a_prev = self.alpha_bar(levels[k]), self.alpha_bar(levels[k + 1])
            output = self._model_output(x, levels[k], conditioning, unconditional)
            if self.prediction_type == "epsilon":
                eps = output
                x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            elif self.prediction_type == "v_prediction":
                x0 = a_t.sqrt() * x - (1 - a_t).sqrt() * output
                eps = a_t.sqrt() * output + (1 - a_t).sqrt() * x
            else:
                x0 = output
                eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt().clamp_min(1e-8)
            weight = (self.steps - k) / self.steps  # t / T, falling linearly
            if self.residual == "x0":
                x0 = (1 - weight) * x0 + weight * x_clean
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
            if self.residual == "mean":
                x = (1 - weight) * x + weight * x_start
        return x

    def forward(self, latents: torch.Tensor, conditioning: torch.Tensor | None = None) -> torch.Tensor:
        if conditioning is None:
            raise LatentDistillError("prior 'diffusion' needs conditioning embeddings (see initial_conditioning)")
        x_clean = (latents - self.latent_shift) * self.latent_scale
        a_start = self.alpha_bar(self.levels()[0])
        x_start = a_start.sqrt() * x_clean + (1 - a_start).sqrt() * self.start_noise(latents)
        unconditional = None
        if self.guidance_scale != 1.0:
            unconditional = self.denoiser.unconditional(len(latents)).to(latents.device)
        x = x_start
        segment = self.steps_per_recompute if self.steps_per_recompute > 0 else self.steps
        recompute = self.steps_per_recompute > 0 and torch.is_grad_enabled()
        for first in range(0, self.steps, segment):
            last = min(first + segment, self.steps)
            arguments = (x, x_clean, x_start, conditioning, unconditional, first, last)
            x = checkpoint(self._steps, *arguments, use_reentrant=False) if recompute else self._steps(*arguments)
        return x / self.latent_scale + self.latent_shift

    def spec(self) -> dict:
        return {
            "name": self.name,
            "denoiser": self.denoiser.spec(),
            "steps": self.steps,
            "t_start": self.t_start,
            "residual": self.residual,
            "guidance_scale": self.guidance_scale,
            "prediction_type": self.prediction_type,
            "schedule": self.schedule,
            "latent_shift": self.latent_shift,
            "latent_scale": self.latent_scale,
            "class_ids": self.class_ids,
            "noise_seed": self.noise_seed,
        }
