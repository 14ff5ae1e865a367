"""Frozen diffusers denoisers behind one interface for the LD3M chain.

Every adapter answers ``predict(latents, timesteps, conditioning) -> model output`` where
``conditioning`` is a learnable tensor, one row per synthetic image, that takes the place of the
model's label lookup (class-conditional DiT and UNet2DModel) or of its encoded prompt (Stable
Diffusion). The label lookup is replaced with a forward hook on the embedding module, so the model
itself is untouched: its state dict, its attention processors and its own code path stay as shipped.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from diffusers import DiTTransformer2DModel, UNet2DConditionModel, UNet2DModel
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from latentdistill.errors import LatentDistillError
from latentdistill.pretrained import load_diffusers_model

# Where each kind keeps its model inside a diffusers pipeline folder, and the class it must be.
KINDS = {
    "dit": ("transformer", DiTTransformer2DModel),
    "unet": ("unet", UNet2DModel),
    "sd": ("unet", UNet2DConditionModel),
}
KIND_BY_CLASS_NAME = {"DiTTransformer2DModel": "dit", "UNet2DModel": "unet", "UNet2DConditionModel": "sd"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Written by `latentdistill train-prior` beside the model: latent normalisation and class names.
PRIOR_FILE = "latentdistill_prior.json"


class Denoiser(nn.Module):
    """A frozen denoiser whose conditioning arrives as tensors, not labels or prompts."""

    kind = "base"

    def __init__(self, model: ModelMixin, name_or_path: str | None = None, subfolder: str | None = None):
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        self.name_or_path = name_or_path
        self.subfolder = subfolder

    @property
    def in_channels(self) -> int:
        return int(self.model.config.in_channels)

    def spec(self) -> dict:
        return {"kind": self.kind, "name_or_path": self.name_or_path, "subfolder": self.subfolder,
                "class": type(self.model).__name__}

    def initial_conditioning(self, class_ids: torch.Tensor, class_names: list[str]) -> torch.Tensor:
        """The model's own conditioning for these classes: the learnable embeddings' starting point."""
        raise NotImplementedError

    def unconditional(self, count: int) -> torch.Tensor | None:
        """Conditioning for classifier-free guidance's unconditional branch; None if the model has none."""
        return None

    def predict(self, latents: torch.Tensor, timesteps: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_channels(self, latents: torch.Tensor) -> None:
        if latents.shape[1] != self.in_channels:
            raise LatentDistillError(
                f"prior.denoiser {self.name_or_path} takes {self.in_channels}-channel latents but the autoencoder "
                f"gives {latents.shape[1]}: pair the denoiser with the autoencoder it was trained on"
            )

    def _first_channels(self, output: torch.Tensor) -> torch.Tensor:
        # Models that learn the variance (DiT) return 2C channels: the first C are the prediction.
        return output[:, : self.in_channels]


class _LabelTables:
    """Hooks on a model's label-embedding modules: while ``vectors`` is set, each returns its slice."""

    def __init__(self, modules: list[nn.Module]):
        self.modules = modules
        self.vectors: torch.Tensor | None = None  # (batch, len(modules), dim)
        for index, module in enumerate(modules):
            module.register_forward_hook(self._hook(index))

    def _hook(self, index: int):
        def replace(module, inputs, output):
            if self.vectors is None:
                return output
            return self.vectors[:, index].to(output.dtype)

        return replace

    def weights(self) -> list[torch.Tensor]:
        tables = []
        for module in self.modules:
            table = module.embedding_table if hasattr(module, "embedding_table") else module
            tables.append(table.weight)
        return tables


class ClassConditionalDenoiser(Denoiser):
    """Shared by DiT and class-conditional UNet2DModel: conditioning (N, tables, dim) from label tables."""

    def __init__(self, model: ModelMixin, name_or_path: str | None = None, subfolder: str | None = None,
                 null_class: int | None | str = "auto"):
        super().__init__(model, name_or_path, subfolder)
        self.tables = _LabelTables(self.label_modules())
        self.null_class = None if null_class == "auto" else null_class

    def label_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return int(self.tables.weights()[0].shape[0])

    def initial_conditioning(self, class_ids: torch.Tensor, class_names: list[str]) -> torch.Tensor:
        limit = self.num_classes - (1 if self.null_class is not None else 0)
        if len(class_ids) and (int(class_ids.min()) < 0 or int(class_ids.max()) >= limit):
            raise LatentDistillError(
                f"config key 'prior.class_ids': class ids must lie in [0, {limit}) for {self.name_or_path}, "
                f"got {sorted(set(class_ids.tolist()))}"
            )
        rows = [weight[class_ids.to(weight.device)] for weight in self.tables.weights()]
        return torch.stack(rows, dim=1).detach().clone().float()

    def unconditional(self, count: int) -> torch.Tensor | None:
        if self.null_class is None:
            return None
        rows = [weight[self.null_class] for weight in self.tables.weights()]
        return torch.stack(rows).unsqueeze(0).expand(count, -1, -1).detach().float()

    def predict(self, latents: torch.Tensor, timesteps: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        self._check_channels(latents)
        # The hooks hand each label table its rows of c; the labels themselves only need a valid index.
        placeholder = torch.zeros(len(latents), dtype=torch.long, device=latents.device)
        self.tables.vectors = conditioning
        try:
            output = self.model(latents, timesteps, class_labels=placeholder).sample
        finally:
            self.tables.vectors = None
        return self._first_channels(output)


class DiTDenoiser(ClassConditionalDenoiser):
    """Class-conditional DiT: every block keeps its own label table, so c holds one vector per block."""

    kind = "dit"

    def __init__(self, model: ModelMixin, name_or_path: str | None = None, subfolder: str | None = None,
                 null_class: int | None | str = "auto"):
        if null_class == "auto":
            # DiT trained with label dropout keeps the null class as the table's last row.
            embedder = model.transformer_blocks[0].norm1.emb.class_embedder
            null_class = embedder.num_classes if embedder.dropout_prob > 0 else None
        super().__init__(model, name_or_path, subfolder, null_class)

    def label_modules(self) -> list[nn.Module]:
        return [block.norm1.emb.class_embedder for block in self.model.transformer_blocks]


class ClassUNetDenoiser(ClassConditionalDenoiser):
    """UNet2DModel with a class-embedding table (``num_class_embeds``); c is one vector per image."""

    kind = "unet"

    def label_modules(self) -> list[nn.Module]:
        if not isinstance(self.model.class_embedding, nn.Embedding):
            raise LatentDistillError(
                f"prior.denoiser {self.name_or_path}: this UNet2DModel is not class-conditional "
                "(it needs num_class_embeds, a class-embedding table)"
            )
        return [self.model.class_embedding]


class TextConditionalDenoiser(Denoiser):
    """Stable Diffusion's UNet2DConditionModel; c is the CLIP-encoded prompt "a photo of a {class}"."""

    kind = "sd"

    def __init__(self, model: ModelMixin, text_encoder: nn.Module, tokenizer, prompt: str = "a photo of a {class}",
                 name_or_path: str | None = None, subfolder: str | None = None):
        super().__init__(model, name_or_path, subfolder)
        self.text_encoder = text_encoder.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        self.prompt = prompt

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        device = next(self.text_encoder.parameters()).device
        return self.text_encoder(tokens.input_ids.to(device))[0].float()

    def initial_conditioning(self, class_ids: torch.Tensor, class_names: list[str]) -> torch.Tensor:
        if "{class}" not in self.prompt:
            raise LatentDistillError(f"config key 'prior.prompt' must contain {{class}}, got {self.prompt!r}")
        names = [class_names[int(i)].replace("_", " ") for i in class_ids]
        unique = sorted(set(names))
        encoded = self.encode_prompts([self.prompt.replace("{class}", name) for name in unique])
        by_name = dict(zip(unique, encoded))
        return torch.stack([by_name[name] for name in names]).clone()

    def unconditional(self, count: int) -> torch.Tensor:
        return self.encode_prompts([""]).expand(count, -1, -1)

    def predict(self, latents: torch.Tensor, timesteps: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        self._check_channels(latents)
        output = self.model(latents, timesteps, encoder_hidden_states=conditioning.to(self.model.dtype)).sample
        return self._first_channels(output)


def _config_class_name(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError) as error:
        raise LatentDistillError(f"could not read a JSON object from {path}: {error}") from error


def _resolve_file(name_or_path: str, filename: str) -> Path | None:
    """A file of a local folder or of a hub repository (offline: only if it is already cached)."""
    local = Path(name_or_path)
    if local.exists():
        return local / filename if (local / filename).is_file() else None
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(name_or_path, filename))
    except Exception:  # noqa: BLE001 - not there, offline, or not a repository: all mean "not available"
        return None


def locate_denoiser(name_or_path: str, kind: str = "auto") -> tuple[str, str | None]:
    """(kind, subfolder) of the denoiser in a pipeline folder, a model folder or a hub repository."""
    if not name_or_path:
        raise LatentDistillError("config key 'prior.denoiser' is empty: prior 'diffusion' needs a denoiser (hub id or folder)")
    local = Path(name_or_path)
    if not local.exists() and not HUB_ID.match(name_or_path):
        raise LatentDistillError(f"config key 'prior.denoiser': path does not exist: {name_or_path}")
    if local.exists() and not local.is_dir():
        raise LatentDistillError(f"config key 'prior.denoiser': {name_or_path} is not a folder")
    candidates = [(None, "config.json"), ("transformer", "transformer/config.json"), ("unet", "unet/config.json")]
    for subfolder, filename in candidates:
        path = _resolve_file(name_or_path, filename)
        if path is None:
            continue
        class_name = _config_class_name(path)
        if class_name not in KIND_BY_CLASS_NAME:
            if subfolder is None:
                continue  # e.g. a root config.json of something else; look for the pipeline layout
            raise LatentDistillError(f"{path} describes a '{class_name}', expected one of {', '.join(KIND_BY_CLASS_NAME)}")
        found = KIND_BY_CLASS_NAME[class_name]
        if kind not in ("auto", found):
            raise LatentDistillError(f"config key 'prior.kind' is '{kind}' but {path} describes a {class_name} ({found})")
        return found, subfolder
    where = "folder" if local.exists() else "hub repository (or it is not cached and the hub is unreachable)"
    raise LatentDistillError(
        f"config key 'prior.denoiser': {name_or_path} is not a diffusers denoiser {where}: no config.json naming "
        f"{', '.join(KIND_BY_CLASS_NAME)} at its root or in transformer/ or unet/"
    )


def read_prior_file(name_or_path: str) -> dict:
    """The ``latentdistill_prior.json`` a trained prior carries (empty for other models)."""
    path = _resolve_file(name_or_path, PRIOR_FILE)
    if path is None:
        return {}
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise LatentDistillError(f"{path} is not readable JSON ({error})") from None
    if not isinstance(values, dict):
        raise LatentDistillError(f"{path} must hold a JSON object")
    return values


def load_denoiser(name_or_path: str | os.PathLike, kind: str = "auto", prompt: str = "a photo of a {class}",
                  null_class: int | None | str = "auto") -> Denoiser:
    """Load a frozen denoiser by hub id or local folder; `kind` is detected from its config unless given.

    ``null_class``: the label-table row of the unconditional (dropped) class, None if there is none;
    "auto" reads it from the model (DiT trained with label dropout keeps it as the last row).
    """
    name_or_path = str(name_or_path)
    kind, subfolder = locate_denoiser(name_or_path, kind)
    model = load_diffusers_model(KINDS[kind][1], name_or_path, subfolder, "prior.denoiser")
    if kind == "dit":
        return DiTDenoiser(model, name_or_path, subfolder, null_class)
    if kind == "unet":
        return ClassUNetDenoiser(model, name_or_path, subfolder, null_class)
    from transformers import CLIPTextModel, CLIPTokenizer

    root_subfolder = subfolder is not None
    try:
        text_encoder = CLIPTextModel.from_pretrained(name_or_path, subfolder="text_encoder" if root_subfolder else None)
        tokenizer = CLIPTokenizer.from_pretrained(name_or_path, subfolder="tokenizer" if root_subfolder else None)
    except (OSError, ValueError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise LatentDistillError(
            f"prior.denoiser {name_or_path}: a Stable Diffusion denoiser needs text_encoder/ and tokenizer/ beside unet/ ({reason})"
        ) from error
    return TextConditionalDenoiser(model, text_encoder.float(), tokenizer, prompt, name_or_path, subfolder)
