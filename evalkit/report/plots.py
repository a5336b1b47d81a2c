"""Figures for the report, written directly as inline SVG (text kept as text, no external assets, no plotting library).

Four kinds: dots with CI bars (one row per score, one colour per run), per-run histograms on a shared axis, a
persona x item heatmap coloured by how good each score is, and a forest plot of contrasts. Drawing them directly keeps
a report build to milliseconds per figure (matplotlib took ~0.2 s each, most of a comparison's report) and the
page free of any import beyond the standard library and numpy.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

PALETTE = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16"]
FONT = 11  # px
CHAR = 0.58 * FONT  # average glyph width, for laying out labels
WIDTH = 760
_GRID, _AXIS, _TEXT, _MUTED = "#e2e8f0", "#a0aec0", "#1a202c", "#4a5568"


def _text(x: float, y: float, text: str, *, anchor: str = "start", size: int = FONT, fill: str = _TEXT, weight: str = "",
          rotate: float | None = None) -> str:
    transform = f' transform="rotate({rotate:g} {x:.1f} {y:.1f})"' if rotate else ""
    bold = f' font-weight="{weight}"' if weight else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" text-anchor="{anchor}"{bold}{transform}>'
            f"{escape(str(text))}</text>")


def _svg(width: float, height: float, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="DejaVu Sans, Arial, sans-serif">'
            f"<title>{escape(title)}</title>" + "".join(body) + "</svg>")


def _ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round-number ticks covering [low, high]."""
    span = high - low
    if not math.isfinite(span) or span <= 0:
        return [low]
    raw = span / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step + 1e-9) + 1)]


def _fit(label: str, room: float, size: int = FONT) -> str:
    """The label, cut with an ellipsis to fit `room` pixels (the full text stays in the figure's own title)."""
    most = max(int(room / (0.58 * size)), 4)
    return label if len(label) <= most else label[: most - 1] + "…"


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-9 else "0"


def _range(values: list[float], fixed: tuple[float, float] | None) -> tuple[float, float]:
    if fixed:
        return float(fixed[0]), float(fixed[1])
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    pad = (high - low) * 0.08 or max(abs(high), 1.0) * 0.1
    return low - pad, high + pad


def _axis(x0: float, x1: float, top: float, bottom: float, low: float, high: float, *, label: str = "") -> tuple[list[str], callable]:
    """Vertical grid lines with tick labels under the plot; returns the elements and the value -> x mapping."""
    def scale(v: float) -> float:
        return x0 + (min(max(v, low), high) - low) / (high - low) * (x1 - x0) if high > low else (x0 + x1) / 2

    body = []
    for tick in _ticks(low, high):
        x = scale(tick)
        body.append(f'<line x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{bottom:.1f}" stroke="{_GRID}"/>')
        body.append(_text(x, bottom + 14, _label(tick), anchor="middle", size=FONT - 1, fill=_MUTED))
    body.append(f'<line x1="{x0:.1f}" y1="{bottom:.1f}" x2="{x1:.1f}" y2="{bottom:.1f}" stroke="{_AXIS}"/>')
    if label:
        body.append(_text((x0 + x1) / 2, bottom + 30, label, anchor="middle", size=FONT - 1, fill=_MUTED))
    return body, scale


