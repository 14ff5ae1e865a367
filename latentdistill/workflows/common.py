"""What every verb does first: threads, the user's modules, and a word on emulated bf16; and the autoencoder
a config names."""

from __future__ import annotations

import sys
from pathlib import Path

from latentdistill.autoencoders import load_autoencoder
from latentdistill.config import RunConfig
from latentdistill.data.image_folder import ImageFolder
from latentdistill.errors import LatentDistillError
from latentdistill.export import DistilledSet, read_distilled
from latentdistill.export.sets import SetSource, detect_format, read_set
from latentdistill.registry import import_user_modules
from latentdistill.reports.html import write_html_report
from latentdistill.run_folder import RunFolder
from latentdistill.runtime import cpu_emulates_bf16, resolve_device, set_threads


def setup(config: RunConfig) -> None:
    set_threads(config.threads)
    import_user_modules(config.imports)
    if config.precision == "bf16" and resolve_device(config.device).type == "cpu" and cpu_emulates_bf16():
        print("note: this CPU has no native bf16 (AVX512-BF16): precision=bf16 is emulated and much slower here "
              "than precision=fp32", file=sys.stderr)


def autoencoder_of(config: RunConfig):
    return load_autoencoder(config.autoencoder.name_or_path, config.autoencoder.kind, config.autoencoder.subfolder,
                            normalization=(config.data.mean, config.data.std))


def read_any_set(path: str | Path, config: RunConfig, source: SetSource | None = None) -> DistilledSet:
    """Our distilled file as it is, or a set in another format (``export.sets``) read for the classes and
    resolution of the real data ``config.data`` names, which it is then judged against."""
    path, source = Path(path), source or SetSource()
    if source.format == "distilled" or (source.format == "auto" and path.is_file() and detect_format(path) == "distilled"):
        return read_distilled(path)
    if config.task != "classification":
        raise LatentDistillError(f"{path}: sets in other formats are read for task classification, not '{config.task}'")
    if not Path(config.data.root).is_dir():
        raise LatentDistillError(f"config key 'data.root': dataset folder not found: {config.data.root}")
    classes = list(ImageFolder.scan(config.data.root, config.data.train_split).classes)
    return read_set(path, source, classes, config.data.resolution)


def write_report_page(folder: RunFolder) -> None:
    """``report.html`` beside the results; a page that cannot be made is a warning, never a lost result."""
    try:
        write_html_report(folder.path)
    except (LatentDistillError, OSError) as error:
        print(f"warning: {folder.path / 'report.html'} not written: {error}", file=sys.stderr)
