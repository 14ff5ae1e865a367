"""``latentdistill compare``: several runs' evaluations side by side, as one markdown or CSV table.

A run is found from its folder (``report.json`` and ``config.yaml``, the distilled file the report names) or
from a ``report.json`` itself; the row takes what the run was (dataset, IPC, objective, prior, autoencoder,
storage) from its config and file, and what it scored from its report.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import yaml
from safetensors import SafetensorError, safe_open

from latentdistill.errors import LatentDistillError
from latentdistill.io import read_json_object

# Columns per network: the report's row name, and the column's title.
SET_COLUMNS = (("distilled", "distilled"), ("distilled_soft", "distilled soft"), ("random_real", "random"),
               ("full", "full"))


def compare_runs(paths: list[str | Path]) -> list[dict]:
    """One flat record per run (column title -> value), in the order given."""
    if not paths:
        raise LatentDistillError("compare needs at least one run folder or report.json")
    return [_record(Path(path)) for path in paths]


def _report_path(path: Path) -> Path:
    report = path / "report.json" if path.is_dir() else path
    if not report.is_file():
        raise LatentDistillError(f"{path}: no report.json (evaluate the run first: latentdistill evaluate FILE)")
    return report


def _file_metadata(report: dict) -> dict:
    """The distilled file's metadata (config, distill minutes), when the file is still where the report says."""
    file = Path(report.get("distilled_file", ""))
    if not file.is_file():
        return {}
    try:
        with safe_open(file, framework="pt") as handle:
            return {key: json.loads(value) for key, value in (handle.metadata() or {}).items()}
    except (SafetensorError, OSError, ValueError):
        return {}


def _record(path: Path) -> dict:
    report_path = _report_path(path)
    report = read_json_object(report_path, "report")
    if report.get("task") == "sr":
        return _sr_record(path, report_path, report)
    if "networks" not in report:
        raise LatentDistillError(f"{report_path} is neither a classification nor an SR report")
    source = report.get("set") if isinstance(report.get("set"), dict) else None  # a set another method made
    metadata = {} if source else _file_metadata(report)
    # what the set was: its own distillation's config (in the file, or beside a run's report), never the
    # config an evaluation of another method's set happened to run with
    config = {} if source else (metadata.get("config") or _config_beside(report_path))
    config = config if isinstance(config, dict) else {}
    distill, prior, autoencoder = (_section(config, key) for key in ("distill", "prior", "autoencoder"))
    storage = report.get("storage") if isinstance(report.get("storage"), dict) else {}
    record = {
        "run": str(path), "dataset": report.get("dataset", ""), "IPC": report.get("ipc", ""),
        "objective": f"({source.get('format', 'other')} set)" if source else distill.get("objective", ""),
        "prior": prior.get("name", ""), "parameterisation": _parameterisation(autoencoder, distill),
        "storage (img/class)": storage.get("image_equivalent", ""),
        "random IPC": report.get("random_real_ipc", report.get("ipc", "")),
    }
    if not isinstance(report["networks"], dict):
        raise LatentDistillError(f"{report_path} is not a classification report ('networks' is not an object)")
    for net, rows in report["networks"].items():
        if not isinstance(rows, dict):
            continue
        for key, title in SET_COLUMNS:
            if key in rows:
                record[f"{net} {title}"] = _mean_std(rows[key], report_path)
        scores = rows.get("scores") if isinstance(rows.get("scores"), dict) else {}
        for name, short in (("label_robust", "LRS"), ("augmentation_robust", "ARS")):
            if isinstance(scores.get(name), dict) and _is_number(scores[name].get("score")):
                record[f"{net} {short}"] = f"{scores[name]['score']:.3f}"
    record["distill min"] = metadata.get("distill_minutes", "")
    record["eval min"] = report.get("minutes", "")
    return record


def _sr_record(path: Path, report_path: Path, report: dict) -> dict:
    """An SR run: its protocol (by name: PSNRs under different protocols do not compare), its set's row
    (distilled, or the pool it was drawn from) and every baseline's PSNR, per test set."""
    results = report.get("results")
    if not isinstance(results, dict) or not results:
        raise LatentDistillError(f"{report_path} is an SR report without results")
    protocol = report.get("protocol") if isinstance(report.get("protocol"), dict) else {}
    labels = report.get("labels") if isinstance(report.get("labels"), dict) else {}
    own = next((row for row in results if row not in ("full", "random", "pruned", "bicubic")), None)
    budget = report.get("budget")
    record = {"run": str(path), "task": f"sr x{report.get('scale', '?')} {report.get('net', '')}".strip(),
              "protocol": protocol.get("name", "unnamed"), "budget": f"{budget:.2%}" if _is_number(budget) else "",
              "set": labels.get(own, own or "")}
    for row in ([own] if own else []) + ["random", "pruned", "full", "bicubic"]:
        per_test = results.get(row)
        for test, metrics in (per_test.items() if isinstance(per_test, dict) else ()):
            title = "set" if row == own else row
            record[f"{test} {title}"] = _mean_std(metrics.get("psnr") if isinstance(metrics, dict) else None, report_path)
    record["eval min"] = report.get("minutes", "")
    return record


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _mean_std(summary: object, path: Path) -> str:
    if not isinstance(summary, dict) or not _is_number(summary.get("mean")) or not _is_number(summary.get("std")):
        raise LatentDistillError(f"{path}: a row without a numeric mean and std (not a report latentdistill wrote)")
    return f"{summary['mean']:.2f} ± {summary['std']:.2f}"


def _section(config: dict, key: str) -> dict:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def _config_beside(report_path: Path) -> dict:
    path = report_path.parent / "config.yaml"
    if not path.is_file():
        return {}
    try:
        value = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise LatentDistillError(f"{path} is not readable YAML ({str(error).splitlines()[0]})") from None
    return value if isinstance(value, dict) else {}


def _parameterisation(autoencoder: dict, distill: dict) -> str:
    """What the set optimises: latents of an autoencoder (and at which storage budget), or pixels."""
    if not autoencoder:
        return ""
    kind = autoencoder.get("kind", "")
    text = "pixels" if kind == "pixels" else f"latents ({Path(str(autoencoder.get('name_or_path', ''))).name or kind})"
    if distill.get("storage_ipc"):
        text += f", fp16 at {distill['storage_ipc']} img/class of bytes"
    return text


def _columns(records: list[dict]) -> list[str]:
    columns: list[str] = []
    for record in records:
        columns += [key for key in record if key not in columns]
    return columns


def markdown(records: list[dict]) -> str:
    columns = _columns(records)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(record.get(column, "")) for column in columns) + " |" for record in records]
    return "\n".join(lines)


def csv_text(records: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(records), restval="")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()