def dot_ci(labels: list[str], series: dict[str, list[tuple[float | None, float | None, float | None]]],
           value_range: tuple[float, float] | None = None, title: str = "") -> str:
    """Horizontal dots with CI bars; one row per label, one colour per run."""
    row = 22
    left = min(max(len(label) for label in labels) * CHAR + 16, 360) if labels else 40
    labels = [_fit(label, left - 12) for label in labels]
    top, x1 = 30, WIDTH - 20
    height = top + row * len(labels) + (44 if len(series) > 1 else 26)
    low, high = _range([v for points in series.values() for p in points for v in p if v is not None], value_range)
    bottom = top + row * len(labels)
    body, scale = _axis(left, x1, top, bottom, low, high)
    body.insert(0, _text(4, 16, title, weight="bold"))
    for i, label in enumerate(labels):
        body.append(_text(left - 8, top + row * i + row / 2 + 4, label, anchor="end"))
    offsets = np.linspace(-5, 5, len(series)) if len(series) > 1 else [0.0]
    for (name, points), offset, colour in zip(series.items(), offsets, PALETTE * 10, strict=False):
        for i, (mean, ci_low, ci_high) in enumerate(points):
            if mean is None:
                continue
            y = top + row * i + row / 2 + offset
            if ci_low is not None and ci_high is not None:
                body.append(f'<line x1="{scale(ci_low):.1f}" y1="{y:.1f}" x2="{scale(ci_high):.1f}" y2="{y:.1f}" '
                            f'stroke="{colour}" stroke-width="1.6"/>')
            body.append(f'<circle cx="{scale(mean):.1f}" cy="{y:.1f}" r="3.2" fill="{colour}"><title>{escape(name)}: '
                        f'{mean:.2f}</title></circle>')
    if len(series) > 1:
        x, y = left, bottom + 34
        for name, colour in zip(series, PALETTE * 10, strict=False):
            body.append(f'<circle cx="{x + 4:.1f}" cy="{y - 4:.1f}" r="4" fill="{colour}"/>')
            body.append(_text(x + 12, y, name, size=FONT - 1))
            x += 24 + len(name) * CHAR
    return _svg(WIDTH, height, title, body)


def histograms(values: dict[str, list[float]], value_range: tuple[float, float], title: str) -> str:
    """One small histogram per run on a shared axis (several runs overlaid would hide each other)."""
    panel, gap, left, top, x1 = 70, 10, 50, 28, WIDTH - 20
    edges = np.linspace(value_range[0], value_range[1], 25)
    height = top + len(values) * (panel + gap) + 24
    body = [_text(4, 16, title, weight="bold")]
    scale = None
    for k, ((name, data), colour) in enumerate(zip(values.items(), PALETTE * 10, strict=False)):
        y0 = top + k * (panel + gap)
        counts = np.histogram(np.clip(np.asarray(data, float), edges[0], edges[-1]), bins=edges)[0] if len(data) else np.zeros(24)
        tallest = max(int(counts.max()), 1)
        axis, scale = _axis(left, x1, y0, y0 + panel, edges[0], edges[-1])
        body += axis if k == len(values) - 1 else [e for e in axis if e.startswith("<line")]
        for count, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
            if count:
                h = count / tallest * (panel - 14)
                body.append(f'<rect x="{scale(a) + 0.5:.1f}" y="{y0 + panel - h:.1f}" width="{max(scale(b) - scale(a) - 1, 1):.1f}" '
                            f'height="{h:.1f}" fill="{colour}"><title>{int(count)} sessions</title></rect>')
        body.append(_text(left + 4, y0 + 12, f"{name} (n = {len(data)})", size=FONT - 1))
        body.append(_text(left - 6, y0 + 12, str(tallest), anchor="end", size=FONT - 2, fill=_MUTED))
    body.append(_text(12, top + len(values) * (panel + gap) / 2, "sessions", anchor="middle", size=FONT - 1, fill=_MUTED,
                      rotate=-90))
    return _svg(WIDTH, height, title, body)


def _goodness_colour(value: float) -> str:
    """Red (worse) through yellow to green (better), as ColorBrewer's RdYlGn end and middle colours."""
    stops = [(0.0, (215, 48, 39)), (0.5, (255, 255, 191)), (1.0, (26, 152, 80))]
    value = min(max(value, 0.0), 1.0)
    (a, ca), (b, cb) = (stops[0], stops[1]) if value <= 0.5 else (stops[1], stops[2])
    t = (value - a) / (b - a)
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb, strict=True))


