"""Run configs: typed dataclasses, loaded from YAML, overridden with ``key=value``.

A config is data. Every run writes its resolved config next to its results, so a run folder says
exactly what produced it. Unknown keys, values of the wrong type and values no run can mean (NaN or
infinity, a learning rate of 0 or less, a momentum of 1, a zero std) are refused with the dotted key
named, because a typo that silently falls back to a default, or runs into NaN, wastes hours of compute.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from latentdistill.errors import LatentDistillError

# PyYAML (YAML 1.1) reads `1e-3` and `5E-4`, with no dot, as strings; for a float key they are numbers.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
# Lower bounds of keys whose bad values would otherwise fail deep inside the data pipeline.
_MINIMUM = {
    "data.val_per_class": 0, "cache.shard_size": 1, "cache.batch_size": 1,
    "distill.ipc": 1, "distill.iterations": 0, "distill.real_batch": 1, "distill.outer_loop": 0,
    "distill.inner_loop": 0, "distill.syn_steps": 1, "distill.expert_epochs": 1, "distill.max_start_epoch": 0,
    "distill.syn_batch": 0, "distill.syn_steps_per_checkpoint": 0, "buffer.experts": 1, "buffer.epochs": 1, "buffer.batch_size": 1, "distill.net_width": 0, "distill.net_depth": 0, "distill.inner_batch": 1, "distill.checkpoint_every": 1,
    "evaluate.runs": 1, "evaluate.epochs": 1, "evaluate.full_epochs": 1, "evaluate.batch_size": 1, "evaluate.test_batch": 1, "threads": 0,
    "prior.steps": 1, "prior.t_start": 0, "distill.decode_chunk": 0, "prior.steps_per_checkpoint": 0, "distill.embedding_lr": 0.0,
    "sr.patch_size": 8, "sr.stride": 1, "sr.pseudo_classes": 1, "sr.synthetic_batch": 1,
    "sr.iterations": 1, "sr.batch_size": 1, "sr.runs": 1,
    "train_prior.width": 1, "train_prior.depth": 1, "train_prior.heads": 1, "train_prior.patch_size": 1,
    "train_prior.steps": 0, "train_prior.batch_size": 1, "train_prior.checkpoint_every": 1,
    "train_prior.train_timesteps": 2,
    "buffer.weight_decay": 0.0, "evaluate.weight_decay": 0.0, "train_prior.weight_decay": 0.0,
}
# Ranges, as (low, high, low_inclusive, high_inclusive) with None for an open end: a learning rate of 0 or
# less, a momentum of 1 or more, a zero std or a fraction outside (0, 1] runs (or crashes) into garbage.
# A list key's rule holds for each of its items. Every _MINIMUM is the range [minimum, inf).
_POSITIVE = (0, None, False, False)
_FRACTION_BELOW_ONE = (0, 1, True, False)  # [0, 1)
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    **{key: (low, None, True, False) for key, low in _MINIMUM.items()},
    "data.resolution": (8, 4096, True, True), "data.std": _POSITIVE,
    "distill.lr": _POSITIVE, "distill.inner_lr": _POSITIVE, "distill.syn_lr": _POSITIVE, "distill.syn_lr_lr": _POSITIVE,
    "buffer.lr": _POSITIVE, "evaluate.lr": _POSITIVE, "sr.lr": _POSITIVE, "train_prior.lr": _POSITIVE,
    "distill.momentum": _FRACTION_BELOW_ONE, "buffer.momentum": _FRACTION_BELOW_ONE,
    "evaluate.momentum": _FRACTION_BELOW_ONE,
    "sr.budget": (0, 1, False, True), "sr.pool": (0, 1, False, True), "sr.prune_drop": _FRACTION_BELOW_ONE,
    "train_prior.ema_decay": _FRACTION_BELOW_ONE, "train_prior.class_dropout": _FRACTION_BELOW_ONE,
}
# Lists of a fixed length (one entry per RGB channel).
_LENGTHS = {"data.mean": 3, "data.std": 3}
# Strings that must hold something besides whitespace: an empty output_dir writes into the working folder.
_NON_EMPTY = ("output_dir", "device")
# Keys with a fixed set of values, checked when set (the registries check names like nets and priors).
# Names of registered parts (task, autoencoder.kind, prior.name, networks, objectives) are checked by their
# registries, which user code can extend (config key `imports`).
_CHOICES = {"precision": ("fp32", "bf16"),
            "distill.optimizer": ("sgd", "adam"), "prior.kind": ("auto", "dit", "unet", "sd"),
            "prior.residual": ("mean", "x0", "none"), "sr.scale": (2, 3, 4), "train_prior.architecture": ("dit", "unet"),
            "train_prior.beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2")}


@dataclass
class DataConfig:
    root: str = "../shared/data/cifar10"
    train_split: str = "train"
    test_split: str = "test"
    resolution: int = 32
    # Validation images carved from train (per class, fixed seed); never used for distillation.
    val_per_class: int = 100
    split_seed: int = 0
    # Count and list unreadable images instead of stopping at the first one.
    skip_bad: bool = False
    # CIFAR-10 statistics used by the reference code; images are normalised before every network.
    mean: list[float] = field(default_factory=lambda: [0.4914, 0.4822, 0.4465])
    std: list[float] = field(default_factory=lambda: [0.2023, 0.1994, 0.2010])


@dataclass
class AutoencoderConfig:
    # A local folder (TAESD-family weight files or a diffusers folder) or a hub id.
    name_or_path: str = "../shared/weights/taef2"
    kind: str = "auto"  # auto | taesd | kl | tiny
    subfolder: str | None = None


@dataclass
class CacheConfig:
    # Where the latent cache lives; empty means $LATENTDISTILL_CACHE (default outputs/cache) /
    # <dataset>-<resolution>px-<autoencoder>, shared by every run that reads the same inputs.
    dir: str = ""
    shard_size: int = 10000
    batch_size: int = 500


@dataclass
class PriorConfig:
    name: str = "vae"  # vae (decode z as it is) | diffusion (LD3M: T denoising steps, then decode)
    # The rest is read by prior "diffusion" only.
    # A hub id or a local folder: a diffusers pipeline folder (transformer/ or unet/, scheduler/, and for
    # Stable Diffusion text_encoder/ and tokenizer/), one model folder, or a `latentdistill train-prior` output.
    denoiser: str = ""
    kind: str = "auto"  # auto | dit | unet (class-conditional UNet2DModel) | sd (UNet2DConditionModel + CLIP)
    steps: int = 10  # T, the DDIM steps (eta 0) from t_start down to the clean latent
    t_start: int = 300  # noise level the chain starts from, in training timesteps (0: no noise)
    residual: str = "x0"  # mean (LD3M paper) | x0 (LD3M code) | none (plain DDIM)
    guidance_scale: float = 1.0  # classifier-free guidance; 1 turns it off
    # Activation checkpointing: the chain is split into segments of this many steps whose activations are
    # recomputed in the backward pass; 0 keeps every activation (fastest, memory grows with T).
    steps_per_checkpoint: int = 1
    # The model's class id for each dataset class, in the dataset's class order; empty: 0, 1, 2, ...
    class_ids: list[int] = field(default_factory=list)
    prompt: str = "a photo of a {class}"  # Stable Diffusion only
    # Seed of the fixed noise that q_sample adds to each synthetic latent (fixed, so an exported image
    # is exactly what the distillation optimised).
    noise_seed: int = 0


@dataclass
class AugmentConfig:
    # Differentiable siamese augmentation (DSA); "" or "none" disables it.
    strategy: str = "color_crop_cutout_flip_scale_rotate"
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    crop: float = 0.125
    cutout: float = 0.5
    scale: float = 1.2
    rotate: float = 15.0


@dataclass
class DistillConfig:
    objective: str = "gm"
    ipc: int = 1
    iterations: int = 1000
    init: str = "random_real"
    # The network the objective matches through, by registry name; width/depth 0: its default
    # (convnet: width 128, depth 3 at 32x32, one more per doubling of the resolution).
    net: str = "convnet"
    net_width: int = 0
    net_depth: int = 0
    # Real images per class in one matching step.
    real_batch: int = 256
    # DC's loops: matching steps on one network (outer) and its training on the synthetic set (inner).
    # 0 picks DC's table by IPC.
    outer_loop: int = 0
    inner_loop: int = 0
    inner_lr: float = 0.01
    inner_batch: int = 256
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.1
    # Decode the synthetic latents in chunks of this many under activation checkpointing (for large
    # decoders such as the SD VAE at 256 px); 0 decodes them at once and keeps every activation.
    decode_chunk: int = 0
    # Learning rate of the conditioning embeddings (prior "diffusion"); 0 keeps them fixed.
    embedding_lr: float = 0.01
    momentum: float = 0.5
    checkpoint_every: int = 50
    # Objective "mtt" (the expert buffer is buffer.dir): the student takes syn_steps steps on the synthetic
    # set from a random expert's epoch in [0, max_start_epoch) and should land expert_epochs later.
    syn_steps: int = 20
    expert_epochs: int = 2
    max_start_epoch: int = 10
    syn_batch: int = 0  # synthetic images per student step; 0: all of them
    syn_lr: float = 0.01  # the student's starting learning rate, learned with the images
    syn_lr_lr: float = 1e-5  # learning rate of that learning rate
    # Recompute each segment of this many student steps in the backward pass; 0 keeps every step's activations.
    syn_steps_per_checkpoint: int = 0


@dataclass
class BufferConfig:
    """`latentdistill buffer`: expert trajectories on the real data for objective "mtt".

    The experts are the network named by distill.net / net_width / net_depth."""

    # Where the buffer lives; empty: outputs/buffers/<dataset>-<resolution>px-<net>.
    dir: str = ""
    experts: int = 5
    epochs: int = 20
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    augment: bool = True  # DSA on the real images, as MTT trains its experts


@dataclass
class EvaluateConfig:
    net: str = "convnet"
    # Several networks, one row each (the cross-architecture table); empty: just `net`.
    nets: list[str] = field(default_factory=list)
    runs: int = 5
    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    augment: bool = True
    # The random real subset of the same IPC, trained with the same protocol in the same run.
    random_real: bool = True
    # The full training set (minus validation) with the same protocol for full_epochs: DD-Ranking's
    # label-robust score needs it.
    full_data: bool = False
    full_epochs: int = 30
    # Also train every set without augmentation: DD-Ranking's augmentation-robust score needs it.
    without_augment: bool = False
    # Keep the baseline accuracies (random real, full data) beside the latent cache and reuse them in
    # later evaluations with the same data, protocol, network and seed (delete baselines.json there, or
    # set false, after changing a network's code).
    reuse_baselines: bool = True
    score_weight: float = 0.5  # w of the label-robust score
    score_gamma: float = 0.5  # gamma of the augmentation-robust score
    test_batch: int = 1000


@dataclass
class SuperResolutionConfig:
    """Task "sr": distil a super-resolution training set (HR patches) and train SR networks on it."""

    train: list[str] = field(default_factory=lambda: ["../shared/data/sr/yang91", "../shared/data/sr/bsd200"])
    test: list[str] = field(default_factory=lambda: ["../shared/data/sr/set5", "../shared/data/sr/bsd100"])
    scale: int = 2  # 2 | 3 | 4
    # HR patches of the training set: a multiple of the scale and of the autoencoder's 8x downscale.
    patch_size: int = 48
    stride: int = 48
    # The distilled set's size as a fraction of the training patches.
    budget: float = 0.1
    # The real patches the distillation starts from and matches against, as a fraction of the training
    # patches chosen by loss-based pruning (below: the hardest prune_drop dropped, the next hardest kept), as
    # in Moser et al.'s "distill the best, ignore the rest"; 1.0 uses every patch. At least the budget.
    pool: float = 1.0
    pseudo_classes: int = 10  # k of the k-means over real patch latents that stands in for classes
    synthetic_batch: int = 32  # synthetic patches decoded per matching step (a class's share, at most)
    # The SR training protocol (every training set alike): L1 on (net(LR), HR), Adam, random flips and
    # 90-degree rotations, lr x0.5 at 1/2 and 3/4 of the iterations.
    net: str = "espcn"
    iterations: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    runs: int = 3
    augment: bool = True
    # Baselines trained in the same evaluation: the full set, a random subset and a loss-pruned subset of the
    # distilled set's size (an SRCNN trained on the full set ranks patches by loss; the hardest prune_drop are
    # dropped and the next hardest kept), and bicubic.
    baselines: list[str] = field(default_factory=lambda: ["full", "random", "pruned", "bicubic"])
    prune_drop: float = 0.05


@dataclass
class TrainPriorConfig:
    """`latentdistill train-prior`: a small class-conditional latent diffusion model on a latent cache."""

    architecture: str = "dit"  # dit (DiTTransformer2DModel) | unet (UNet2DModel)
    width: int = 256  # DiT hidden size; UNet base channels
    depth: int = 6  # DiT blocks; UNet layers per resolution level
    heads: int = 4  # DiT attention heads
    patch_size: int = 1  # DiT patch size in latent pixels
    steps: int = 6000
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999  # the saved model is the EMA of the weights
    class_dropout: float = 0.1  # labels dropped to the null class, for classifier-free guidance
    train_timesteps: int = 1000
    beta_schedule: str = "linear"  # linear | scaled_linear | squaredcos_cap_v2
    checkpoint_every: int = 500


@dataclass
class RunConfig:
    output_dir: str = "outputs/run"
    # Modules to import before the run is built: your own registered networks, objectives, priors or tasks.
    imports: list[str] = field(default_factory=list)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # Torch threads on the CPU; 0 leaves torch's default.
    threads: int = 0
    # fp32, or bf16 autocast for the network passes of distillation and evaluation (about 2x faster
    # on CPUs with AVX512-BF16 and on GPUs); latents, parameters and distances stay float32.
    precision: str = "fp32"
    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    train_prior: TrainPriorConfig = field(default_factory=TrainPriorConfig)
    task: str = "classification"  # classification | sr
    sr: SuperResolutionConfig = field(default_factory=SuperResolutionConfig)


def _to_float(value: Any) -> float:
    """``float(value)``, with an integer too large for a float read as infinity (refused as not finite)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _check_range(value: Any, key: str) -> None:
    """Refuse a value outside ``_RANGES[key]`` (each item, for a list), naming the key and the bound."""
    low, high, low_inclusive, high_inclusive = _RANGES[key]
    items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
    for index, item in items:
        name = key if index is None else f"{key}[{index}]"
        if high is not None and low is not None:
            interval = f" (range {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'})"
        else:
            interval = ""
        if low is not None and (item < low or (item == low and not low_inclusive)):
            bound = f"at least {low}" if low_inclusive else f"greater than {low}"
        elif high is not None and (item > high or (item == high and not high_inclusive)):
            bound = f"at most {high}" if high_inclusive else f"less than {high}"
        else:
            continue
        raise LatentDistillError(f"config key '{name}' must be {bound}{interval}, got {item}")


