"""Image grids for the page: one PNG per set, embedded as a data URI, with the class names beside its rows.

The grid is drawn here from the set's images (not read from ``grid.png``) so that the rows are known and
can be labelled in HTML, where the text stays sharp and searchable. Tiny images are enlarged with nearest
neighbour, so what is shown is each pixel the set holds, not a smoothed guess.
"""

from __future__ import annotations

import base64
import io
from html import escape

import torch
from PIL import Image

from latentdistill.export import DistilledSet

MAX_PER_ROW = 10  # images shown per class
MAX_ROWS = 100  # classes shown
SAMPLE = 64  # patches shown of a set without classes (super-resolution), in rows of 8
BORDER = 2  # pixels between images, as in export.save_grid


def upscale_for(size: int, rows: int = 1) -> int:
    """x3 for 32 px images and smaller, x2 up to 64 px, else as they are; at most x2 beyond 20 rows, so that a
    page of many classes stays a few megabytes."""
    scale = 3 if size <= 32 else 2 if size <= 64 else 1
    return min(scale, 2) if rows > 20 else scale


def grid_rows(distilled: DistilledSet) -> tuple[list[tuple[str, list[int]]], str]:
    """(row label, image indices) per row, and a sentence saying what was left out (or "").

    Classification: one row per class, labelled with its name. Other tasks (SR's pseudo-classes): a sample
    of the set in rows of 8, unlabelled."""
    labels, total = distilled.labels, len(distilled.labels)
    if distilled.metadata.get("task") != "classification":
        shown = list(range(min(SAMPLE, total)))
        rows = [("", shown[start : start + 8]) for start in range(0, len(shown), 8)]
        return rows, f"the first {len(shown)} of {total} images" if len(shown) < total else ""
    rows = []
    for index, name in enumerate(distilled.classes):
        members = torch.nonzero(labels == index).flatten().tolist()
        if members:
            rows.append((name, members[:MAX_PER_ROW]))
    widest = int(torch.bincount(labels).max())
    left_out = []
    if widest > MAX_PER_ROW:
        left_out.append(f"{MAX_PER_ROW} of up to {widest} images per class")
    if len(rows) > MAX_ROWS:
        left_out.append(f"the first {MAX_ROWS} of {len(rows)} classes")
    return rows[:MAX_ROWS], ", ".join(left_out)


def grid_png(images: torch.Tensor, rows: list[list[int]], scale: int) -> bytes:
    """uint8 (N, 3, H, W) images placed row by row on white, each enlarged ``scale`` times."""
    height, width = images.shape[-2:]
    columns = max(len(row) for row in rows)
    canvas = torch.full((3, len(rows) * (height + BORDER), columns * (width + BORDER)), 255, dtype=torch.uint8)
    for r, row in enumerate(rows):
        for c, index in enumerate(row):
            top, left = r * (height + BORDER) + BORDER // 2, c * (width + BORDER) + BORDER // 2
            canvas[:, top : top + height, left : left + width] = images[index]
    picture = Image.fromarray(canvas.permute(1, 2, 0).contiguous().numpy())
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(png)) as image:
        return image.size


def image_html(png: bytes, alt: str) -> str:
    """An ``<img>`` holding the PNG itself, with its size, so the page lays out before it decodes."""
    width, height = png_size(png)
    data = base64.b64encode(png).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" '
            f'alt="{escape(alt)}">')


def labelled_grid_html(png: bytes, caption: str, row_labels: list[str], note: str = "") -> str:
    """A figure: the grid, its row labels beside it (one per equal-height row), a caption and a note."""
    labels = ""
    if any(row_labels):
        items = "".join(f"<li>{escape(label)}</li>" for label in row_labels)
        labels = f'<ol class="row-labels">{items}</ol>'
    note_html = f'<p class="muted">showing {escape(note)}</p>' if note else ""
    return (f'<figure class="grid"><figcaption>{escape(caption)}</figcaption>'
            f'<div class="grid-body">{labels}{image_html(png, caption)}</div>{note_html}</figure>')


def set_grid_html(distilled: DistilledSet, caption: str) -> str:
    """The grid of a set's decoded images, rows labelled by class; a set without images says so."""
    if distilled.images is None:
        return f'<p class="absent">{escape(caption)}: the file holds no decoded images</p>'
    rows, note = grid_rows(distilled)
    scale = upscale_for(distilled.images.shape[-1], len(rows))
    png = grid_png(distilled.images, [indices for _, indices in rows], scale)
    return labelled_grid_html(png, caption, [label for label, _ in rows], note)


def png_grid_html(png: bytes, caption: str, classes: list[str]) -> str:
    """A grid PNG written by the run (``export.save_grid``: one equal-height row per class, classes in order);
    the rows are labelled only when the picture divides into exactly that many rows."""
    _, height = png_size(png)
    labels = classes if classes and height % len(classes) == 0 else []
    return labelled_grid_html(png, caption, labels)
