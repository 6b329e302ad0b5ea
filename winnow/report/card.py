"""``DATASET_CARD.md``: sources, filters with their thresholds, counts and declared licenses.

Written from the manifest and the resolved config only, so the card is as deterministic as
the manifest (no timestamps) and states exactly the settings that produced the shards.
Licenses come from ``output.report.license`` and ``output.report.source_licenses``; winnow
never guesses one.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

from winnow.config import WinnowConfig

_NOT_DECLARED = "not declared in the config"


def source_license(spec: dict[str, Any], licenses: dict[str, str]) -> str:
    """The license declared for an input: by its ``name``, else by a glob matching one of its paths."""
    if spec.get("name") and spec["name"] in licenses:
        return licenses[spec["name"]]
    for pattern, license_name in licenses.items():
        if any(path == pattern or fnmatch.fnmatch(path, pattern) for path in spec["paths"]):
            return license_name
    return _NOT_DECLARED


def _flatten(section: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(section, dict):
        items: list[tuple[str, Any]] = []
        for key, value in section.items():
            items.extend(_flatten(value, f"{prefix}.{key}" if prefix else key))
        return items
    return [(prefix, section)]


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def counts_table(counts: dict[str, Any]) -> str:
    rows: list[list[Any]] = [["input", "", f"{counts['input']:,}"], ["kept", "", f"{counts['kept']:,}"]]
    for bucket, key in (
        ("filtered", "filtered_by_reason"),
        ("duplicate", "duplicate_by_reason"),
        ("rejected", "rejected_by_stage"),
    ):
        rows.append([bucket, "", f"{counts[bucket]:,}"])
        rows += [["", f"`{reason}`", f"{count:,}"] for reason, count in counts[key].items()]
    return _table(["outcome", "rule", "documents"], rows)


def dataset_card(manifest: dict[str, Any], config: WinnowConfig, extra: dict[str, Any] | None = None) -> str:
    """The card of one run (or one refresh version, with ``extra`` describing the refresh)."""
    resolved = manifest["config"]
    report = resolved["output"]["report"]
    title = report.get("title") or config.output.dir.rstrip("/").rsplit("/", 1)[-1]
    counts = manifest["counts"]
    shards = manifest["shards"]
    out = [f"# Dataset card: {title}", ""]
    out += [
        f"Curated by winnow {manifest['winnow_version']} (document schema {manifest['schema_version']}), "
        f"config hash `{manifest['config_hash'][:16]}`. Every input record is accounted for: "
        f"input {counts['input']:,} = kept {counts['kept']:,} + filtered {counts['filtered']:,} + "
        f"duplicate {counts['duplicate']:,} + rejected {counts['rejected']:,}.",
        "",
    ]
    if extra:
        out += ["## Refresh", ""]
        out += [f"- {key.replace('_', ' ')}: {value}" for key, value in extra.items()]
        out.append("")
    out += ["## Sources", ""]
    licenses = report.get("source_licenses") or {}
    rows = [
        [
            spec.get("name") or "",
            ", ".join(f"`{p}`" for p in spec["paths"]),
            spec["format"],
            source_license(spec, licenses),
        ]
        for spec in resolved["inputs"]
    ]
    out += [_table(["input", "paths", "format", "license"], rows), ""]
    out += ["## Processing", ""]
    out.append("Stages, in order: " + " → ".join(["read", *manifest["stages"], "write"]) + ".")
    out.append("Each stage's settings, thresholds included, exactly as resolved for this run:")
    out.append("")
    for stage in manifest["stages"]:
        section = resolved.get(stage)
        if not isinstance(section, dict):
            continue
        settings = [
            [f"`{stage}.{key}`", f"`{json.dumps(value, ensure_ascii=False)}`"] for key, value in _flatten(section)
        ]
        out += [f"### {stage}", "", _table(["setting", "value"], settings), ""]
    out += ["## Counts", "", counts_table(counts), ""]
    out += ["## Files", ""]
    out.append(
        _table(
            ["kind", "shards", "rows", "bytes"],
            [
                [
                    kind,
                    len(shards[kind]),
                    f"{sum(s['rows'] for s in shards[kind]):,}",
                    f"{sum(s['bytes'] for s in shards[kind]):,}",
                ]
                for kind in ("data", "removed", "rejected")
            ],
        )
    )
    out += ["", "Columns of the kept documents: " + ", ".join(f"`{c}`" for c in manifest["columns"]) + ".", ""]
    out += ["## License", ""]
    out.append(f"Dataset license: {report.get('license') or _NOT_DECLARED}.")
    out.append(
        "The license of each source is listed under Sources as declared by the config "
        "(`output.report.source_licenses`); the content stays subject to its sources' terms."
    )
    return "\n".join(out) + "\n"


def corpus_card(top: dict[str, Any], config: WinnowConfig) -> str:
    """The card of a refreshed corpus: every version with its inputs and counts, and the totals."""
    report = config.output.report
    title = report.title or config.output.dir.rstrip("/").rsplit("/", 1)[-1]
    totals = top["totals"]
    out = [f"# Dataset card: {title}", ""]
    out.append(
        f"A corpus grown by `winnow refresh` in {len(top['versions'])} version(s). Each version holds only "
        "documents not accepted by an earlier one; the corpus is the union of every version's `data/` shards. "
        f"Keep policy: {top['keep_policy']}"
    )
    out += ["", "## Versions", ""]
    rows = [
        [
            v["dir"],
            v["inputs"],
            f"{v['counts']['input']:,}",
            f"{v['counts']['kept']:,}",
            f"{v['counts']['filtered']:,}",
            f"{v['counts']['duplicate']:,}",
            f"{v['counts']['rejected']:,}",
            f"`{v['config_hash'][:12]}`",
        ]
        for v in top["versions"]
    ]
    out.append(_table(["version", "input files", "input", "kept", "filtered", "duplicate", "rejected", "config"], rows))
    out += ["", "Per-version sources, settings and thresholds: `vNNNN/DATASET_CARD.md`; plots: `vNNNN/report.html`."]
    out += ["", "## Totals", "", counts_table(totals), ""]
    out += ["## Sources and licenses", ""]
    licenses = report.source_licenses
    rows = [
        [spec.name or "", ", ".join(f"`{p}`" for p in spec.paths), source_license(spec.model_dump(), licenses)]
        for spec in config.inputs
    ]
    out += [_table(["input", "paths", "license"], rows), ""]
    out.append(f"Dataset license: {report.license or _NOT_DECLARED}.")
    return "\n".join(out) + "\n"
