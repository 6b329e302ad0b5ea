"""Report charts drawn as SVG by hand and inlined as ``data:`` images.

The report holds dozens of small charts (one histogram per score column, one range chart per
score and taxonomy, ...). Drawing them with matplotlib cost about a third of a second each and
made rendering the report the slowest step of a small run; the shapes it needs (bars,
histograms, quantile ranges, a heat map) are a few rectangles, lines and labels, which plain
SVG draws for almost nothing. Every number is written at a fixed precision, so the same data
gives the same bytes.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Sequence

import numpy as np

_WIDTH = 720  # 7.5 in at 96 dpi, the size the PNG charts had
_HEIGHT = 346
_FONT = 'font-family="DejaVu Sans,Helvetica,Arial,sans-serif"'
_BLUE = "#4c72b0"
_LIGHT_BLUE = "#8da0cb"
_SERIES = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")
_CHAR_WIDTH = 6.2  # average width of an 11 px sans-serif character, for margins
_MAX_LABEL = 40


def _num(value: float) -> str:
    """A coordinate at fixed precision (stable bytes, small files)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _tick_label(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.3g}"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.6g}"


def _label(text: str) -> str:
    text = str(text)
    return html.escape(text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "…")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 × 10^k apart) covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


class _Canvas:
    """One SVG picture: a plot area inside margins, data coordinates mapped to pixels."""

    def __init__(self, width: float, height: float, left: float, right: float, top: float, bottom: float) -> None:
        self.width, self.height = width, height
        self.x0, self.x1 = left, width - right
        self.y0, self.y1 = top, height - bottom
        self.parts: list[str] = []

    def add(self, element: str) -> None:
        self.parts.append(element)

    def rect(self, x: float, y: float, w: float, h: float, fill: str) -> None:
        self.add(
            f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(max(w, 0))}" height="{_num(max(h, 0))}" fill="{fill}"/>'
        )

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str = "#000", width: float = 1) -> None:
        self.add(
            f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" stroke="{stroke}" '
            f'stroke-width="{_num(width)}"/>'
        )

    def text(self, x: float, y: float, text: str, size: int = 11, anchor: str = "middle", extra: str = "") -> None:
        self.add(
            f'<text x="{_num(x)}" y="{_num(y)}" font-size="{size}" text-anchor="{anchor}"{extra}>{_label(text)}</text>'
        )

    def title(self, text: str) -> None:
        self.add(
            f'<text x="{_num((self.x0 + self.x1) / 2)}" y="16" font-size="13" text-anchor="middle">'
            f"{html.escape(text)}</text>"
        )

    def frame(self) -> None:
        self.add(
            f'<rect x="{_num(self.x0)}" y="{_num(self.y0)}" width="{_num(self.x1 - self.x0)}" '
            f'height="{_num(self.y1 - self.y0)}" fill="none" stroke="#333"/>'
        )

    def x_axis(self, ticks: Sequence[tuple[float, str]], label: str) -> None:
        for x, text in ticks:
            self.line(x, self.y1, x, self.y1 + 4)
            self.text(x, self.y1 + 16, text, size=10)
        if label:
            self.text((self.x0 + self.x1) / 2, self.height - 6, label)

    def y_axis(self, ticks: Sequence[tuple[float, str]], label: str, size: int = 10) -> None:
        for y, text in ticks:
            self.line(self.x0 - 4, y, self.x0, y)
            self.text(self.x0 - 7, y + size * 0.35, text, size=size, anchor="end")
        if label:
            y = (self.y0 + self.y1) / 2
            self.text(14, y, label, extra=f' transform="rotate(-90 14 {_num(y)})"')

    def svg(self) -> str:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(self.width)}" height="{_num(self.height)}" '
            f'viewBox="0 0 {_num(self.width)} {_num(self.height)}" {_FONT}>'
            f'<rect width="100%" height="100%" fill="#fff"/>{"".join(self.parts)}</svg>'
        )


def _scale(low: float, high: float, out_low: float, out_high: float) -> Callable[[float], float]:
    """Data value → pixel, linearly from [low, high] onto [out_low, out_high]."""
    span = (high - low) or 1.0
    return lambda v: out_low + (float(v) - low) / span * (out_high - out_low)


def _label_margin(labels: Sequence[str], size: float = 8) -> float:
    longest = max((min(len(str(t)), _MAX_LABEL) for t in labels), default=1)
    return min(300.0, 16 + longest * _CHAR_WIDTH * size / 11)


def _row_height(rows: int) -> float:
    return max(2.4, 0.28 * rows + 1.2) * 96


