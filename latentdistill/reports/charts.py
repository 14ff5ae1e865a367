"""Inline SVG charts: the loss curve and bars with error bars, drawn as text so the page needs no script,
no library and no network, and prints the same everywhere."""

from __future__ import annotations

import math
from html import escape

# One colour per kind of training set, the same in every chart: distilled blues, random real greys, full green.
COLOURS = {"distilled": "#2563eb", "distilled_soft": "#7c3aed", "distilled_no_augment": "#93c5fd",
           "random_real": "#9ca3af", "random_real_soft": "#6b7280", "random_real_no_augment": "#d1d5db",
           "full": "#16a34a", "random": "#9ca3af", "pruned": "#f59e0b", "bicubic": "#d1d5db"}
OTHER_COLOURS = ("#0891b2", "#db2777", "#65a30d", "#ea580c")
MAX_POINTS = 1500  # a longer log is thinned evenly (its last point kept): the polyline stays light


def number(value: float) -> str:
    """Four significant digits, no exponent for everyday magnitudes."""
    return f"{value:.4g}"


def colour(key: str, index: int) -> str:
    return COLOURS.get(key, OTHER_COLOURS[index % len(OTHER_COLOURS)])


def _text(x: float, y: float, content: str, anchor: str = "middle", css: str = "tick", turned: bool = False) -> str:
    turn = f' transform="rotate(-90 {x:.1f} {y:.1f})"' if turned else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="{css}"{turn}>{escape(content)}</text>'


def _line(x1: float, y1: float, x2: float, y2: float, css: str) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" class="{css}"/>'


