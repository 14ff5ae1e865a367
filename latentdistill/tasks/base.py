"""The interface every task offers the workflows, and the registry of tasks."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Protocol

import torch

from latentdistill.config import RunConfig
from latentdistill.distill.loop import MatchingProblem
from latentdistill.distill.objective import ObjectiveSetup
from latentdistill.export import DistilledSet
from latentdistill.registry import Registry

TASKS = Registry("task", "task")


def cache_root() -> Path:
    """Where caches live unless ``cache.dir`` says: ``$LATENTDISTILL_CACHE``, default ``outputs/cache``."""
    return Path(os.environ.get("LATENTDISTILL_CACHE", "outputs/cache"))


def safe_tag(text: str) -> str:
    """A name made safe for a file name (cache folders name their autoencoder)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def autoencoder_tag(config: RunConfig, subfolder: bool = True) -> str:
    """How a cache names the autoencoder that encoded it: its folder (and subfolder), or ``pixels``."""
    if config.autoencoder.kind == "pixels":
        return "pixels"
    name = Path(config.autoencoder.name_or_path).name
    return safe_tag(f"{name}-{config.autoencoder.subfolder or ''}" if subfolder else name)


class Task(Protocol):
    name: str
    export_batch: int  # decode the export this many latents at a time; 0: the whole set at once

    def prepare(self, autoencoder, device: torch.device, progress: bool = True) -> Any:
        """Read (or build) the cached data the task distils from; returns the task's own data record."""

    def check_prior(self, prior_name: str) -> None:
        """Refuse a prior the task cannot use."""

    def check_names(self) -> None:
        """Refuse unknown networks, objectives and starts before any data is read (a cheap check)."""

    def summary(self, data: Any) -> str:
        """One line on what ``prepare`` made, for ``latentdistill encode``."""

    def classes(self, data: Any) -> list[str]: ...

    def matching_problem(self, data: Any, device: torch.device) -> MatchingProblem: ...

    def objective_setup(self, data: Any) -> ObjectiveSetup: ...

    def export_metadata(self, data: Any) -> dict: ...

    def save_grid(self, images: torch.Tensor, labels: torch.Tensor, path: Path) -> None:
        """A PNG of the exported set for a quick look."""

    def evaluate(self, distilled: DistilledSet, source: Path, progress: bool = True, folder: Path | None = None) -> dict:
        """Train fresh networks on the set and on its baselines; the report (JSON-ready). ``folder`` (the
        evaluation's run folder) is where a task may keep progress that an interrupted evaluation resumes from."""

    def table(self, report: dict) -> str:
        """The report as a markdown table, as the CLI prints it."""


def build_task(config: RunConfig) -> Task:
    return TASKS.build(config.task, config)