def bar_chart(
    labels: Sequence[str], values: Sequence[float], value_label: str, title: str, horizontal: bool = False
) -> str:
    """Bars of ``values``: one per label, down the page when ``horizontal`` (long labels)."""
    values = [float(v) for v in values]
    ticks = nice_ticks(min([0.0, *values]), max([0.0, *values]))
    if horizontal:
        canvas = _Canvas(_WIDTH, _row_height(len(labels)), _label_margin(labels), 20, 26, 42)
        to_x = _scale(ticks[0], ticks[-1], canvas.x0, canvas.x1)
        band = (canvas.y1 - canvas.y0) / max(len(labels), 1)
        for i, value in enumerate(values):
            low, high = sorted((to_x(0), to_x(value)))
            canvas.rect(low, canvas.y0 + band * (i + 0.1), high - low, band * 0.8, _BLUE)
        canvas.y_axis([(canvas.y0 + band * (i + 0.5), str(t)) for i, t in enumerate(labels)], "", size=8)
        canvas.x_axis([(to_x(t), _tick_label(t)) for t in ticks], value_label)
    else:
        rotate = len(labels) > 6
        bottom = 42 + (min(_label_margin(labels), 160) * 0.5 if rotate else 0)
        canvas = _Canvas(_WIDTH, _HEIGHT + (bottom - 42), 70, 20, 26, bottom)
        to_y = _scale(ticks[0], ticks[-1], canvas.y1, canvas.y0)
        band = (canvas.x1 - canvas.x0) / max(len(labels), 1)
        for i, value in enumerate(values):
            top, low = sorted((to_y(value), to_y(0)))
            canvas.rect(canvas.x0 + band * (i + 0.1), top, band * 0.8, low - top, _BLUE)
        for i, text in enumerate(labels):
            x = canvas.x0 + band * (i + 0.5)
            canvas.line(x, canvas.y1, x, canvas.y1 + 4)
            if rotate:
                y = canvas.y1 + 14
                canvas.text(
                    x, y, str(text), size=8, anchor="end", extra=f' transform="rotate(-30 {_num(x)} {_num(y)})"'
                )
            else:
                canvas.text(x, canvas.y1 + 16, str(text), size=8)
        canvas.y_axis([(to_y(t), _tick_label(t)) for t in ticks], value_label)
    canvas.frame()
    canvas.title(title)
    return canvas.svg()


def histogram(
    series: Sequence[tuple[str, Sequence[float] | np.ndarray]],
    title: str,
    x_label: str,
    bins: int | np.ndarray = 40,
    log_x: bool = False,
) -> str:
    """Document counts per bin: filled bars for one series, outlined steps with a legend for several.

    ``bins`` is a count (equal widths over the data's range) or the bin edges; ``log_x`` draws the
    x axis in powers of ten (edges should then be positive, e.g. from ``np.logspace``).
    """
    arrays = [(name, np.asarray(values, dtype=np.float64)) for name, values in series]
    arrays = [(name, a[np.isfinite(a)]) for name, a in arrays]  # NaN/inf have no bin
    everything = np.concatenate([a for _, a in arrays]) if arrays else np.zeros(1)
    edges = np.histogram_bin_edges(everything, bins=bins) if np.isscalar(bins) else np.asarray(bins, np.float64)
    counts = [np.histogram(a, bins=edges)[0] for _, a in arrays]
    y_ticks = nice_ticks(0.0, float(max((c.max() for c in counts if len(c)), default=1)) or 1.0)
    canvas = _Canvas(_WIDTH, _HEIGHT, 70, 20, 26, 42)
    if log_x:
        low_exp, high_exp = math.log10(edges[0]), math.log10(edges[-1])
        to_x_log = _scale(low_exp, high_exp, canvas.x0, canvas.x1)

        def to_x(v: float) -> float:
            return to_x_log(math.log10(max(float(v), 1e-300)))

        x_ticks = [
            (to_x(10.0**k), f"10^{k}") for k in range(math.ceil(low_exp - 1e-9), math.floor(high_exp + 1e-9) + 1)
        ]
    else:
        to_x = _scale(float(edges[0]), float(edges[-1]), canvas.x0, canvas.x1)
        x_ticks = [
            (to_x(t), _tick_label(t))
            for t in nice_ticks(float(edges[0]), float(edges[-1]))
            if edges[0] <= t <= edges[-1]
        ]
    to_y = _scale(y_ticks[0], y_ticks[-1], canvas.y1, canvas.y0)
    if len(arrays) == 1:
        for left, right, count in zip(edges[:-1], edges[1:], counts[0], strict=True):
            if count:
                canvas.rect(to_x(left), to_y(count), to_x(right) - to_x(left), canvas.y1 - to_y(count), _BLUE)
    else:
        for index, ((name, values), tally) in enumerate(zip(arrays, counts, strict=True)):
            color = _SERIES[index % len(_SERIES)]
            points = [f"{_num(to_x(edges[0]))},{_num(canvas.y1)}"]
            for left, right, count in zip(edges[:-1], edges[1:], tally, strict=True):
                points += [f"{_num(to_x(left))},{_num(to_y(count))}", f"{_num(to_x(right))},{_num(to_y(count))}"]
            points.append(f"{_num(to_x(edges[-1]))},{_num(canvas.y1)}")
            canvas.add(f'<polyline points="{" ".join(points)}" fill="none" stroke="{color}" stroke-width="1.5"/>')
            y = canvas.y0 + 14 + 15 * index
            canvas.line(canvas.x1 - 170, y - 4, canvas.x1 - 150, y - 4, color, 2)
            canvas.text(canvas.x1 - 145, y, f"{name} (n={len(values):,})", size=10, anchor="start")
    canvas.x_axis(x_ticks, x_label)
    canvas.y_axis([(to_y(t), _tick_label(t)) for t in y_ticks], "documents")
    canvas.frame()
    canvas.title(title)
    return canvas.svg()


