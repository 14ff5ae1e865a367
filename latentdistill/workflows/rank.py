"""``latentdistill rank-nets FILE --nets SPEC``: is a distilled set a good proxy for architecture search? (Moser et
al., "Less is More: Proxy Datasets in NAS approaches", CVPRW 2022.) One library call, as the other verbs."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from latentdistill.config import RunConfig, config_to_dict
from latentdistill.errors import LatentDistillError
from latentdistill.evaluate.rank_nets import candidates, markdown_table
from latentdistill.export.sets import SetSource
from latentdistill.io import atomic_write_text
from latentdistill.reports.read import RANK_NETS_FILE
from latentdistill.run_folder import RunFolder
from latentdistill.tasks.judging import check_compatible
from latentdistill.tasks.ranking import rank_distilled
from latentdistill.workflows.common import read_any_set, setup, write_report_page


def run_rank_nets(file: str | Path, config: RunConfig, spec: str, full_epochs: int | None = None,
                  progress: bool = True, source: SetSource | None = None) -> dict:
    """Train each candidate of ``spec`` (``convnet,alexnet`` or ``convnet:width=32,64;depth=2,3;norm=instancenorm,
    batchnorm``) ``evaluate.runs`` times on the distilled file, on random real subsets of the same images per class
    (``evaluate.epochs`` each) and on the full training rows (``full_epochs``, default ``evaluate.full_epochs``;
    reused from the baseline cache when trained before); print the table and write ``rank_nets.json`` (and
    ``config.yaml``) into a fresh ``rank-nets-N`` folder beside the file. Returns the report.

    The file is only read; every path comes from ``config``, the file's metadata only has to agree with it
    (task, classes, resolution). Runs in one process."""
    setup(config)
    if full_epochs is not None and full_epochs < 1:
        raise LatentDistillError(f"--full-epochs must be at least 1, got {full_epochs}")
    path = Path(file)
    distilled = read_any_set(path, config, source)  # ours, or another method's (``export.sets``)
    check_compatible(config, distilled, path)  # refused before any folder is made or any network trained
    found = candidates(spec, config.data.resolution)
    folder = RunFolder.fresh(path.parent, "rank-nets")
    with folder.lock():  # made (and proved writable) before the work, so a finished ranking has a home
        started = time.perf_counter()
        report = {"distilled_file": str(path.resolve()), "spec": spec,
                  **rank_distilled(config, distilled, path, found, full_epochs, progress=progress)}
        report["minutes"] = round((time.perf_counter() - started) / 60, 2)
        print(markdown_table(report), flush=True)
        for note in report.get("notes", []):
            print(f"note: {note}", flush=True)
        folder.write_config(config_to_dict(config))
        _write(folder.path / RANK_NETS_FILE, json.dumps(report, indent=2))
        write_report_page(folder)
    return report


def _write(target: Path, text: str) -> None:
    """Atomically; if the folder has become unwritable, the finished ranking goes to the temporary folder instead
    and the error says where (as ``RunFolder.write_report``)."""
    try:
        atomic_write_text(target, text)
    except (LatentDistillError, OSError) as error:
        handle, fallback = tempfile.mkstemp(prefix="latentdistill-rank-nets-", suffix=".json")
        with os.fdopen(handle, "w") as output:
            output.write(text)
        raise LatentDistillError(f"{error}; the finished ranking was saved to {fallback} instead") from None
