"""Loading diffusers models by hub id or local folder, strictly.

diffusers fills weights that a file lacks (or holds in another shape) with random values and only logs a
warning; a silently random autoencoder or denoiser would waste a whole distillation run, so here any
missing or mismatched tensor is a one-line error naming the folder.
"""

from __future__ import annotations

import os

import torch
from diffusers.models.modeling_utils import ModelMixin

from latentdistill.errors import LatentDistillError


def load_diffusers_model(model_class: type[ModelMixin], name_or_path: str | os.PathLike, subfolder: str | None,
                         what: str) -> ModelMixin:
    """``model_class.from_pretrained`` in float32, frozen and in eval mode; ``what`` names the config key."""
    where = f"{name_or_path} (subfolder {subfolder})" if subfolder else str(name_or_path)
    try:
        model, info = model_class.from_pretrained(name_or_path, subfolder=subfolder, torch_dtype=torch.float32,
                                                  output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise LatentDistillError(f"{what}: could not load {model_class.__name__} from {where}: {reason}") from error
    wrong = list(info.get("missing_keys", [])) + [str(key) for key in info.get("mismatched_keys", [])]
    if wrong:
        raise LatentDistillError(
            f"{what}: could not load {model_class.__name__} from {where}: the weights file does not match its "
            f"config.json ({len(wrong)} tensors missing or of the wrong shape, e.g. {wrong[0]})"
        )
    return model.requires_grad_(False).eval()
