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
from pathlib import Path
from typing import Any

import yaml

from latentdistill.config.schema import (
    AugmentConfig,
    AutoencoderConfig,
    BufferConfig,
    CacheConfig,
    DataConfig,
    DistillConfig,
    EvaluateConfig,
    PriorConfig,
    RunConfig,
    SuperResolutionConfig,
    TrainPriorConfig,
)
from latentdistill.config.sr_protocols import SR_PROTOCOLS, SRProtocol
from latentdistill.errors import LatentDistillError
from latentdistill.runtime import STATISTICS

# Keys of earlier versions, so an old config is told what the key is called now.
RENAMED = {"prior.steps": "prior.denoising_steps", "prior.steps_per_checkpoint": "prior.steps_per_recompute",
           "distill.syn_steps_per_checkpoint": "distill.syn_steps_per_recompute"}
# PyYAML (YAML 1.1) reads `1e-3` and `5E-4`, with no dot, as strings; for a float key they are numbers.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
# Lower bounds of keys whose bad values would otherwise fail deep inside the data pipeline.
_MINIMUM = {
    "data.val_per_class": 0, "cache.shard_size": 1, "cache.batch_size": 1,
    "distill.ipc": 1, "distill.iterations": 0, "distill.real_batch": 1, "distill.outer_loop": 0,
    "distill.inner_loop": 0, "distill.syn_steps": 1, "distill.expert_epochs": 1, "distill.max_start_epoch": 0, "distill.min_start_epoch": 0,
    "distill.max_start_epoch_final": 0, "distill.window_iterations": 0, "distill.storage_ipc": 0, "distill.snapshot_every": 0,
    "distill.syn_batch": 0, "distill.syn_steps_per_recompute": 0, "buffer.experts": 1, "buffer.parallel": 1, "buffer.epochs": 1, "buffer.batch_size": 1, "distill.net_width": 0, "distill.net_depth": 0, "distill.inner_batch": 1, "distill.checkpoint_every": 1,
    "evaluate.runs": 1, "evaluate.epochs": 1, "evaluate.full_epochs": 1, "evaluate.batch_size": 1, "evaluate.test_batch": 1, "threads": 0,
    "prior.denoising_steps": 1, "prior.t_start": 0, "distill.decode_chunk": 0, "prior.steps_per_recompute": 0, "distill.embedding_lr": 0.0,
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
    "data.resolution": (8, 4096, True, True), "data.std": _POSITIVE, "data.zca_eps": _POSITIVE,
    "distill.lr": _POSITIVE, "distill.inner_lr": _POSITIVE, "distill.syn_lr": _POSITIVE, "distill.syn_lr_lr": _POSITIVE, "distill.label_lr": _POSITIVE,
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
_CHOICES = {"precision": ("fp32", "bf16"), "evaluate.labels": ("hard", "soft"), "distill.batched": (True, False, "auto"), "evaluate.batched": (True, False, "auto"),
            "distill.optimizer": ("sgd", "adam"), "distill.matching_nets": ("fresh", "experts"), "prior.kind": ("auto", "dit", "unet", "sd"),
            "prior.residual": ("mean", "x0", "none"), "sr.scale": (2, 3, 4), "sr.protocol": tuple(SR_PROTOCOLS), "train_prior.architecture": ("dit", "unet"),
            "train_prior.beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2")}

# Number keys that also take a word.
_WORDS = {"evaluate.lr": ("learned",), "sr.iterations": ("protocol",), "sr.batch_size": ("protocol",), "sr.lr": ("protocol",),
          "data.mean": ("auto", *STATISTICS), "data.std": ("auto", *STATISTICS)}


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
    if isinstance(value, str) and key in _WORDS:  # a number key that also takes a word
        if value not in _WORDS[key]:
            kind = f"a list of {_LENGTHS[key]} numbers" if key in _LENGTHS else "a finite number"
            if _EXPONENT_FLOAT.match(value.strip()):  # 1e999, or 1e5 where an integer is wanted
                kind += " (an integer key takes digits only)"
            raise LatentDistillError(f"config key '{key}' must be {kind} or one of {' | '.join(_WORDS[key])}, got {value!r}")
        return
    if key in _LENGTHS and len(value) != _LENGTHS[key]:
        raise LatentDistillError(f"config key '{key}' expects a list of {_LENGTHS[key]} numbers, got {len(value)}: {value!r}")
    if key in _RANGES and value is not None:
        _check_range(value, key)
    if key in _CHOICES and value not in _CHOICES[key]:
        choices = " | ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in _CHOICES[key])  # as YAML spells them
        raise LatentDistillError(f"config key '{key}' must be one of {choices}, got {value!r}")
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
        if key.split("[")[0] in _WORDS and not isinstance(value, str):  # a number key's word: numbers go to the number type
            raise LatentDistillError(f"config key '{key}' takes a word only as one of {' | '.join(_WORDS[key.split('[')[0]])}")
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
            if key in RENAMED:
                raise LatentDistillError(f"config key '{key}' was renamed to '{RENAMED[key]}'")
            close = [n for n in sorted(names) if n.startswith(str(name)[:3])]
            hint = f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""
            raise LatentDistillError(f"unknown config key '{key}'{hint}")
        current = getattr(target, name)
        if dataclasses.is_dataclass(current):
            _update(current, value, key + ".")
        else:
            value = _coerce(value, hints[name], key)
            _check_value(value, key)
            if key in ("data.mean", "data.std") and isinstance(value, str) and value in STATISTICS:  # a name: its numbers
                value = list(STATISTICS[value][key == "data.std"])
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
    """Write the resolved config as YAML, atomically."""
    from latentdistill.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


__all__ = ["AugmentConfig", "AutoencoderConfig", "BufferConfig", "CacheConfig", "DataConfig", "DistillConfig",
           "EvaluateConfig", "PriorConfig", "RunConfig", "SRProtocol", "SR_PROTOCOLS", "SuperResolutionConfig", "TrainPriorConfig", "apply_config_file",
           "config_from_dict", "config_to_dict", "load_config", "parse_overrides", "save_config", "update_config"]
