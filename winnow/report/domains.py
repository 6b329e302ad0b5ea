"""The "Domains" section of ``report.html``: the ``tag`` stage's statistics (docs/domains.md#per-domain-statistics).

Input is the manifest's ``domains`` records (computed exactly over the whole corpus by Beam
combiners, not re-read from shards): totals, one ``stats`` record per taxonomy value, one
``prior`` per taxonomy and the taggers used. Output is HTML with SVG plots inlined as ``data:``
URIs, like the rest of the report: token share per topic, format and DataMan domain, the
topic × format token map, and per-domain score distributions drawn from the histogram quantiles.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from winnow.core.domains import FORMATS, TOPICS
from winnow.report.charts import bar_chart, heat_map, img, range_chart

TAXONOMY_TITLES = {"topic": "WebOrganizer topic", "format": "WebOrganizer format", "domain": "DataMan domain"}
_MAX_ROWS = 30


def domains_html(records: list[dict[str, Any]]) -> str:
    """HTML for the manifest's ``domains`` records (``section`` already removed or not)."""
    totals = next((r for r in records if r.get("kind") == "totals"), None)
    taggers = next((r for r in records if r.get("kind") == "taggers"), None)
    stats = [r for r in records if r.get("kind") == "stats"]
    priors = {r["taxonomy"]: r["prior"] for r in records if r.get("kind") == "prior"}
    parts = [_totals(totals, taggers)]
    for taxonomy, title in TAXONOMY_TITLES.items():
        rows = [r for r in stats if r.get("taxonomy") == taxonomy]
        if rows:
            parts.append(f"<h3>{html.escape(title)}</h3>")
            parts.append(_taxonomy_table(rows, priors.get(taxonomy, [])))
            parts.append(_share_chart(priors.get(taxonomy, []), title))
            parts.extend(_score_charts(rows, title))
    cells = [r for r in stats if r.get("taxonomy") == "topic_format"]
    if cells:
        parts.append("<h3>Topic × format</h3>")
        parts.append(_cell_map(cells))
    return "".join(parts)


def _totals(totals: dict[str, Any] | None, taggers: dict[str, Any] | None) -> str:
    if totals is None:
        return "<p class='note'>No totals record.</p>"
    sources = totals.get("domain_source") or {}
    source_text = ", ".join(f"{html.escape(k)}: {v:,}" for k, v in sources.items()) or "none"
    lines = [
        f"<p>{totals['documents']:,} documents, {totals['characters']:,} characters, {totals['tokens']:,} tokens.</p>",
        f"<p class='note'>DataMan domain source: {source_text}. <code>dataman</code> = the DataMan scorer's "
        "prediction; <code>topic</code> = mapped from the WebOrganizer topic (docs/domains.md#dataman-domains, "
        "ours, for reports only; not a model prediction).</p>",
    ]
    if taggers:
        described = []
        for taxonomy, entry in (taggers.get("taggers") or {}).items():
            if entry:
                described.append(
                    f"{html.escape(taxonomy)}: {html.escape(entry['mode'])} ({html.escape(entry['path'])})"
                )
        lines.append(f"<p class='note'>Taggers: {'; '.join(described) or 'none'}.</p>")
    return "".join(lines)


def _taxonomy_table(rows: list[dict[str, Any]], prior: list[dict[str, Any]]) -> str:
    weight = {p["domain"]: p["weight"] for p in prior}
    score_names = sorted({name for r in rows for name in r.get("scores", {})})
    ordered = sorted(rows, key=lambda r: (-r["tokens"], str(r["value"])))
    header = "".join(f"<th>{html.escape(n)} mean</th>" for n in score_names)
    body = []
    for r in ordered[:_MAX_ROWS]:
        cells = "".join(
            f"<td class='n'>{r['scores'][n]['mean']:.3f}</td>" if n in r.get("scores", {}) else "<td></td>"
            for n in score_names
        )
        body.append(
            f"<tr><td>{html.escape(str(r['value']))}</td><td class='n'>{r['documents']:,}</td>"
            f"<td class='n'>{r['tokens']:,}</td><td class='n'>{weight.get(r['value'], 0.0):.2%}</td>{cells}</tr>"
        )
    more = f"<p class='note'>{len(ordered) - _MAX_ROWS} more values not shown.</p>" if len(ordered) > _MAX_ROWS else ""
    return (
        f"<table><tr><th>value</th><th>documents</th><th>tokens</th><th>token share</th>{header}</tr>"
        f"{''.join(body)}</table>{more}"
    )


def _share_chart(prior: list[dict[str, Any]], title: str) -> str:
    if not prior:
        return ""
    rows = prior[:_MAX_ROWS]
    chart = bar_chart(
        [str(p["domain"]) for p in rows], [p["weight"] for p in rows], "share of tokens", f"{title}: token share", True
    )
    return img(chart, f"{title} token share")


def _score_charts(rows: list[dict[str, Any]], title: str) -> list[str]:
    """Per score column: each value's p05–p95 (thin) and p25–p75 (thick) range and median."""
    charts = []
    names = sorted({name for r in rows for name in r.get("scores", {})})
    for name in names:
        having = sorted(
            (r for r in rows if name in r.get("scores", {})), key=lambda r: (-r["tokens"], str(r["value"]))
        )[:_MAX_ROWS]
        rows_drawn = [(str(r["value"]), r["scores"][name]["quantiles"]) for r in having]
        charts.append(img(range_chart(rows_drawn, name, f"{name} by {title}"), f"{name} by {title}"))
    return charts


def _cell_map(cells: list[dict[str, Any]]) -> str:
    """Token share of every topic × format cell, as a heat map (rows: topics, columns: formats)."""

    total = sum(c["tokens"] for c in cells) or 1
    grid = np.zeros((len(TOPICS), len(FORMATS)))
    for cell in cells:
        topic, _, form = str(cell["value"]).partition("|")
        if topic in TOPICS and form in FORMATS:
            grid[TOPICS.index(topic), FORMATS.index(form)] = cell["tokens"] / total
    chart = heat_map(grid, TOPICS, FORMATS, "Share of tokens per topic × format cell")
    return img(chart, "Topic by format token map")
