"""A run folder: the one place that knows what each file in ``output_dir`` is, when a run may start or
resume there, and who holds it.

| file | written by | what it is |
|---|---|---|
| ``config.yaml`` | distill, evaluate, train-prior, sr-train | the resolved config, written once the run is accepted |
| ``distill_log.jsonl`` | distill | one JSON line per iteration (loss, seconds) |
| ``checkpoint.safetensors`` | distill | the latents, optimiser state and iteration (atomic) |
| ``distilled.safetensors`` | distill | the exported set: once written, the run is finished and never rewritten |
| ``grid.png`` | distill | the decoded set, one row per class |
| ``report.json`` | evaluate | the evaluation; never overwritten (a new evaluation takes a new folder) |
| ``.lock`` | every verb that writes here | held (``flock``) while a process works in the folder |
| ``sr_model.safetensors`` | sr-train | a trained SR network |
| ``train_prior_*`` | train-prior | its checkpoint and log, beside the trained prior's diffusers folders |

A command that is refused changes nothing here: every check reads, and only an accepted run writes.
The lock is an advisory ``flock`` on ``.lock``: the kernel drops it when its process dies, so a lock
left by a killed run is taken over by the next one, and a second live process is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml
from safetensors import SafetensorError, safe_open

from latentdistill.config import config_from_dict, config_to_dict
from latentdistill.errors import LatentDistillError
from latentdistill.io import atomic_write_text

# What a resumed distillation must share with the saved run (dotted keys); the run may be extended.
DISTILL_FIXED = ("seed", "task", "imports", "data", "autoencoder", "prior", "augment", "distill", "buffer",
                 "precision", "sr")
# The SR protocol's name judges a set; it does not make it (the pool's ranking always trains under quick).
DISTILL_MAY_CHANGE = ("distill.iterations", "distill.checkpoint_every", "distill.snapshot_every", "sr.runs", "sr.baselines", "sr.test",
                      "sr.protocol")


def changed_key(saved: dict, wanted: dict, fixed: Iterable[str], may_change: Iterable[str] = (), prefix: str = "") -> str | None:
    """The first dotted key under ``fixed`` whose value differs between two resolved configs (or records),
    ignoring the dotted keys in ``may_change``: the one resume check of every resumable verb."""
    may_change = tuple(may_change)
    for key in fixed:
        name = f"{prefix}{key}"
        if name in may_change:
            continue
        old, new = saved.get(key), wanted.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found = changed_key(old, new, sorted(set(old) | set(new)), may_change, f"{name}.")
            if found:
                return found
        elif old != new:
            return name
    return None


def comparable_config(resolved: dict) -> dict:
    """A resolved config as resume compares it: keys added since it was saved take their defaults (a run saved
    before ``distill.matching_nets`` existed matched on fresh networks). A config that no longer loads is
    compared as saved (the comparison then names what changed)."""
    try:
        return config_to_dict(config_from_dict(resolved))
    except (LatentDistillError, TypeError, ValueError):
        return resolved


def describe_change(key: str, saved: dict, wanted: dict) -> str:
    """``'distill.lr' (0.1 in the saved run, 0.2 now)``."""

    def lookup(values: dict):
        for part in key.split("."):
            values = values.get(part) if isinstance(values, dict) else None
        return values

    return f"'{key}' ({json.dumps(lookup(saved))} in the saved run, {json.dumps(lookup(wanted))} now)"


class RunFolder:
    CONFIG = "config.yaml"
    LOG = "distill_log.jsonl"
    CHECKPOINT = "checkpoint.safetensors"
    DISTILLED = "distilled.safetensors"
    GRID = "grid.png"
    START_GRID = "grid_start.png"  # the set before the first step
    REPORT = "report.json"
    LOCK = ".lock"
    SR_MODEL = "sr_model.safetensors"  # sr-train
    SR_MODEL_CHECKPOINT = "sr_model_checkpoint.safetensors"  # sr-train's state while it trains
    PRIOR_CHECKPOINT = "train_prior_checkpoint.safetensors"  # train-prior (the prior itself: diffusers folders)
    PRIOR_LOG = "train_prior_log.jsonl"

    def __init__(self, path: str | Path, claimed: bool = False):
        """``claimed``: the caller made this (empty) folder for this command, so a failure removes it."""
        if not str(path).strip():
            raise LatentDistillError("config key 'output_dir' is empty: name the run folder")
        self.path = Path(path)
        self.claimed = claimed

    @classmethod
    def fresh(cls, parent: Path, prefix: str) -> RunFolder:
        """A new ``<prefix>-N`` folder in ``parent``, claimed with mkdir: commands started at once never share
        one, and nothing earlier is ever overwritten."""
        index = 1
        while True:
            candidate = parent / f"{prefix}-{index}"
            try:
                candidate.mkdir()
                return cls(candidate, claimed=True)
            except FileExistsError:
                index += 1
            except OSError as error:
                raise LatentDistillError(f"cannot write a {prefix} folder in {parent} ({error.strerror}): "
                                         "pass output_dir=...") from None

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def log(self) -> Path:
        return self.path / self.LOG

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def distilled(self) -> Path:
        return self.path / self.DISTILLED

    def snapshot(self, iteration: int) -> Path:
        """The set exported at ``iteration`` (``distill.snapshot_every``)."""
        return self.path / "snapshots" / f"iteration-{iteration:06d}.safetensors"

    @property
    def grid(self) -> Path:
        return self.path / self.GRID

    @property
    def start_grid(self) -> Path:
        return self.path / self.START_GRID

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    # --- may a run start here? (read-only checks) ---------------------------------------------

    def check_distill(self, resolved: dict, resume: bool) -> None:
        """Refuse, changing nothing, a distillation that would overwrite or mix with another run."""
        if self.distilled.exists():
            if resume:
                raise LatentDistillError(
                    f"{self.path} holds a finished run ({self.DISTILLED}); --resume never rewrites it. To distill "
                    f"longer, copy its {self.CHECKPOINT} into a new output_dir and resume there")
            raise LatentDistillError(f"{self.distilled} already exists: choose another output_dir (nothing was overwritten)")
        if not self.checkpoint.exists():
            return
        if not resume:
            raise LatentDistillError(f"{self.checkpoint} exists: pass --resume to continue that run, or choose another output_dir")
        saved, iteration = self.saved_state()
        key = changed_key(comparable_config(saved), comparable_config(resolved), DISTILL_FIXED, DISTILL_MAY_CHANGE)
        if key:
            raise LatentDistillError(f"cannot resume {self.checkpoint}: config key {describe_change(key, saved, resolved)} "
                                     "differs from the saved run (nothing was changed)")
        wanted = resolved.get("distill", {}).get("iterations", iteration)
        if wanted < iteration:
            raise LatentDistillError(f"cannot resume {self.checkpoint}: it is at iteration {iteration}, past config key "
                                     f"'distill.iterations' ({wanted}); set distill.iterations={iteration} or more")

    def saved_state(self) -> tuple[dict, int]:
        """The resolved config and the iteration stored in the checkpoint's metadata."""
        try:
            with safe_open(self.checkpoint, framework="pt") as file:
                metadata = file.metadata() or {}
                return json.loads(metadata["config"]), int(metadata["iteration"])
        except (SafetensorError, OSError, ValueError, KeyError) as error:
            raise LatentDistillError(f"checkpoint {self.checkpoint} is unreadable ({type(error).__name__}): "
                                     "delete it to start over") from None

    def check_report(self) -> None:
        if self.report.exists():
            raise LatentDistillError(f"{self.report} already exists: choose another output_dir (nothing was overwritten)")

    # --- the accepted run's files -------------------------------------------------------------

    def write_config(self, resolved: dict) -> None:
        atomic_write_text(self.config, yaml.safe_dump(resolved, sort_keys=False))

    def write_report(self, text: str) -> Path:
        """Write ``report.json``; if the folder has become unwritable, keep the report in the temporary folder
        instead (a finished evaluation is never lost) and say where in the error."""
        try:
            atomic_write_text(self.report, text)
            return self.report
        except (LatentDistillError, OSError) as error:
            handle, fallback = tempfile.mkstemp(prefix="latentdistill-report-", suffix=".json")
            with os.fdopen(handle, "w") as file:
                file.write(text)
            raise LatentDistillError(f"{error}; the finished evaluation was saved to {fallback} instead") from None

    def append_log(self, record: dict) -> None:
        with open(self.log, "a") as log:
            log.write(json.dumps(record) + "\n")

    def truncate_log(self, iteration: int) -> None:
        """Keep the log lines up to ``iteration``: later ones belong to work a killed run never saved."""
        if not self.log.exists():
            return
        kept = []
        for line in self.log.read_text().splitlines():
            try:
                if json.loads(line)["iteration"] <= iteration:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by the kill
        atomic_write_text(self.log, "".join(kept))

    def distill_minutes(self, log: Path | None = None) -> float:
        """Time spent in the loop (distillation, or the log named), summed over every session of a resumed run."""
        log = log or self.log
        if not log.exists():
            return 0.0
        seconds = 0.0
        for line in log.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                seconds += json.loads(line)["seconds"]
        return seconds / 60

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for this process; a second live process is refused in one line. A folder this
        call created is removed again if the work fails before writing anything into it."""
        created = [self.path, *self.path.parents]
        created = created[: next(i for i, p in enumerate(created) if p.exists())] if not self.path.exists() else []
        created = created or ([self.path] if self.claimed else [])
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = os.open(self.path / self.LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise LatentDistillError(f"cannot write run folder {self.path}: {error.strerror or error}") from None
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(handle, 200, 0).decode(errors="replace").strip() or "unknown"
                raise LatentDistillError(f"run folder {self.path} is in use by another process ({holder}): "
                                         "wait for it to finish or choose another output_dir") from None
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            try:
                yield
            except BaseException:
                if created and [p.name for p in self.path.iterdir()] == [self.LOCK]:
                    (self.path / self.LOCK).unlink()
                    for folder in created:  # this folder, then the parents made for it
                        with contextlib.suppress(OSError):
                            folder.rmdir()
                raise
        finally:
            os.close(handle)  # closing drops the flock
