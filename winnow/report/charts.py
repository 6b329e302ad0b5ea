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
    """An axis label cut to ``_MAX_LABEL`` characters (margins are sized for that)."""
    text = str(text)
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "…"


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

    def text(self, x: float, y: float, text: str, size: int = 11, anchor: str = "middle", rotate: float = 0) -> None:
        turn = f' transform="rotate({_num(rotate)} {_num(x)} {_num(y)})"' if rotate else ""
        self.add(
            f'<text x="{_num(x)}" y="{_num(y)}" font-size="{size}" text-anchor="{anchor}"{turn}>'
            f"{html.escape(str(text))}</text>"
        )

    def title(self, text: str) -> None:
        self.text((self.x0 + self.x1) / 2, 16, text, size=13)

    def bands(self, count: int, across: bool) -> tuple[float, list[float]]:
        """Equal bands across the plot (``across``: left to right, else top to bottom): width, centres."""
        start, end = (self.x0, self.x1) if across else (self.y0, self.y1)
        band = (end - start) / max(count, 1)
        return band, [start + band * (i + 0.5) for i in range(count)]

    def frame(self) -> None:
        self.add(
            f'<rect x="{_num(self.x0)}" y="{_num(self.y0)}" width="{_num(self.x1 - self.x0)}" '
            f'height="{_num(self.y1 - self.y0)}" fill="none" stroke="#333"/>'
        )

    def x_axis(self, ticks: Sequence[tuple[float, str]], label: str, size: int = 10, rotate: float = 0) -> None:
        """Tick marks and labels under the plot (``rotate``d labels end at their tick), then ``label``."""
        for x, text in ticks:
            self.line(x, self.y1, x, self.y1 + 4)
            if rotate:
                self.text(x, self.y1 + 10, _label(text), size=size, anchor="end", rotate=rotate)
            else:
                self.text(x, self.y1 + 16, _label(text), size=size)
        if label:
            self.text((self.x0 + self.x1) / 2, self.height - 6, label)

    def y_axis(self, ticks: Sequence[tuple[float, str]], label: str, size: int = 10) -> None:
        for y, text in ticks:
            self.line(self.x0 - 4, y, self.x0, y)
            self.text(self.x0 - 7, y + size * 0.35, _label(text), size=size, anchor="end")
        if label:
            self.text(14, (self.y0 + self.y1) / 2, label, rotate=-90)

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
        band, centres = canvas.bands(len(labels), across=False)
        for centre, value in zip(centres, values, strict=True):
            low, high = sorted((to_x(0), to_x(value)))
            canvas.rect(low, centre - band * 0.4, high - low, band * 0.8, _BLUE)
        canvas.y_axis(list(zip(centres, labels, strict=True)), "", size=8)
        canvas.x_axis([(to_x(t), _tick_label(t)) for t in ticks], value_label)
    else:
        rotate = len(labels) > 6
        bottom = 42 + (min(_label_margin(labels), 160) * 0.5 if rotate else 0)
        canvas = _Canvas(_WIDTH, _HEIGHT + (bottom - 42), 70, 20, 26, bottom)
        to_y = _scale(ticks[0], ticks[-1], canvas.y1, canvas.y0)
        band, centres = canvas.bands(len(labels), across=True)
        for centre, value in zip(centres, values, strict=True):
            top, low = sorted((to_y(value), to_y(0)))
            canvas.rect(centre - band * 0.4, top, band * 0.8, low - top, _BLUE)
        canvas.x_axis(list(zip(centres, labels, strict=True)), "", size=8, rotate=-30 if rotate else 0)
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
    _, centres = canvas.bands(len(rows), across=False)
    for y, (_, q) in zip(centres, rows, strict=True):
        canvas.line(to_x(q["p05"]), y, to_x(q["p95"]), y, _LIGHT_BLUE, 1)
        canvas.line(to_x(q["p25"]), y, to_x(q["p75"]), y, _BLUE, 5)
        canvas.line(to_x(q["p50"]), y - 6, to_x(q["p50"]), y + 6, "#000", 1.5)
    canvas.y_axis(list(zip(centres, labels, strict=True)), "", size=8)
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
    cell_w, xs = canvas.bands(grid.shape[1], across=True)
    cell_h, ys = canvas.bands(grid.shape[0], across=False)
    for r, y in enumerate(ys):
        for c, x in enumerate(xs):
            share = grid[r, c] / top if top else 0.0
            canvas.rect(x - cell_w / 2, y - cell_h / 2, cell_w, cell_h, _blue(share))
    canvas.y_axis(list(zip(ys, row_labels, strict=True)), "", size=7)
    canvas.x_axis(list(zip(xs, column_labels, strict=True)), "", size=7, rotate=-90)
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