def heatmap(rows: list[str], columns: list[str], goodness: np.ndarray, title: str) -> str:
    """`goodness`: 0 (worst) .. 1 (best) per cell, so one colour scale means the same for every item."""
    cell_w, cell_h = 18, 16
    left = min(max((len(r) for r in rows), default=4) * CHAR * 0.9 + 12, 300)
    top = 28
    label_room = min(max((len(c) for c in columns), default=4) * CHAR * 0.9 * 0.87 + 12, 320)
    rows = [_fit(r, left - 8, FONT - 2) for r in rows]
    columns = [_fit(c, label_room / 0.87 - 8, FONT - 2) for c in columns]
    width = max(left + cell_w * len(columns) + 90, 360)
    height = top + cell_h * len(rows) + label_room
    body = [_text(4, 16, title, weight="bold")]
    for i, name in enumerate(rows):
        body.append(_text(left - 6, top + cell_h * i + cell_h / 2 + 4, name, anchor="end", size=FONT - 2))
        for j, column in enumerate(columns):
            value = goodness[i, j]
            fill = "#edf2f7" if not np.isfinite(value) else _goodness_colour(float(value))
            body.append(f'<rect x="{left + cell_w * j:.1f}" y="{top + cell_h * i:.1f}" width="{cell_w}" height="{cell_h}" '
                        f'fill="{fill}"><title>{escape(name)} · {escape(column)}</title></rect>')
    base = top + cell_h * len(rows) + 6
    for j, column in enumerate(columns):
        x = left + cell_w * j + cell_w / 2
        body.append(_text(x, base, column, anchor="end", size=FONT - 2, rotate=-60))
    bar_x = left + cell_w * len(columns) + 18
    body.append('<defs><linearGradient id="goodness" x1="0" y1="1" x2="0" y2="0">'
                + "".join(f'<stop offset="{v:g}" stop-color="{_goodness_colour(v)}"/>' for v in (0, 0.5, 1))
                + "</linearGradient></defs>")
    span = max(cell_h * len(rows), 40)
    body.append(f'<rect x="{bar_x:.1f}" y="{top}" width="10" height="{span}" fill="url(#goodness)"/>')
    body.append(_text(bar_x + 14, top + 9, "better", size=FONT - 2, fill=_MUTED))
    body.append(_text(bar_x + 14, top + span, "worse", size=FONT - 2, fill=_MUTED))
    return _svg(width, height, title, body)


def forest(rows: list[tuple[str, float, float, float]], title: str, reference: float = 0.0, xlabel: str = "") -> str:
    """rows: (label, estimate, low, high)."""
    row = 22
    left = min(max((len(r[0]) for r in rows), default=4) * CHAR + 16, 380)
    rows = [(_fit(r[0], left - 12), *r[1:]) for r in rows]
    top, x1 = 30, WIDTH - 20
    bottom = top + row * len(rows)
    low, high = _range([v for r in rows for v in r[1:]] + [reference], None)
    body, scale = _axis(left, x1, top, bottom, low, high, label=xlabel)
    body.insert(0, _text(4, 16, title, weight="bold"))
    x = scale(reference)
    body.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom:.1f}" stroke="#718096" stroke-dasharray="4 3"/>')
    for i, (label, estimate, ci_low, ci_high) in enumerate(rows):
        y = top + row * i + row / 2
        body.append(_text(left - 8, y + 4, label, anchor="end"))
        body.append(f'<line x1="{scale(ci_low):.1f}" y1="{y:.1f}" x2="{scale(ci_high):.1f}" y2="{y:.1f}" stroke="{PALETTE[0]}" '
                    'stroke-width="1.6"/>')
        body.append(f'<rect x="{scale(estimate) - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="{PALETTE[0]}">'
                    f"<title>{estimate:.3f} [{ci_low:.3f}, {ci_high:.3f}]</title></rect>")
    return _svg(WIDTH, bottom + (40 if xlabel else 26), title, body)
