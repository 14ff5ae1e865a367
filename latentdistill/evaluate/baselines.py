"""Baseline results kept beside the data they were measured on, shared by every task's evaluation."""

from __future__ import annotations

import fcntl
import json
import warnings
from pathlib import Path

from latentdistill.errors import LatentDistillError
from latentdistill.io import atomic_write_text


class BaselineCache:
    """Results of the baselines (random real subsets, the full training set, pruned subsets), which do not
    depend on the distilled set: every evaluation with the same data, protocol, network and seed reuses them, so
    a cross-architecture table of several distilled sets trains each baseline once. A JSON file,
    rewritten atomically after each new entry; where it cannot be written, the entry is only not kept."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, dict] = {}
        if path is not None and path.is_file():
            try:
                self.entries = json.loads(path.read_text())
            except ValueError:
                self.entries = {}  # a damaged cache only costs recomputation

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, value: dict) -> None:
        self.entries[key] = value
        if self.path is None:
            return
        try:
            # Evaluations side by side share the file: one at a time reads, merges and rewrites it.
            with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if self.path.is_file():  # keep what other evaluations added since this one started
                    try:
                        self.entries = {**json.loads(self.path.read_text()), **self.entries}
                    except ValueError:
                        pass
                atomic_write_text(self.path, json.dumps(self.entries, indent=1))
        except (LatentDistillError, OSError) as error:  # a read-only shared cache must not cost a finished evaluation
            warnings.warn(f"baselines not kept: {error}", stacklevel=2)
