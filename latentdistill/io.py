"""File I/O at the edges: atomic writes, and reads and writes whose failures are one-line errors.

Atomic writes: a file is either the old complete version or the new complete version.
Written to a temporary file in the same folder, flushed to disk, then renamed over the target, so a
run killed at any moment (SIGKILL included) never leaves a half-written checkpoint, shard or export.
A write that fails (read-only folder, full disk) removes its temporary file, leaves the old target as
it was, and raises ``WriteError``: a one-line ``LatentDistillError`` naming the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from latentdistill.errors import LatentDistillError


class WriteError(LatentDistillError, OSError):
    """A file or folder that could not be written. Also an ``OSError``, so that callers that caught the
    raw ``OSError`` of a failed write before still catch it."""


def display_path(path: str | Path) -> str:
    """A path as printable text: bytes that are not UTF-8 (allowed in Linux file names) become U+FFFD.

    Python keeps such bytes as lone surrogates, which crash ``print`` and ``str.encode``; every path
    that goes into a message or a JSON record passes through here.
    """
    return os.fsencode(str(path)).decode("utf-8", "replace")


def error_reason(error: BaseException) -> str:
    """The first line of an error's explanation, without the path Python may append to it."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


_PROC_STATUS = "/proc/self/status"


def _umask() -> int:
    """The process umask. Read from /proc on Linux (no change of global state); elsewhere set and
    restored at once, which another thread creating a file in that instant could observe."""
    try:
        with open(_PROC_STATUS, encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _set_mode(path: str) -> None:
    """mkstemp creates files 0600; give the result the mode any other new file would get. Best
    effort: a file system without modes (some network or FAT mounts) keeps what it has."""
    try:
        os.chmod(path, 0o666 & ~_umask())
    except OSError:
        pass


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _atomic(path: Path, write) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise WriteError(f"cannot write {display_path(path)}: {error_reason(error)}") from None
    try:
        try:
            os.close(handle)
            write(temporary)
            _set_mode(temporary)  # after the write: safetensors' writer sets its file to 0600 itself
            with open(temporary, "rb+") as file:
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except LatentDistillError:
            raise
        except (OSError, SafetensorError) as error:
            raise WriteError(f"cannot write {display_path(path)}: {error_reason(error)}") from None
    except BaseException:
        _remove(temporary)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic(Path(path), lambda temporary: Path(temporary).write_text(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(Path(path), lambda temporary: Path(temporary).write_bytes(data))


def atomic_save_file(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, atomically."""
    _atomic(Path(path), lambda temporary: save_file(tensors, temporary, metadata=metadata))


def check_writable(directory: str | Path, what: str) -> None:
    """Create ``directory`` if needed and prove a file can be created, written and deleted in it.

    Called before long work, so that a read-only or full output folder stops a run at its start rather
    than after hours; ``what`` names the folder for the user (a config key such as ``output_dir``).
    """
    directory = Path(directory)
    probe = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=directory, prefix=".write-check.", suffix=".tmp")
        try:
            os.write(handle, b"\0")
        finally:
            os.close(handle)
        os.unlink(probe)
        probe = None
    except OSError as error:
        raise WriteError(f"cannot write in {what} folder {display_path(directory)}: {error_reason(error)}") from None
    finally:
        if probe is not None:
            _remove(probe)


def read_safetensors(path: Path, what: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; an unreadable one is named in one line."""
    try:
        with safe_open(path, framework="pt") as file:
            return {key: file.get_tensor(key) for key in file.keys()}, file.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise LatentDistillError(f"{what} {display_path(path)} is unreadable ({error_reason(error)})") from None


def read_json_object(path: str | Path, what: str = "JSON object") -> dict:
    """A JSON file that must hold an object (a report, a metadata or labels file); anything else, an unreadable
    file or broken JSON is one line naming the file and ``what`` it should be."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LatentDistillError(f"{display_path(path)} is not a readable {what} ({str(error).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise LatentDistillError(f"{display_path(path)} is not a {what} (a JSON object)")
    return value