def thinned(points: list[tuple[float, float]], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    if len(points) <= limit:
        return points
    step = math.ceil(len(points) / limit)
    return points[::step] + ([points[-1]] if (len(points) - 1) % step else [])


def moving_average(points: list[tuple[float, float]], window: int) -> list[tuple[float, float]]:
    """The mean of the last ``window`` values at each point: the trend under a noisy loss."""
    averaged, total = [], 0.0
    for index, (x, y) in enumerate(points):
        total += y - (points[index - window][1] if index >= window else 0.0)
        averaged.append((x, total / min(index + 1, window)))
    return averaged


def use_log_scale(values: list[float]) -> bool:
    """Log scale when the values span more than two decades (and are all positive)."""
    return min(values) > 0 and max(values) / min(values) > 100


def loss_curve_svg(points: list[tuple[int, float]], width: int = 760, height: int = 280) -> str:
    """The loss by iteration (and its moving average), with min/max ticks on both axes; log y over >2 decades."""
    left, right, top, bottom = 70, 16, 14, 44
    xs, ys = [float(x) for x, _ in points], [y for _, y in points]
    log = use_log_scale(ys)
    scale_y = math.log10 if log else (lambda v: v)
    x_low, x_high = min(xs), (max(xs) if max(xs) > min(xs) else min(xs) + 1)
    y_low, y_high = scale_y(min(ys)), scale_y(max(ys))
    y_high = y_high if y_high > y_low else y_low + 1
    base, axis_middle = height - bottom, (top + height - bottom) / 2

    def place(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_low) / (x_high - x_low) * (width - left - right),
                top + (y_high - scale_y(y)) / (y_high - y_low) * (base - top))

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="loss by iteration">']
    ends = [place(x_low, value)[1] for value in (min(ys), max(ys))]
    decades = [10.0 ** k for k in range(math.ceil(y_low), math.floor(y_high) + 1)] if log else []
    decades = [d for d in decades if all(abs(place(x_low, d)[1] - end) > 14 for end in ends)]  # labels must not overlap
    for value in sorted({min(ys), max(ys), *decades}):
        y = place(x_low, value)[1]
        parts += [_line(left, y, width - right, y, "grid"), _text(left - 6, y + 4, number(value), "end")]
    for value in sorted({min(xs), max(xs)}):
        x = place(value, min(ys))[0]
        parts += [_line(x, base, x, base + 5, "axis"), _text(x, base + 18, f"{value:.0f}")]
    parts += [_line(left, top, left, base, "axis"), _line(left, base, width - right, base, "axis"),
              _text((left + width - right) / 2, height - 6, "iteration", css="label"),
              _text(14, axis_middle, "loss" + (" (log scale)" if log else ""), css="label", turned=True)]
    series = list(zip(xs, ys))
    lines = [("loss", thinned(series))]
    if len(points) >= 50:  # a noisy loss: the raw values faint, their moving average on top
        trend = moving_average(series, max(5, len(series) // 30))
        lines = [("loss raw", thinned(series)), ("loss trend", thinned(trend))]
    for css, line in lines:
        coordinates = " ".join(f"{x:.1f},{y:.1f}" for x, y in (place(*point) for point in line))
        parts.append(f'<polyline class="{css}" points="{coordinates}"/>')
    if len(points) == 1:
        x, y = place(xs[0], ys[0])
        parts.append(f'<circle class="loss-dot" cx="{x:.1f}" cy="{y:.1f}" r="3"/>')
    return "".join(parts) + "</svg>"


def nice_step(span: float, ticks: int = 5) -> float:
    """A tick step of 1, 2 or 5 times a power of ten giving about ``ticks`` intervals over ``span``."""
    raw = span / ticks if span > 0 else 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _error_bar(centre: float, high_end: float, low_end: float) -> list[str]:
    return [_line(centre, high_end, centre, low_end, "error"),
            _line(centre - 6, high_end, centre + 6, high_end, "error"),
            _line(centre - 6, low_end, centre + 6, low_end, "error")]


def bar_chart_svg(groups: list[str], series: list[tuple[str, str]], values: dict[tuple[str, str], tuple[float, float]],
                  low: float, high: float, unit: str, digits: int = 1) -> str:
    """Bars of mean value with ± std error bars: one cluster per group (a network, a test set), one colour
    per series (a kind of training set) in the order given, with the value over each bar.

    ``values[(group, series key)] = (mean, std)``; a missing pair leaves no bar. The y axis runs from
    ``low`` to ``high`` (``unit`` names it)."""
    bar, gap, cluster_gap, left, top, bottom, height = 34, 6, 40, 58, 16, 34, 300
    colours, names = {key: colour(key, i) for i, (key, _) in enumerate(series)}, dict(series)
    widths = [sum(1 for key, _ in series if (group, key) in values) * (bar + gap) for group in groups]
    width = left + sum(widths) + cluster_gap * len(groups) + 10

    def y_of(value: float) -> float:
        return top + (high - min(max(value, low), high)) / (high - low) * (height - top - bottom)

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(unit)} by training set">']
    step = nice_step(high - low)
    for tick in (math.ceil(low / step) * step + i * step for i in range(int((high - low) / step) + 2)):
        if tick <= high + 1e-9:
            parts += [_line(left, y_of(tick), width - 10, y_of(tick), "grid"),
                      _text(left - 6, y_of(tick) + 4, f"{tick:g}", "end")]
    parts.append(_text(16, (top + height - bottom) / 2, unit, css="label", turned=True))
    x = left + cluster_gap / 2
    for group, group_width in zip(groups, widths):
        for key in (key for key, _ in series if (group, key) in values):
            mean, std = values[(group, key)]
            tip = f"{group}, {names[key]}: {mean:.{digits}f} ± {std:.{digits}f}"
            parts.append(f'<rect x="{x:.1f}" y="{y_of(mean):.1f}" width="{bar}" height="{y_of(low) - y_of(mean):.1f}" '
                         f'fill="{colours[key]}"><title>{escape(tip)}</title></rect>')
            parts += _error_bar(x + bar / 2, y_of(mean + std), y_of(mean - std)) if std > 0 else []
            parts.append(_text(x + bar / 2, y_of(mean + std) - 5, f"{mean:.{digits}f}", css="value"))
            x += bar + gap
        parts.append(_text(x - group_width / 2 - gap / 2, height - bottom + 20, group, css="label"))
        x += cluster_gap
    parts.append(_line(left, y_of(low), width - 10, y_of(low), "axis"))
    return "".join(parts) + "</svg>"


def legend_html(series: list[tuple[str, str]]) -> str:
    """The colour key of ``bar_chart_svg``'s series, as HTML beneath the chart."""
    items = "".join(f'<li><span class="swatch" style="background:{colour(key, i)}"></span>'
                    f"{escape(label)}</li>" for i, (key, label) in enumerate(series))
    return f'<ul class="legend">{items}</ul>'
