"""File I/O at the edges: atomic writes, and safetensors reads whose failures are one-line errors.

Atomic writes: a file is either the old complete version or the new complete version.
Written to a temporary file in the same folder, flushed to disk, then renamed over the target, so a
run killed at any moment (SIGKILL included) never leaves a half-written checkpoint, shard or export.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from latentdistill.errors import LatentDistillError


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic(Path(path), lambda temporary: Path(temporary).write_text(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(Path(path), lambda temporary: Path(temporary).write_bytes(data))


def atomic_save_file(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, atomically."""
    _atomic(Path(path), lambda temporary: save_file(tensors, temporary, metadata=metadata))


def read_safetensors(path: Path, what: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; an unreadable one is named in one line."""
    try:
        with safe_open(path, framework="pt") as file:
            return {key: file.get_tensor(key) for key in file.keys()}, file.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise LatentDistillError(f"{what} {path} is unreadable ({str(error).splitlines()[0]})") from None