def _check_value(value: Any, key: str) -> None:
    """The checks beyond the type: lengths, ranges, fixed choices and non-empty strings."""
    if key in _LENGTHS and len(value) != _LENGTHS[key]:
        raise LatentDistillError(f"config key '{key}' expects a list of {_LENGTHS[key]} numbers, got {len(value)}: {value!r}")
    if key in _RANGES and value is not None:
        _check_range(value, key)
    if key in _CHOICES and value not in _CHOICES[key]:
        raise LatentDistillError(f"config key '{key}' must be one of {' | '.join(map(str, _CHOICES[key]))}, got {value!r}")
    if key in _NON_EMPTY and not value.strip():
        raise LatentDistillError(f"config key '{key}' must not be empty, got {value!r}")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a dataclass field's type, converting only what YAML cannot say."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except LatentDistillError as error:
                errors.append(str(error))
        raise LatentDistillError(errors[0] if errors else f"config key '{key}': bad value {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise LatentDistillError(f"config key '{key}' expects a list, got {value!r}")
        return [_coerce(item, item_type, f"{key}[{i}]") for i, item in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise LatentDistillError(f"config key '{key}' expects true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise LatentDistillError(f"config key '{key}' expects an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = _to_float(value)
        elif isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip()):
            number = _to_float(value)
        else:
            raise LatentDistillError(f"config key '{key}' expects a number, got {value!r}")
        # YAML's .nan and .inf (and 1e999) are floats, but no setting means them: they only make NaN results.
        if not math.isfinite(number):
            raise LatentDistillError(f"config key '{key}' must be a finite number, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, datetime.date):  # YAML reads 2024-01-01 as a date; keep the text as typed
            return str(value)
        raise LatentDistillError(f"config key '{key}' expects a string, got {value!r}")
    raise LatentDistillError(f"config key '{key}': unsupported type {annotation!r}")


def _update(target: Any, values: dict, prefix: str = "") -> None:
    if not isinstance(values, dict):
        raise LatentDistillError(f"config key '{prefix.rstrip('.') or '<root>'}' expects a mapping, got {values!r}")
    hints = typing.get_type_hints(type(target))
    names = {f.name for f in dataclasses.fields(target)}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in names:
            close = [n for n in sorted(names) if n.startswith(str(name)[:3])]
            hint = f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""
            raise LatentDistillError(f"unknown config key '{key}'{hint}")
        current = getattr(target, name)
        if dataclasses.is_dataclass(current):
            _update(current, value, key + ".")
        else:
            value = _coerce(value, hints[name], key)
            _check_value(value, key)
            setattr(target, name, value)


def parse_overrides(overrides: list[str]) -> dict:
    """Turn ``["distill.ipc=10", "seed=3"]`` into a nested dict; values are parsed as YAML scalars."""
    nested: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise LatentDistillError(f"override '{item}' is not of the form key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise LatentDistillError(f"override '{item}' sets a key below a value")
        node[parts[-1]] = value
    return nested


def update_config(config: RunConfig, values: dict) -> RunConfig:
    """Set the keys in a nested dict on ``config``, checking each against the schema."""
    _update(config, values)
    return config


def apply_config_file(config: RunConfig, path: str | Path) -> RunConfig:
    """Set the keys that a YAML file names (and only those) on ``config``."""
    path = Path(path)
    if not path.is_file():
        raise LatentDistillError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError:
        raise LatentDistillError(f"config file {path} is not a text (UTF-8) file") from None
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise LatentDistillError(f"config file {path} is not valid YAML{where}") from None
    try:
        _update(config, values)
    except LatentDistillError as error:
        raise LatentDistillError(f"{path}: {error}") from None
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then the YAML file, then ``key=value`` overrides, each checked against the schema."""
    config = RunConfig()
    if path is not None:
        apply_config_file(config, path)
    if overrides:
        _update(config, parse_overrides(overrides))
    return config


def config_to_dict(config: RunConfig) -> dict:
    return dataclasses.asdict(config)


def config_from_dict(values: dict) -> RunConfig:
    config = RunConfig()
    _update(config, values)
    return config


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
