"""``report.html``: what a run did, in one self-contained page that opens offline.

Sections: the accounting table, per-step throughput, score histograms (every numeric column
of the kept shards), composition by domain columns (``domain``/``topic``/``format`` when a
stage wrote them, plus URL host and input source), length distributions, dedup cluster
sizes, and a few example documents from every bucket. Plots are SVG drawn by ``charts`` and
embedded as ``data:`` URIs, so the page needs no network and no JavaScript.

The page is computed on the driver from the finished shards, reading whole row groups in
shard order up to ``output.report.max_rows`` rows per output kind, so its cost is bounded on
any corpus size; counts in the accounting table are always exact (from the manifest). A
section that fails to render shows its error instead of failing the run.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from winnow.config import ReportConfig
from winnow.report.charts import bar_chart, histogram, img
from winnow.report.domains import domains_html

# Columns a tagging stage may add that name what a document is about.
DOMAIN_COLUMNS = ("domain", "topic", "format")
# Numeric columns that are not scores.
NOT_SCORES = {
    "cluster_size",
    "offset",
    "n_tokens",
    "length",
    "dataman_length",
    "order_rank",
    "context_id",
    "token_offset",
    "epoch",
    "topic_id",
    "format_id",
}
# Manifest sections that stages fill with per-group records (rendered as tables).
STAGE_SECTIONS = ("selection", "mixture", "ordering", "packing", "decomposition")
_MAX_TABLE_ROWS = 60
_TOP_VALUES = 20
_SAMPLE_CHARS = 700


def render_report(output_dir: str, manifest: dict[str, Any], config: ReportConfig, timings: dict[str, float]) -> str:
    """The whole page as an HTML string; ``timings`` are seconds per step (may be empty)."""
    data = _read_rows(output_dir, manifest, "data", config.max_rows)
    removed = _read_rows(output_dir, manifest, "removed", config.max_rows)
    rejected = _read_rows(output_dir, manifest, "rejected", config.max_rows)
    counts = manifest["counts"]
    title = config.title or output_dir.rstrip("/").rsplit("/", 1)[-1] or "winnow run"
    sections = [
        ("Accounting", lambda: _accounting(counts)),
        ("Throughput per step", lambda: _throughput(counts, manifest["stages"], timings)),
        ("Score distributions", lambda: _scores(data)),
        ("Composition of the kept documents", lambda: _composition(data)),
        ("Domains", lambda: _domains(manifest)),
        ("Stage summaries", lambda: _stage_summaries(manifest)),
        ("Length distributions", lambda: _lengths(data, removed)),
        ("Duplicate clusters", lambda: _clusters(data, removed)),
        ("Sample documents", lambda: _samples(data, removed, rejected, config.samples_per_bucket, manifest)),
    ]
    body = [_header(title, output_dir, manifest, data, removed, rejected)]
    for name, render in sections:
        body.append(f'<section id="{_slug(name)}"><h2>{html.escape(name)}</h2>{_safe(render)}</section>')
    page_title = html.escape(f"winnow report: {title}")
    # Plain concatenation: the CSS is full of braces that str.format would take for fields.
    return (
        _PAGE_HEAD
        + f"<title>{page_title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + ("\n".join(body) + "\n</body>\n</html>\n")
    )


# -- reading ------------------------------------------------------------------------------
def _read_rows(output_dir: str, manifest: dict[str, Any], kind: str, max_rows: int) -> pa.Table | None:
    tables: list[pa.Table] = []
    rows = 0
    for entry in manifest["shards"].get(kind, []):
        if rows >= max_rows:
            break
        path = FileSystems.join(output_dir, entry["file"])
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            parquet = pq.ParquetFile(handle)
            columns = [name for name in parquet.schema_arrow.names if name != "metadata"]
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group, columns=columns)
                tables.append(table)
                rows += table.num_rows
                if rows >= max_rows:
                    break
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default").slice(0, max_rows)


# -- sections -----------------------------------------------------------------------------
def _header(
    title: str,
    output_dir: str,
    manifest: dict[str, Any],
    data: pa.Table | None,
    removed: pa.Table | None,
    rejected: pa.Table | None,
) -> str:
    sampled = []
    for kind, table in (("kept", data), ("removed", removed), ("rejected", rejected)):
        sampled.append(f"{kind}: {0 if table is None else table.num_rows:,}")
    facts = [
        ("output", output_dir),
        ("stages", " → ".join(["read", *manifest["stages"], "write"])),
        ("runner", str(manifest.get("runner"))),
        ("config hash", manifest["config_hash"][:16]),
        ("winnow", manifest["winnow_version"]),
        ("rows read for the plots", ", ".join(sampled)),
    ]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    return f"<h1>{html.escape(title)}</h1><table class='facts'>{rows}</table>"


def _accounting(counts: dict[str, Any]) -> str:
    total = counts["input"] or 1
    rows: list[tuple[str, str, int, bool]] = [("input", "", counts["input"], True), ("kept", "", counts["kept"], True)]
    for bucket, key in (
        ("filtered", "filtered_by_reason"),
        ("duplicate", "duplicate_by_reason"),
        ("rejected", "rejected_by_stage"),
    ):
        rows.append((bucket, "", counts[bucket], True))
        rows.extend((bucket, reason, count, False) for reason, count in counts[key].items())
    cells = "".join(
        f"<tr class='{'total' if bold else 'reason'}'><td>{html.escape(bucket if bold else '')}</td>"
        f"<td>{html.escape(reason)}</td><td class='n'>{count:,}</td><td class='n'>{100 * count / total:.2f}%</td></tr>"
        for bucket, reason, count, bold in rows
    )
    table = f"<table><tr><th>outcome</th><th>rule</th><th>documents</th><th>share of input</th></tr>{cells}</table>"
    check = counts["kept"] + counts["filtered"] + counts["duplicate"] + counts["rejected"]
    note = f"<p class='ok'>input {counts['input']:,} = kept + filtered + duplicate + rejected = {check:,}</p>"
    labels = ["kept", "filtered", "duplicate", "rejected"]
    values = [counts[label] for label in labels]
    chart = bar_chart(labels, values, "documents", "Where the input went", horizontal=True)
    return table + note + img(chart, "Bar chart of where the input documents went")


def stage_flow(counts: dict[str, Any], stages: list[str]) -> list[tuple[str, int, int]]:
    """(step, documents in, documents out) for read, each stage and write, from the exact counts."""
    removed_by_stage: Counter[str] = Counter()
    for key in ("filtered_by_reason", "duplicate_by_reason"):
        for reason, count in counts[key].items():
            removed_by_stage[reason.split(":", 1)[0]] += count
    for stage, count in counts["rejected_by_stage"].items():
        removed_by_stage[stage] += count
    flow = [("read", counts["input"], counts["input"] - removed_by_stage["read"])]
    current = flow[0][2]
    for stage in stages:
        out = current - removed_by_stage[stage]
        flow.append((stage, current, out))
        current = out
    flow.append(("write", current, counts["kept"]))
    return flow


def _throughput(counts: dict[str, Any], stages: list[str], timings: dict[str, float]) -> str:
    flow = stage_flow(counts, stages)
    rows = []
    labels, rates = [], []
    for step, docs_in, docs_out in flow:
        seconds = timings.get(step)
        rate = docs_in / seconds if seconds else None
        rows.append(
            f"<tr><td>{html.escape(step)}</td><td class='n'>{docs_in:,}</td><td class='n'>{docs_out:,}</td>"
            f"<td class='n'>{'n/a' if seconds is None else f'{seconds:,.2f}'}</td>"
            f"<td class='n'>{'n/a' if rate is None else f'{rate:,.0f}'}</td></tr>"
        )
        if rate is not None:
            labels.append(step)
            rates.append(rate)
    if "accounting" in timings:
        rows.append(
            f"<tr><td>accounting</td><td></td><td></td><td class='n'>{timings['accounting']:,.2f}</td><td></td></tr>"
        )
    table = (
        "<table><tr><th>step</th><th>documents in</th><th>documents out</th><th>processing seconds</th>"
        f"<th>documents / s</th></tr>{''.join(rows)}</table>"
        "<p class='note'>Seconds are the runner's processing time of each step's transforms, summed over "
        "workers (FnApiRunner's per-transform execution-time metrics); n/a where the runner does not report "
        "them (see the job's own monitoring page on Dataflow). The report of a run resumed after a crash "
        "shows the timings of the run that produced the shards.</p>"
    )
    if not labels:
        return table
    return table + img(bar_chart(labels, rates, "documents / second", "Throughput per step"), "Throughput chart")


def _numeric_columns(table: pa.Table | None, exclude: set[str]) -> list[str]:
    if table is None:
        return []
    return [
        f.name
        for f in table.schema
        if (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)) and f.name not in exclude
    ]


def _scores(data: pa.Table | None) -> str:
    columns = _numeric_columns(data, NOT_SCORES)
    if not columns:
        return "<p class='note'>No score columns in the kept shards (no scoring stage ran).</p>"
    parts = []
    for name in columns:
        values = [v for v in data.column(name).to_pylist() if v is not None]
        if not values:
            parts.append(f"<p class='note'>{html.escape(name)}: all values null.</p>")
            continue
        chart = histogram([(name, values)], f"{name} (n={len(values):,})", name, bins=40)
        parts.append(img(chart, f"Histogram of {name}"))
    return "".join(parts)


def _composition(data: pa.Table | None) -> str:
    if data is None:
        return "<p class='note'>No kept documents.</p>"
    parts = []
    for name in DOMAIN_COLUMNS:
        if name in data.column_names:
            parts.append(_value_counts_chart(data.column(name).to_pylist(), name))
    if "url" in data.column_names:
        hosts = [_host(url) for url in data.column("url").to_pylist()]
        parts.append(_value_counts_chart(hosts, "URL host"))
    if "source" in data.column_names:
        sources = [s.split("/", 1)[0] if s else None for s in data.column("source").to_pylist()]
        parts.append(_value_counts_chart(sources, "input source (first path part)"))
    if not any(name in data.column_names for name in DOMAIN_COLUMNS):
        parts.insert(0, "<p class='note'>No domain/topic/format columns yet (no tagging stage ran).</p>")
    return "".join(parts)


def _domains(manifest: dict[str, Any]) -> str:
    records = manifest.get("domains")
    if not records:
        return "<p class='note'>No domain statistics (the <code>tag</code> stage did not run).</p>"

    return domains_html(records)


def _stage_summaries(manifest: dict[str, Any]) -> str:
    """Every per-group record a stage left in the manifest (selection cut, mixture, ordering, packing)."""
    parts = []
    for section in STAGE_SECTIONS:
        records = manifest.get(section) or []
        if records:
            parts.append(f"<h3>{html.escape(section)}</h3>{_records_table(records)}")
    return "".join(parts) or "<p class='note'>No stage summaries in this run.</p>"


def _records_table(records: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for record in records:
        columns += [key for key in record if key not in columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for record in records[:_MAX_TABLE_ROWS]:
        cells = "".join(f"<td>{html.escape(_cell(record.get(c)))}</td>" for c in columns)
        rows.append(f"<tr>{cells}</tr>")
    more = len(records) - _MAX_TABLE_ROWS
    note = f"<p class='note'>{more:,} more rows in manifest.json.</p>" if more > 0 else ""
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>{note}"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True)
        return text if len(text) <= 160 else text[:157] + "…"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _host(url: Any) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(str(url)).hostname or None
    except ValueError:
        return None


def _value_counts_chart(values: Iterable[Any], label: str) -> str:
    tally = Counter("(none)" if v is None else str(v) for v in values)
    top = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))[:_TOP_VALUES]
    other = sum(tally.values()) - sum(count for _, count in top)
    if other:
        top.append((f"(other {len(tally) - _TOP_VALUES} values)", other))
    names = [name[:40] for name, _ in top]
    chart = bar_chart(names, [count for _, count in top], "kept documents", f"By {label}", horizontal=True)
    return img(chart, f"Kept documents by {label}")


def _lengths(data: pa.Table | None, removed: pa.Table | None) -> str:

    series = []
    if data is not None and "text" in data.column_names:
        series.append(("kept", pc.utf8_length(data.column("text")).to_numpy(zero_copy_only=False)))
    if removed is not None and "text" in removed.column_names:
        lengths = pc.utf8_length(removed.column("text")).to_numpy(zero_copy_only=False)
        duplicate = pc.is_valid(removed.column("duplicate_of")).to_numpy(zero_copy_only=False)
        series.append(("duplicate", lengths[duplicate]))
        series.append(("filtered", lengths[~duplicate]))
    series = [(name, values) for name, values in series if len(values)]
    if not series:
        return "<p class='note'>No documents.</p>"
    high = max(int(values.max()) for _, values in series)
    bins = np.logspace(0, np.log10(max(high, 10)) + 0.01, 50)
    chart = histogram(
        [(name, np.maximum(values, 1)) for name, values in series],
        "Document length by bucket",
        "characters per document",
        bins=bins,
        log_x=True,
    )
    rows = "".join(
        f"<tr><td>{name}</td><td class='n'>{len(v):,}</td><td class='n'>{int(np.median(v)):,}</td>"
        f"<td class='n'>{int(np.percentile(v, 5)):,}</td><td class='n'>{int(np.percentile(v, 95)):,}</td></tr>"
        for name, v in series
    )
    table = f"<table><tr><th>bucket</th><th>documents</th><th>median</th><th>p5</th><th>p95</th></tr>{rows}</table>"
    return table + img(chart, "Histogram of document lengths")


def cluster_sizes(data: pa.Table | None, removed: pa.Table | None) -> tuple[Counter[int], str]:
    """Cluster size → number of clusters: the ``cluster_size`` column when a stage wrote it,
    else 1 + the duplicates that point at each kept document."""
    if data is not None and "cluster_size" in data.column_names:
        sizes = [int(v) for v in data.column("cluster_size").to_pylist() if v is not None]
        return Counter(sizes), "cluster_size column of the kept documents"
    pointers: Counter[str] = Counter()
    if removed is not None and "duplicate_of" in removed.column_names:
        pointers.update(v for v in removed.column("duplicate_of").to_pylist() if v is not None)
    sizes = Counter(1 + count for count in pointers.values())
    return sizes, "1 + removed duplicates pointing at each kept document (duplicate_of)"


def _clusters(data: pa.Table | None, removed: pa.Table | None) -> str:
    sizes, how = cluster_sizes(data, removed)
    multi = {size: n for size, n in sorted(sizes.items()) if size > 1}
    if not multi:
        return f"<p class='note'>No duplicate clusters (sizes from the {html.escape(how)}).</p>"
    rows = "".join(f"<tr><td class='n'>{size}</td><td class='n'>{n:,}</td></tr>" for size, n in multi.items())
    table = f"<table><tr><th>cluster size</th><th>clusters</th></tr>{rows}</table>"
    labels = [str(size) for size in multi]
    chart = bar_chart(labels, list(multi.values()), "clusters", "Duplicate cluster sizes (documents per cluster)")
    return f"<p class='note'>Sizes from the {html.escape(how)}.</p>" + table + img(chart, "Cluster size chart")


def _samples(
    data: pa.Table | None,
    removed: pa.Table | None,
    rejected: pa.Table | None,
    per_bucket: int,
    manifest: dict[str, Any],
) -> str:
    if per_bucket == 0:
        return "<p class='note'>Samples disabled (output.report.samples_per_bucket = 0).</p>"
    seed = str(manifest["config"].get("seed", 0))
    parts = []
    if data is not None:
        parts.append(_sample_block("kept", _pick(data.to_pylist(), per_bucket, seed, "id")))
    if removed is not None:
        by_reason: dict[str, list[dict[str, Any]]] = {}
        for row in removed.to_pylist():
            by_reason.setdefault(row["reason"], []).append(row)
        for reason in sorted(by_reason):
            kind = "duplicate" if by_reason[reason][0].get("duplicate_of") is not None else "filtered"
            parts.append(_sample_block(f"{kind}: {reason}", _pick(by_reason[reason], per_bucket, seed, "id")))
    if rejected is not None:
        by_stage: dict[str, list[dict[str, Any]]] = {}
        for row in rejected.to_pylist():
            by_stage.setdefault(row["stage"], []).append(row)
        for stage in sorted(by_stage):
            picked = _pick(by_stage[stage], per_bucket, seed, "source", "offset")
            parts.append(_sample_block(f"rejected: {stage}", picked))
    return "".join(parts) or "<p class='note'>No documents.</p>"


def _pick(rows: list[dict[str, Any]], n: int, seed: str, *keys: str) -> list[dict[str, Any]]:
    """A deterministic spread: the rows whose hash of (seed, key) is smallest."""

    def rank(row: dict[str, Any]) -> int:
        material = "\x00".join([seed, *(str(row.get(k)) for k in keys)])
        return xxhash.xxh64_intdigest(material.encode("utf-8", "surrogatepass"))

    return sorted(rows, key=rank)[:n]


def _sample_block(label: str, rows: list[dict[str, Any]]) -> str:
    items = []
    for row in rows:
        fields = [(k, row.get(k)) for k in ("id", "doc_id", "url", "source", "offset", "reason", "duplicate_of")]
        fields += [(k, row.get(k)) for k in ("stage", "error") if k in row]
        meta = " · ".join(f"<b>{k}</b> {html.escape(str(v))}" for k, v in fields if v not in (None, ""))
        text = row.get("text")
        if text is None and isinstance(row.get("raw"), bytes):
            text = row["raw"].decode("utf-8", "replace")
        text = text or ""
        shown = text[:_SAMPLE_CHARS] + (
            f" … [{len(text) - _SAMPLE_CHARS:,} more characters]" if len(text) > _SAMPLE_CHARS else ""
        )
        items.append(f"<div class='doc'><div class='meta'>{meta}</div><pre>{html.escape(shown)}</pre></div>")
    return f"<h3>{html.escape(label)}</h3>" + "".join(items)


def _safe(render: Callable[[], str]) -> str:
    try:
        return render()
    except Exception as error:  # one broken section must not cost the whole report (or the run)
        return f"<p class='error'>This section failed to render: {html.escape(type(error).__name__)}: " + (
            f"{html.escape(str(error))}</p>"
        )


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


_STYLE = """
body{font-family:system-ui,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.total td{font-weight:600}tr.reason td{color:#444}
table.facts th{background:#f6f6f6}.note{color:#555;font-size:.92em}.ok{color:#1a7f37}.error{color:#b00020}
img.plot{display:block;max-width:100%;margin:.8em 0}
.doc{border:1px solid #e2e2e2;border-radius:4px;margin:.5em 0;padding:.4em .6em;background:#fafafa}
.doc .meta{font-size:.85em;color:#444;margin-bottom:.3em;word-break:break-all}
.doc pre{white-space:pre-wrap;word-wrap:break-word;margin:0;font-size:.85em;max-height:16em;overflow:auto}
"""

_PAGE_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
"""