def range_chart(rows: Sequence[tuple[str, dict[str, float]]], x_label: str, title: str) -> str:
    """Per row: its p05–p95 range (thin), p25–p75 (thick) and median (tick), from quantile dicts."""
    labels = [label for label, _ in rows]
    low = min((q["p05"] for _, q in rows), default=0.0)
    high = max((q["p95"] for _, q in rows), default=1.0)
    ticks = nice_ticks(low, high)
    canvas = _Canvas(_WIDTH, _row_height(len(rows)), _label_margin(labels), 20, 26, 42)
    to_x = _scale(ticks[0], ticks[-1], canvas.x0, canvas.x1)
    band = (canvas.y1 - canvas.y0) / max(len(rows), 1)
    for i, (_, q) in enumerate(rows):
        y = canvas.y0 + band * (i + 0.5)
        canvas.line(to_x(q["p05"]), y, to_x(q["p95"]), y, _LIGHT_BLUE, 1)
        canvas.line(to_x(q["p25"]), y, to_x(q["p75"]), y, _BLUE, 5)
        canvas.line(to_x(q["p50"]), y - 6, to_x(q["p50"]), y + 6, "#000", 1.5)
    canvas.y_axis([(canvas.y0 + band * (i + 0.5), label) for i, label in enumerate(labels)], "", size=8)
    canvas.x_axis([(to_x(t), _tick_label(t)) for t in ticks], x_label)
    canvas.frame()
    canvas.title(title)
    return canvas.svg()


def _blue(share: float) -> str:
    """White to dark blue (matplotlib's "Blues" end points) by ``share`` in [0, 1]."""
    share = min(max(share, 0.0), 1.0)
    start, end = (247, 251, 255), (8, 48, 107)
    return "#" + "".join(f"{round(a + (b - a) * share):02x}" for a, b in zip(start, end, strict=True))


def heat_map(grid: np.ndarray, row_labels: Sequence[str], column_labels: Sequence[str], title: str) -> str:
    """A cell per grid value, shaded by value ÷ the largest, with a scale bar on the right."""
    grid = np.asarray(grid, dtype=np.float64)
    top = float(grid.max()) if grid.size else 0.0
    bottom = 26 + _label_margin(column_labels, 7) * 0.9
    canvas = _Canvas(864, 768, _label_margin(row_labels, 7), 90, 26, bottom)
    rows, columns = grid.shape
    cell_w = (canvas.x1 - canvas.x0) / max(columns, 1)
    cell_h = (canvas.y1 - canvas.y0) / max(rows, 1)
    for r in range(rows):
        for c in range(columns):
            canvas.rect(
                canvas.x0 + c * cell_w, canvas.y0 + r * cell_h, cell_w, cell_h, _blue(grid[r, c] / top if top else 0)
            )
    canvas.y_axis([(canvas.y0 + cell_h * (r + 0.5), label) for r, label in enumerate(row_labels)], "", size=7)
    for c, label in enumerate(column_labels):
        x = canvas.x0 + cell_w * (c + 0.5)
        y = canvas.y1 + 8
        canvas.text(x, y, label, size=7, anchor="end", extra=f' transform="rotate(-90 {_num(x)} {_num(y)})"')
    steps = 20
    bar_x, bar_h = canvas.x1 + 20, (canvas.y1 - canvas.y0) / steps
    for i in range(steps):
        canvas.rect(bar_x, canvas.y1 - (i + 1) * bar_h, 14, bar_h + 0.5, _blue((i + 0.5) / steps))
    canvas.text(bar_x + 18, canvas.y1, _tick_label(0.0), size=9, anchor="start")
    canvas.text(bar_x + 18, canvas.y0 + 8, f"{top:.3g}", size=9, anchor="start")
    canvas.frame()
    canvas.title(title)
    return canvas.svg()


def img(svg: str, alt: str) -> str:
    """The chart as an ``<img>`` with a ``data:`` URI: the page stays one file with no script."""
    encoded = base64.b64encode(svg.encode()).decode()
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/svg+xml;base64,{encoded}">'
