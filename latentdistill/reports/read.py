"""Reading a run folder for its report, the only I/O of a report besides writing it.

Every file is optional (a run still distilling, an ``evaluation-N/`` folder with a report and a config
only), but a file that is there and cannot be read is a one-line ``LatentDistillError`` naming it: a report
that silently left out a damaged file would look like a run that never wrote it.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml
from PIL import Image, UnidentifiedImageError

from latentdistill.errors import LatentDistillError
from latentdistill.evaluate.classification import ROW_NAMES
from latentdistill.export import DistilledSet, read_distilled
from latentdistill.io import display_path, error_reason, read_json_object
from latentdistill.run_folder import RunFolder
from latentdistill.storage import storage_per_class

# The files a finished, evaluated run holds (the page names those absent), besides its snapshots.
EXPECTED = (RunFolder.CONFIG, RunFolder.LOG, RunFolder.DISTILLED, RunFolder.GRID, RunFolder.START_GRID,
            RunFolder.REPORT)
SNAPSHOT_NAME = re.compile(r"^iteration-(\d+)\.(png|safetensors)$")


@dataclass
class Snapshot:
    """A set exported during distillation: its grid PNG, or (no PNG) the set to draw one from."""

    iteration: int
    png: bytes | None = None
    distilled: DistilledSet | None = None


@dataclass
class RunFiles:
    """What a run folder holds, read and checked; ``present`` names the files found."""

    folder: Path
    present: list[str] = field(default_factory=list)
    config_text: str | None = None
    config: dict = field(default_factory=dict)
    log: list[tuple[int, float]] = field(default_factory=list)  # (iteration, finite loss), by iteration
    log_skipped: int = 0  # lines cut short (a killed run) or with a non-finite loss
    distilled: DistilledSet | None = None
    storage: dict | None = None
    grid_png: bytes | None = None
    start_png: bytes | None = None
    snapshots: list[Snapshot] = field(default_factory=list)
    report: dict | None = None
    ranking: dict | None = None  # rank_nets.json, in a rank-nets-N folder
    date: tuple[str, str] | None = None  # (UTC time, the file it is the modification time of)


RANK_NETS_FILE = "rank_nets.json"  # written by ``latentdistill rank-nets``


def read_run_folder(path: str | Path) -> RunFiles:
    folder = RunFolder(path)
    if not folder.path.is_dir():
        raise LatentDistillError(f"report: {display_path(folder.path)} is not a folder")
    files = RunFiles(folder.path)
    if folder.config.is_file():
        files.config_text, files.config = _read_yaml(folder.config)
    if folder.log.is_file():
        files.log, files.log_skipped = _read_log(folder.log)
    if folder.distilled.is_file():
        files.distilled = read_distilled(folder.distilled)
        files.storage = storage_per_class(folder.distilled)
    if folder.grid.is_file():
        files.grid_png = _read_png(folder.grid)
    if folder.start_grid.is_file():
        files.start_png = _read_png(folder.start_grid)
    files.snapshots = _read_snapshots(folder.path / "snapshots")
    if folder.report.is_file():
        files.report = read_json_object(folder.report, "report")
        check_report(files.report, folder.report)
    if (folder.path / RANK_NETS_FILE).is_file():
        files.ranking = read_json_object(folder.path / RANK_NETS_FILE, "rank-nets report")
    files.present = [name for name in EXPECTED if (folder.path / name).is_file()]
    files.date = _date(folder.path, [folder.DISTILLED, folder.REPORT, folder.CONFIG])
    return files


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as error:
        raise LatentDistillError(f"cannot read {display_path(path)}: {error_reason(error)}") from None
    except UnicodeDecodeError:
        raise LatentDistillError(f"{display_path(path)} is not UTF-8 text") from None


def _read_yaml(path: Path) -> tuple[str, dict]:
    text = _read_text(path)
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise LatentDistillError(f"{display_path(path)} is not readable YAML ({error_reason(error)})") from None
    if values is not None and not isinstance(values, dict):
        raise LatentDistillError(f"{display_path(path)} is not a config (a YAML mapping)")
    return text, values or {}


def _read_log(path: Path) -> tuple[list[tuple[int, float]], int]:
    """Readable lines by iteration (a resumed run's last line for an iteration wins). A line cut short by a
    kill is skipped and counted, as ``RunFolder.truncate_log`` does; a log with no readable line is refused."""
    losses: dict[int, float] = {}
    lines = [line for line in _read_text(path).splitlines() if line.strip()]
    skipped = 0
    for line in lines:
        try:
            record = json.loads(line)
            iteration, loss = int(record["iteration"]), float(record["loss"])
        except (ValueError, KeyError, TypeError):
            skipped += 1
            continue
        if math.isfinite(loss):
            losses[iteration] = loss
        else:
            skipped += 1
    if lines and skipped == len(lines):
        raise LatentDistillError(f"{display_path(path)} holds no readable line (JSON with 'iteration' and 'loss')")
    return sorted(losses.items()), skipped


def _read_png(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise LatentDistillError(f"{display_path(path)} is a {image.format} file, not a PNG")
            image.load()
    except OSError as error:  # PIL's truncated and unidentified images are OSErrors too
        reason = "not an image" if isinstance(error, UnidentifiedImageError) else error_reason(error)
        raise LatentDistillError(f"{display_path(path)} is not a readable PNG ({reason})") from None
    return data


def _read_snapshots(directory: Path) -> list[Snapshot]:
    """Every snapshot by iteration: its PNG when there is one, else its set (to draw the grid from)."""
    if not directory.is_dir():
        return []
    found: dict[int, dict[str, Path]] = {}
    for path in sorted(directory.iterdir()):
        match = SNAPSHOT_NAME.match(path.name)
        if match and path.is_file():
            found.setdefault(int(match.group(1)), {})[match.group(2)] = path
    snapshots = []
    for iteration, paths in sorted(found.items()):
        if "png" in paths:
            snapshots.append(Snapshot(iteration, png=_read_png(paths["png"])))
        else:
            snapshots.append(Snapshot(iteration, distilled=read_distilled(paths["safetensors"])))
    return snapshots


def _date(folder: Path, names: list[str]) -> tuple[str, str] | None:
    """When the run's main file was last written, from the file itself: the page holds no time of its own."""
    for name in names:
        if (folder / name).is_file():
            stamp = datetime.fromtimestamp((folder / name).stat().st_mtime, tz=timezone.utc)
            return stamp.strftime("%Y-%m-%d %H:%M UTC"), name
    return None


def check_report(report: dict, path: Path) -> None:
    """The parts of a report the page draws must have the shapes evaluation writes them in."""
    problem = _report_problem(report)
    if problem:
        raise LatentDistillError(f"{display_path(path)}: unexpected report structure at '{problem}'")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_ZERO = {"mean": 0.0}  # an optional summary that is absent


def _summary(value: object) -> bool:
    return isinstance(value, dict) and _number(value.get("mean")) and _number(value.get("std", 0.0))


def _scores(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(s, dict) and _number(s.get("score")) for s in value.values())


def _storage_ok(storage: dict) -> bool:
    """``storage.storage_per_class``'s record: numbers of bytes per class and per tensor, and their summary."""
    per_class, parts = storage.get("per_class", {}), storage.get("parts", {})
    return (isinstance(per_class, dict) and isinstance(parts, dict)
            and all(map(_number, [*per_class.values(), *parts.values()]))
            and all(_number(storage.get(key) or 0) for key in ("mean_bytes_per_class", "image_equivalent",
                                                               "image_bytes"))
            and isinstance(storage.get("counted", []), list))


def _report_problem(report: dict) -> str | None:
    kinds = {"networks": dict, "results": dict, "storage": dict, "notes": list, "protocol": dict, "patches": dict,
             "versions": dict}
    for key, kind in kinds.items():
        if key in report and not isinstance(report[key], kind):
            return key
    for net, rows in report.get("networks", {}).items():
        if not isinstance(rows, dict):
            return f"networks.{net}"
        for name, row in rows.items():  # the rows the page draws; others are left alone
            drawn = _summary(row) and _summary(row.get("validation", _ZERO)) if name in ROW_NAMES else True
            if not (_scores(row) if name == "scores" else drawn):
                return f"networks.{net}.{name}"
    for name, tests in report.get("results", {}).items():
        if not isinstance(tests, dict) or not tests:
            return f"results.{name}"
        for test, metrics in tests.items():
            if not isinstance(metrics, dict) or not (_summary(metrics.get("psnr"))
                                                     and _summary(metrics.get("ssim", _ZERO))):
                return f"results.{name}.{test}"
    if not _storage_ok(report.get("storage", {})):
        return "storage"
    if not all(isinstance(note, str) for note in report.get("notes", [])):
        return "notes"
    return None
