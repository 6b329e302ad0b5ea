"""The report's SVG charts: they draw what they are given, parse as SVG and are byte-stable."""

from __future__ import annotations

import base64
import math
from xml.etree import ElementTree

import numpy as np
import pytest

from winnow.report.charts import bar_chart, heat_map, histogram, img, nice_ticks, range_chart

NS = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ElementTree.Element:
    root = ElementTree.fromstring(svg)
    assert root.tag == f"{NS}svg" and float(root.get("width")) > 300 and float(root.get("height")) > 100
    return root


def filled(root: ElementTree.Element, colour: str) -> list[dict[str, float]]:
    return [
        {k: float(r.get(k)) for k in ("x", "y", "width", "height")}
        for r in root.iter(f"{NS}rect")
        if r.get("fill") == colour
    ]


def texts(root: ElementTree.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{NS}text")]


def test_horizontal_bars_are_as_long_as_their_values_in_label_order() -> None:
    root = parse(bar_chart(["kept", "filtered", "duplicate", "rejected"], [174, 2825, 43, 0], "documents", "t", True))
    bars = filled(root, "#4c72b0")
    assert len(bars) == 4
    assert [b["y"] for b in bars] == sorted(b["y"] for b in bars)  # first label on top
    widths = [b["width"] for b in bars]
    assert widths[3] == 0
    assert widths[0] / widths[1] == pytest.approx(174 / 2825, rel=0.02)
    assert widths[2] / widths[1] == pytest.approx(43 / 2825, rel=0.05)
    assert {"kept", "filtered", "duplicate", "rejected", "documents", "t"} <= set(texts(root))


def test_vertical_bars_are_as_tall_as_their_values() -> None:
    values = [3.0, 12.0, 7.5]
    bars = filled(parse(bar_chart(["a", "b", "c"], values, "clusters", "sizes")), "#4c72b0")
    heights = [b["height"] for b in bars]
    assert [h / heights[1] for h in heights] == pytest.approx([v / 12.0 for v in values], rel=0.01)
    bottoms = {round(b["y"] + b["height"], 2) for b in bars}
    assert len(bottoms) == 1  # all stand on the zero line


def test_histogram_bars_follow_numpy_counts() -> None:
    values = np.random.default_rng(0).normal(size=500)
    counts, _ = np.histogram(values, bins=40)
    bars = filled(parse(histogram([("x", values)], "x", "x", bins=40)), "#4c72b0")
    assert len(bars) == int((counts > 0).sum())
    tallest = max(b["height"] for b in bars)
    assert sorted(b["height"] / tallest for b in bars) == pytest.approx(
        sorted(counts[counts > 0] / counts.max()), rel=0.01
    )


def test_step_histograms_draw_one_outline_per_series_with_its_count() -> None:
    bins = np.logspace(0, 4, 50)
    series = [("kept", np.array([10, 100, 100, 1000])), ("filtered", np.array([5, 5, 5000]))]
    root = parse(histogram(series, "lengths", "characters", bins=bins, log_x=True))
    outlines = list(root.iter(f"{NS}polyline"))
    assert len(outlines) == 2
    assert "kept (n=4)" in texts(root) and "filtered (n=3)" in texts(root)
    assert "10^0" in texts(root) and "10^4" in texts(root)
    # The second outline's highest step is the bin holding the three 5s, three times the 5000 one.
    ys = [float(p.split(",")[1]) for p in outlines[1].get("points").split()]
    base = ys[0]
    heights = sorted({round(base - y, 2) for y in ys} - {0.0})
    assert heights[-1] == pytest.approx(2 * heights[0], rel=0.01)


def test_histogram_ignores_values_that_have_no_bin() -> None:
    root = parse(histogram([("s", [0.1, 0.2, math.nan, math.inf, 0.2])], "s", "s"))
    assert len(filled(root, "#4c72b0")) == 2


def test_range_chart_spans_each_rows_quantiles() -> None:
    rows = [("a", {"p05": 0.0, "p25": 1.0, "p50": 2.0, "p75": 3.0, "p95": 4.0}),
            ("b", {"p05": 1.0, "p25": 2.0, "p50": 2.5, "p75": 2.6, "p95": 3.0})]  # fmt: skip
    root = parse(range_chart(rows, "score", "score by topic"))
    thick = [line for line in root.iter(f"{NS}line") if line.get("stroke-width") == "5"]
    assert len(thick) == 2
    spans = [float(t.get("x2")) - float(t.get("x1")) for t in thick]
    assert spans[1] / spans[0] == pytest.approx(0.6 / 2.0, rel=0.01)
    assert float(thick[0].get("y1")) < float(thick[1].get("y1"))  # first row on top


def test_heat_map_shades_by_share_of_the_largest_cell() -> None:
    grid = np.array([[0.0, 0.5], [1.0, 0.25]])
    root = parse(heat_map(grid, ["r1", "r2"], ["c1", "c2"], "map"))
    cells = [r for r in root.iter(f"{NS}rect")][1:5]  # after the background
    darkness = [sum(int(r.get("fill")[i : i + 2], 16) for i in (1, 3, 5)) for r in cells]
    assert darkness[2] == min(darkness) and darkness[0] == max(darkness)  # 1.0 darkest, 0 lightest
    assert darkness[2] < darkness[1] < darkness[3] < darkness[0]


def test_same_data_gives_the_same_bytes_and_labels_are_escaped() -> None:
    labels = ["<b>&amp", "ok"]
    first = bar_chart(labels, [1, 2], "n", "a < b")
    assert bar_chart(list(labels), np.array([1.0, 2.0]), "n", "a < b") == first
    root = parse(first)
    assert "<b>&amp" in texts(root) and "a < b" in texts(root)
    page = img(first, 'say "hi"')
    assert 'alt="say &quot;hi&quot;"' in page
    assert base64.b64decode(page.split("base64,")[1].rstrip('">')).decode() == first


@pytest.mark.parametrize(("low", "high"), [(0, 2825), (0.501, 0.505), (-2, 4), (0, 1), (5, 5), (0, 1e-4)])
def test_nice_ticks_cover_the_range_with_round_steps(low: float, high: float) -> None:
    ticks = nice_ticks(low, high)
    assert ticks[0] <= low and ticks[-1] >= high and 2 <= len(ticks) <= 12
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    assert any(math.isclose(mantissa, m) for m in (1, 2, 5))
