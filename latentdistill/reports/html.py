"""``report.html``: one self-contained page about a run folder (or an ``evaluation-N/`` folder).

Everything is inline (images as ``data:`` URIs, charts as SVG drawn here, the CSS) and nothing runs or is
fetched, so the file can be mailed, archived or opened offline and shows the same. The page holds no time
of its own (only the files' modification time), so the same folder gives the same bytes. Each section
says what is absent instead of leaving a gap; a damaged file stops the report with a one-line error.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import yaml

from latentdistill.io import atomic_write_text, display_path
from latentdistill.reports.charts import loss_curve_svg, number
from latentdistill.reports.evaluation import accuracy_html, protocol_html, sr_html, storage_html, table_html
from latentdistill.reports.grids import png_grid_html, set_grid_html
from latentdistill.reports.ranking import ranking_html
from latentdistill.reports.read import EXPECTED, RunFiles, read_run_folder
from latentdistill.reports.style import CSS
from latentdistill.run_folder import RunFolder

REPORT_HTML = "report.html"


def write_html_report(folder: str | Path) -> Path:
    """Read the run (or evaluation) folder and write ``folder/report.html`` atomically; returns its path."""
    files = read_run_folder(folder)
    path = Path(folder) / REPORT_HTML
    atomic_write_text(path, render_page(files))
    return path


def render_page(files: RunFiles) -> str:
    """The whole page, from files already read: no I/O here."""
    if files.ranking and files.distilled is None and not files.log and files.report is None:
        # a rank-nets-N folder: its ranking, and what it ran with; the run's own sections live in the run's folder
        sections = [("Architecture ranking", ranking_html(files.ranking)), ("Resolved config", config_html(files)),
                    ("Package versions", versions_html(files))]
    else:
        sections = [
            ("Distilled set", sets_html(files)),
            ("Snapshots", snapshots_html(files)),
            ("Loss", loss_html(files)),
            ("Evaluation", evaluation_html(files)),
            *([("Architecture ranking", ranking_html(files.ranking))] if files.ranking else []),
            ("Storage per class", _storage_section(files)),
            ("Notes", notes_html(files)),
            ("Resolved config", config_html(files)),
            ("Package versions", versions_html(files)),
        ]
    body = "".join(f'<section id="{escape(title.lower().replace(" ", "-"))}"><h2>{escape(title)}</h2>'
                   f"{content}</section>" for title, content in sections)
    title = f"latentdistill report: {display_path(files.folder.resolve().name)}"
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
            f"{header_html(files, title)}{body}</main></body></html>\n")


def _absent(text: str) -> str:
    return f'<p class="absent">{escape(text)}</p>'


def _lookup(values: dict, dotted: str) -> object:
    for part in dotted.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


def _metadata(files: RunFiles) -> dict:
    return files.distilled.metadata if files.distilled is not None else {}


def _config(files: RunFiles) -> dict:
    """The resolved config: the one the set was distilled with when the folder holds it, else config.yaml."""
    return _metadata(files).get("config") or files.config


def _task(files: RunFiles) -> str | None:
    return _metadata(files).get("task") or (files.report or {}).get("task") or _config(files).get("task")


def _classes(files: RunFiles) -> list[str]:
    """Class names, to label a PNG grid's rows: the set's, else the report's storage (keyed by class)."""
    if _task(files) not in (None, "classification"):
        return []
    names = _metadata(files).get("classes") or list(_lookup(files.report or {}, "storage.per_class") or {})
    return [str(name) for name in names]


def _facts(files: RunFiles) -> list[tuple[str, object]]:
    """What the run was, each from the file that records it best (the set's metadata first)."""
    meta, config, report = _metadata(files), _config(files), files.report or {}
    dataset = meta.get("dataset") or report.get("dataset") or (Path(str(config["data"]["root"])).name
                                                               if _lookup(config, "data.root") else None)
    autoencoder = meta.get("autoencoder") or config.get("autoencoder") or {}
    ipc = meta.get("ipc", report.get("ipc", (files.ranking or {}).get("ipc")))
    if meta.get("storage_ipc"):
        images = "1 image" if meta["storage_ipc"] == 1 else f"{meta['storage_ipc']} images"
        ipc = f"{ipc} latents per class (the bytes of {images} per class)"
    facts = [
        ("dataset", ", ".join(map(str, dataset)) if isinstance(dataset, list) else dataset),
        ("task", _task(files)),
        ("IPC", ipc if _task(files) != "sr" else None),
        ("budget", f"{report['budget']:.1%} of the training patches" if _is_fraction(report.get("budget")) else None),
        ("objective", _lookup(config, "distill.objective")),
        ("prior", _lookup(meta, "prior.name") or _lookup(config, "prior.name")),
        ("autoencoder", _autoencoder_name(autoencoder)),
        ("date", f"{files.date[0]} ({files.date[1]} written)" if files.date else None),
        ("distill minutes", meta.get("distill_minutes")),
        ("iterations", meta.get("distill_iterations") or (files.log[-1][0] if files.log else None)),
        ("evaluation minutes", report.get("minutes")),
        ("distilled file", report.get("distilled_file")),
    ]
    always = ("dataset", "date") + (("IPC",) if _task(files) != "sr" else ())
    return [(name, value) for name, value in facts if value is not None or name in always]


