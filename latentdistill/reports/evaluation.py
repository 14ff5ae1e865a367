"""The evaluation's part of the page, from ``report.json``: accuracy (classification) or PSNR (super-resolution)
bars beside their baselines, the numbers as a table, the scores, the protocol, and the storage per class."""

from __future__ import annotations

import math
from html import escape

from latentdistill.evaluate.classification import ROW_NAMES
from latentdistill.reports.charts import bar_chart_svg, legend_html


def table_html(header: list[str], rows: list[list[str]], css: str = "") -> str:
    """A plain table; every cell is escaped here."""
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _mean_std(summary: dict, digits: int = 2) -> str:
    return f"{summary['mean']:.{digits}f} ± {summary.get('std', 0.0):.{digits}f}"


def accuracy_html(report: dict) -> str:
    """Test accuracy of each network trained on each set (mean ± std over runs), as bars and as a table."""
    networks = report["networks"]
    keys = [key for key in ROW_NAMES if any(key in row for row in networks.values())]
    if not keys:
        return '<p class="absent">report.json holds no accuracy rows</p>'
    ipc, real_ipc = report.get("ipc"), report.get("random_real_ipc", report.get("ipc"))
    names = {key: ROW_NAMES[key] + (f" (IPC {real_ipc})" if key.startswith("random_real") and real_ipc != ipc else "")
             for key in keys}
    values = {(net, key): (row[key]["mean"], row[key].get("std", 0.0))
              for net, row in networks.items() for key in keys if key in row}
    top = max(mean + std for mean, std in values.values())
    high = min(100.0, max(10.0, math.ceil((top + 3) / 10) * 10))
    series = [(key, names[key]) for key in keys]
    chart = bar_chart_svg(list(networks), series, values, 0.0, high, "test accuracy (%)")
    rows = []
    for net, row in networks.items():
        for key in keys:
            if key in row:
                validation = _mean_std(row[key]["validation"]) if "validation" in row[key] else ""
                runs = str(len(row[key].get("runs", [])) or "")
                rows.append([net, names[key], _mean_std(row[key]), validation, runs])
    table = table_html(["network", "trained on", "test accuracy (%)", "validation accuracy (%)", "runs"], rows)
    return (f'<div class="side-by-side"><div class="chart-box">{chart}{legend_html(series)}</div>'
            f"<div>{table}{_scores_html(networks)}</div></div>")


def _scores_html(networks: dict) -> str:
    """DD-Ranking's label-robust (LRS) and augmentation-robust (ARS) scores, where they were measured."""
    rows = [[net, name.replace("_", "-"), f"{values['score']:.3f}"]
            for net, row in networks.items() for name, values in row.get("scores", {}).items()]
    return table_html(["network", "DD-Ranking score", "value"], rows) if rows else ""


def sr_html(report: dict) -> str:
    """PSNR of the SR network trained on each set, per test set (mean ± std over runs), as bars and a table."""
    results, patches = report["results"], report.get("patches", {})
    tests = list(dict.fromkeys(test for per_test in results.values() for test in per_test))
    labels = report.get("labels") if isinstance(report.get("labels"), dict) else {}
    names = {name: str(labels.get(name, name)) + (f" ({patches[name]} patches)" if name in patches else "") for name in results}
    values = {(test, name): (per_test[test]["psnr"]["mean"], per_test[test]["psnr"].get("std", 0.0))
              for name, per_test in results.items() for test in per_test}
    low = math.floor(min(mean - std for mean, std in values.values())) - 1
    high = math.ceil(max(mean + std for mean, std in values.values())) + 1
    series = [(name, names[name]) for name in results]
    chart = bar_chart_svg(tests, series, values, low, high, "PSNR (dB, Y)", digits=2)
    rows = []
    for name, per_test in results.items():
        cells = [names[name]]
        for test in tests:
            metrics = per_test.get(test)
            ssim = metrics.get("ssim") if metrics else None
            cells.append("" if metrics is None else _mean_std(metrics["psnr"]) + (
                f" / {ssim['mean']:.4f}" if isinstance(ssim, dict) and "mean" in ssim else ""))
        rows.append(cells)
    header = [f"x{report.get('scale', '?')} {report.get('net', '')}".strip()]
    header += [f"{test}: PSNR / SSIM" for test in tests]
    axis = f'<p class="muted">The PSNR axis starts at {low} dB, not 0.</p>'
    protocol = report.get("protocol") if isinstance(report.get("protocol"), dict) else {}
    named = (f"<p><strong>{escape(str(protocol.get('name', 'unnamed')))} protocol</strong>"
             + (f": {escape(str(protocol['note']))}" if protocol.get("note") else "") + "</p>")
    return (f'{named}<div class="side-by-side"><div class="chart-box">{chart}{legend_html(series)}{axis}</div>'
            f"<div>{table_html(header, rows)}</div></div>")


def protocol_html(protocol: dict) -> str:
    """How every network of the evaluation was trained, folded away: the rows are compared under it."""
    rows = [[str(key), "" if value is None else str(value)] for key, value in protocol.items()]
    return f"<details><summary>protocol</summary>{table_html(['key', 'value'], rows, 'compact')}</details>"


def storage_html(storage: dict) -> str:
    """Bytes stored per class, what they are made of, and how many uint8 images of the set's size they equal."""
    per_class = storage.get("per_class", {})
    mean, image_bytes = storage.get("mean_bytes_per_class"), storage.get("image_bytes")
    lines = []
    if mean is not None:
        counted = ", ".join(str(name) for name in storage.get("counted", []))
        sentence = f"{mean:.0f} bytes per class" + (f" ({counted})" if counted else "")
        if image_bytes:
            sentence += (f" = {storage.get('image_equivalent', mean / image_bytes):.2f} uint8 images of "
                         f"{image_bytes} bytes")
        lines.append(f"<p><strong>{escape(sentence)}</strong></p>")
    if storage.get("not_counted"):
        lines.append(f'<p class="muted">not counted: {escape(str(storage["not_counted"]))}</p>')
    parts = storage.get("parts", {})
    if isinstance(parts, dict) and parts:
        rows = [[str(name), f"{value:g}"] for name, value in parts.items()]
        lines.append(table_html(["tensor", "bytes per class"], rows, "compact"))
    if per_class and len(set(per_class.values())) == 1:
        lines.append(f"<p>every one of the {len(per_class)} classes: {next(iter(per_class.values())):g} bytes</p>")
    elif per_class:
        items = "".join(f"<li>{escape(str(name))}: {value:g}</li>" for name, value in per_class.items())
        lines.append(f'<ul class="columns">{items}</ul>')
    return "".join(lines)