def _is_fraction(value: object) -> bool:
    return isinstance(value, float) and 0 <= value <= 1


def _autoencoder_name(spec: dict) -> str | None:
    """``../weights/taef2 (taef2)``, ``stabilityai/sd-vae-ft-mse (diffusers)``, or ``pixels`` (none)."""
    name = spec.get("name_or_path") or ""
    kind = spec.get("variant") or spec.get("kind")
    kind = None if kind == "auto" else kind
    return f"{name} ({kind})" if name and kind else name or kind


def header_html(files: RunFiles, title: str) -> str:
    unknown = '<span class="absent">not recorded</span>'
    items = "".join(f'<div{" class=wide" if len(str(value)) > 28 else ""}><dt>{escape(name)}</dt>'
                    f"<dd>{unknown if value is None else escape(str(value))}</dd></div>"
                    for name, value in _facts(files))
    absent = [name for name in EXPECTED if name not in files.present]
    missing = f'<p class="muted">absent from this folder: {escape(", ".join(absent))}</p>' if absent else ""
    return (f"<header><h1>{escape(title)}</h1><p class=\"muted\">{escape(display_path(files.folder.resolve()))}</p>"
            f'<dl class="facts">{items}</dl>{missing}</header>')


def sets_html(files: RunFiles) -> str:
    """The starting set (``grid_start.png``) beside the final one (drawn from ``distilled.safetensors``)."""
    classes = _classes(files)
    start = (png_grid_html(files.start_png, "starting set", classes) if files.start_png is not None
             else _absent(f"starting set: no {RunFolder.START_GRID} in this folder"))
    iterations = _metadata(files).get("distill_iterations")
    caption = "final set" + (f" (iteration {iterations})" if iterations else "")
    if files.distilled is not None and (files.distilled.images is not None or files.grid_png is None):
        final = set_grid_html(files.distilled, caption)
    elif files.grid_png is not None:
        final = png_grid_html(files.grid_png, f"{caption} (grid.png)", classes)
    else:
        final = _absent("final set: no distilled.safetensors or grid.png in this folder")
    return f'<div class="gallery">{start}{final}</div>'


def snapshots_html(files: RunFiles) -> str:
    """Every snapshot in iteration order: its PNG, or a grid drawn from its set when it has none."""
    if not files.snapshots:
        return _absent("no snapshots in this folder (snapshots/iteration-NNNNNN.*, written every "
                       "distill.snapshot_every iterations)")
    classes = _classes(files)
    figures = [png_grid_html(s.png, f"iteration {s.iteration}", classes) if s.png is not None
               else set_grid_html(s.distilled, f"iteration {s.iteration}") for s in files.snapshots]
    return f'<div class="gallery">{"".join(figures)}</div>'


def loss_html(files: RunFiles) -> str:
    if not files.log:
        return _absent("no distill_log.jsonl in this folder" if "distill_log.jsonl" not in files.present
                       else "distill_log.jsonl holds no iteration yet")
    (first_iteration, first), (last_iteration, last) = files.log[0], files.log[-1]
    best_iteration, best = min(files.log, key=lambda point: point[1])
    summary = (f"{len(files.log)} iterations ({first_iteration} to {last_iteration}): loss {number(first)} at the "
               f"start, {number(last)} at the end, lowest {number(best)} at iteration {best_iteration}")
    skipped = (f'<p class="muted">{files.log_skipped} line(s) of distill_log.jsonl skipped (cut short by a kill, '
               f"or a non-finite loss)</p>" if files.log_skipped else "")
    return f'<div class="chart-box">{loss_curve_svg(files.log, width=1080)}</div><p>{escape(summary)}</p>{skipped}'


def evaluation_html(files: RunFiles) -> str:
    report = files.report
    if report is None:
        return _absent("no report.json in this folder: the set has not been evaluated here (latentdistill evaluate)")
    if report.get("networks"):
        content = accuracy_html(report)
    elif report.get("results"):
        content = sr_html(report)
    else:
        content = _absent("report.json holds no results")
    return content + (protocol_html(report["protocol"]) if report.get("protocol") else "")


def _storage_section(files: RunFiles) -> str:
    storage = (files.report or {}).get("storage") or files.storage
    return storage_html(storage) if storage else _absent("no report.json or distilled.safetensors to measure")


def notes_html(files: RunFiles) -> str:
    notes = (files.report or {}).get("notes", [])
    if files.report is None:
        return _absent("no report.json in this folder")
    if not notes:
        return '<p class="muted">none</p>'
    return "<ul>" + "".join(f"<li>{escape(note)}</li>" for note in notes) + "</ul>"


def config_html(files: RunFiles) -> str:
    if files.config_text is not None:
        return f"<pre>{escape(files.config_text)}</pre>"
    saved = _metadata(files).get("config")
    if saved:
        return ('<p class="muted">no config.yaml in this folder; the config saved in distilled.safetensors:</p>'
                f"<pre>{escape(yaml.safe_dump(saved, sort_keys=False))}</pre>")
    return _absent("no config.yaml in this folder")


def versions_html(files: RunFiles) -> str:
    versions = _metadata(files).get("versions") or (files.report or {}).get("versions")
    if not versions:
        return _absent("no package versions recorded (they are in distilled.safetensors' metadata)")
    return table_html(["package", "version"], [[str(k), str(v)] for k, v in versions.items()], "compact")
