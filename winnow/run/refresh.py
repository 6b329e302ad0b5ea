"""``winnow refresh``: grow a curated corpus from new input files only, one numbered version at a time.

A refresh fingerprints every input file (path, size, content hash), runs the normal pipeline
on the files no committed version has processed, and writes the result as the next version
``<output>/vNNNN/`` (shards, ``manifest.json``, ``report.html``, ``DATASET_CARD.md``). New
documents are deduplicated against everything accepted before:

* exact: a keyed join of the new documents' text hashes with the accepted hashes kept under
  the state dir (``hashes/vNNNN/*.parquet``), before the within-version dedup; a match is
  removed as ``dedup:exact`` with ``duplicate_of`` = the earlier version's id;
* near (MinHash): when ``dedup.minhash`` is configured, its ``index_dir`` is pointed at the
  state dir, so the band index of earlier versions is matched and extended.

Keep policy across versions (deterministic): earlier versions are never rewritten, so a text
already accepted always keeps its first accepted copy; inside one version the config's
``dedup.exact.keep`` rule picks among new copies. Compared with one run over all inputs, the
kept texts and every count are the same; the kept *copy* of a duplicated text (hence its id)
can differ when a later batch holds a copy that the keep rule would have preferred.

Commit protocol: version directory (staged, then moved; its ``manifest.json`` last) → accepted
hashes moved into ``hashes/`` → ``state.json`` atomically replaced (the commit) → the corpus
``manifest.json`` and ``DATASET_CARD.md`` at the top of the output. A crash anywhere before
the commit leaves the previous state in force; the next refresh resumes the version when its
pipeline had finished, and otherwise discards and redoes it, with the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

import winnow
from winnow.beam.contract import KEPT, Document, StageSpec
from winnow.beam.write import WriteShards, atomic_write_bytes
from winnow.config import WinnowConfig
from winnow.core.config import ShardingConfig
from winnow.report.card import corpus_card
from winnow.run.execute import (
    CARD,
    MANIFEST,
    NothingStagedError,
    RunResult,
    file_sha256,
    input_files,
    read_json,
    remove_tree,
    run_identity,
    run_pipeline,
    staged_run_complete,
)
from winnow.run.registry import select_stages
from winnow.run.state import (
    ACCEPTED_SCHEMA,
    HASHES,
    MINHASH_INDEX,
    STAGING,
    InputFingerprint,
    RefreshState,
    StateError,
    VersionRecord,
    fingerprint,
    load_state,
    save_state,
    state_lock,
)
from winnow.stages.dedup.across_versions import AcrossVersions

CORPUS_KIND = "winnow-refresh-corpus"
HASH_SUMMARY = "_hashes.json"
PENDING = "_pending.json"
KEEP_POLICY = (
    "a document whose text hash an earlier version accepted is removed as `dedup:exact` with `duplicate_of` = "
    "that version's id; earlier versions are never rewritten; inside one version `dedup.exact.keep` picks the copy."
)
# Accepted hashes per Parquet file: ~100 bytes a row, so files of ~100 MB.
_HASHES_PER_FILE = 1_000_000


def version_name(version: int) -> str:
    return f"v{version:04d}"


@dataclass
class RefreshResult:
    """What a refresh did. ``version`` is None when there was nothing new."""

    version: int | None
    output_dir: str
    state_dir: str
    corpus: dict[str, Any]
    new_inputs: list[InputFingerprint] = field(default_factory=list)
    run: RunResult | None = None
    processed_inputs: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def submitted_only(self) -> bool:
        return bool(self.run and self.run.submitted_only)


def _accepted_row(doc: Document, version: int) -> list[dict[str, Any]]:
    if "html" in doc and not doc.get("text"):
        return []  # the writer rejects these (no extract stage): they are not accepted
    return [{"text_hash": doc["text_hash"], "id": doc["id"], "version": version}]


def _write_hash_summary(files: list[dict[str, Any]], path: str) -> None:
    files = sorted(files, key=lambda f: f["file"])
    atomic_write_bytes(path, json.dumps({"files": files}, indent=1, sort_keys=True).encode())


class RecordAccepted(beam.PTransform):
    """The last stage of a refresh, plus a side branch writing (text_hash, id, version) of what it keeps."""

    def __init__(self, inner: beam.PTransform, directory: str, version: int):
        super().__init__()
        self.inner = inner
        self.directory = directory
        self.version = version
        self.tables = getattr(inner, "tables", {}) or {}  # contexts, dd, … of the wrapped stage

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        out = docs | "Stage" >> self.inner
        files = (
            out[KEPT]
            | "AcceptedRows" >> beam.FlatMap(_accepted_row, self.version)
            | "WriteAccepted"
            >> WriteShards(
                HASHES,
                FileSystems.join(self.directory, HASHES),
                ACCEPTED_SCHEMA,
                ShardingConfig(target_rows=_HASHES_PER_FILE),
                sort_key=lambda row: (row["text_hash"], row["id"]),
                shard_key=lambda row: row["text_hash"].encode(),
            )
        )
        _ = (
            files
            | "CollectAccepted" >> beam.combiners.ToList()
            | "WriteAcceptedSummary" >> beam.Map(_write_hash_summary, FileSystems.join(self.directory, HASH_SUMMARY))
        )
        return out


def _across_versions(section: Any, *, inner: Callable[..., beam.PTransform], accepted: list[str], **kwargs: Any) -> Any:
    return AcrossVersions(inner(section, **kwargs), accepted, section.exact.key)


def _recording(
    section: Any, *, inner: Callable[..., beam.PTransform], directory: str, version: int, **kwargs: Any
) -> Any:
    return RecordAccepted(inner(section, **kwargs), directory, version)


def refresh_stages(
    config: WinnowConfig, stages: list[str] | None, accepted_files: list[str], version: int, hashes_dir: str
) -> list[StageSpec]:
    """The run's stages with dedup wrapped by the cross-version join and the last stage recording what it keeps."""
    selected = select_stages(config, stages)
    if "dedup" not in [s.name for s in selected] or not config.dedup.exact.enabled:
        raise ValueError(
            "refresh dedups new documents against the accepted ones by their exact text hash: "
            "it needs the dedup stage with dedup.exact.enabled"
        )
    specs = [
        replace(s, transform=partial(_across_versions, inner=s.transform, accepted=accepted_files))
        if s.name == "dedup"
        else s
        for s in selected
    ]
    last = specs[-1]
    specs[-1] = replace(
        last, transform=partial(_recording, inner=last.transform, directory=hashes_dir, version=version)
    )
    return specs


# -- driver -------------------------------------------------------------------------------
def settings_hash(config: WinnowConfig) -> str:
    """Hash of the settings that decide what is kept: the config minus inputs, output and runner."""
    payload = config.model_dump(mode="json", exclude={"inputs", "output", "runner"})
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _narrow(config: WinnowConfig, files: list[dict[str, Any]], version_dir: str) -> WinnowConfig:
    """The config of one version: one input per new file, named so that ``source`` (and derived ids)
    come out exactly as in a run over the original globs."""
    narrowed = config.model_copy(deep=True)
    specs = []
    for item in files:
        if any(c in item["path"] for c in "*?["):
            raise StateError(f"input file {item['path']!r} has glob characters in its name; refresh cannot isolate it")
        spec = config.inputs[item["input_index"]]
        prefix = item["source"].rsplit("/", 1)[0] if "/" in item["source"] else None
        if f"{prefix}/{item['path'].rsplit('/', 1)[-1]}" != item["source"] and prefix is not None:
            raise StateError(f"cannot reproduce source {item['source']!r} for {item['path']!r}")
        specs.append(spec.model_copy(update={"paths": [item["path"]], "name": prefix}))
    narrowed.inputs = specs
    narrowed.output.dir = version_dir
    return narrowed


def _minhash_index(config: WinnowConfig, state_dir: str) -> str | None:
    """Point MinHash's persisted band index at the state dir, when the near-dedup stage is configured."""
    minhash = getattr(config.dedup, "minhash", None)
    if minhash is None or not getattr(minhash, "enabled", False) or not hasattr(minhash, "index_dir"):
        return None
    index_dir = FileSystems.join(state_dir, MINHASH_INDEX)
    minhash.index_dir = index_dir
    return index_dir


def _list_tree(directory: str) -> list[str]:
    """Every file under ``directory``, relative to it, sorted."""
    if "://" not in directory:
        if not os.path.isdir(directory):
            return []
        found = []
        for root, _, names in os.walk(directory):
            found += [os.path.relpath(os.path.join(root, n), directory) for n in names]
        return sorted(found)
    try:
        matches = FileSystems.match([FileSystems.join(directory, "**")])[0].metadata_list
    except Exception:
        return []
    return sorted(m.path[len(directory.rstrip("/")) + 1 :] for m in matches)


def _discard_uncommitted(state: RefreshState, output_dir: str, state_dir: str, index_dir: str | None) -> None:
    """Remove what a crashed refresh left for the version after the last commit (never a committed file)."""
    name = version_name(state.last_version + 1)
    remove_tree(FileSystems.join(output_dir, name))
    remove_tree(FileSystems.join(state_dir, HASHES, name))
    remove_tree(FileSystems.join(state_dir, STAGING))
    if index_dir is not None:
        committed = set(state.versions[-1].index_files) if state.versions else set()
        stray = [FileSystems.join(index_dir, f) for f in _list_tree(index_dir) if f not in committed]
        if stray:
            FileSystems.delete(stray)


def _check_output(output_dir: str, state: RefreshState) -> None:
    """The output must be this state's corpus, and every committed version must still be there, unchanged."""
    top = read_json(FileSystems.join(output_dir, MANIFEST))
    if FileSystems.exists(FileSystems.join(output_dir, MANIFEST)) and (top or {}).get("kind") != CORPUS_KIND:
        raise StateError(
            f"{output_dir} holds the output of a `winnow run`, not a refreshed corpus: give refresh its own output dir"
        )
    for record in state.versions:
        path = FileSystems.join(output_dir, record.dir, MANIFEST)
        if file_sha256(path) != record.manifest_sha256:
            raise StateError(
                f"committed version {record.dir} is missing or was changed ({path}); refusing to continue. "
                "Restore it from a backup: nothing was changed."
            )


def _commit_hashes(state_dir: str, staging_dir: str, name: str) -> list[dict[str, Any]]:
    summary = read_json(FileSystems.join(staging_dir, HASH_SUMMARY))
    if summary is None:
        raise StateError(f"accepted hashes of {name} are incomplete ({staging_dir}): rerun to redo the version")
    target_dir = FileSystems.join(state_dir, HASHES, name)
    if not FileSystems.exists(target_dir):
        FileSystems.mkdirs(target_dir)
    committed = []
    for entry in summary["files"]:
        basename = entry["file"].rsplit("/", 1)[-1]
        source = FileSystems.join(staging_dir, entry["file"])
        target = FileSystems.join(target_dir, basename)
        if FileSystems.exists(target):
            FileSystems.delete([target])
        FileSystems.rename([source], [target])
        committed.append({"file": f"{HASHES}/{name}/{basename}", "rows": entry["rows"], "sha256": entry["sha256"]})
    return committed


def _sum_counts(counts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"input": 0, "kept": 0, "repeats": 0, "filtered": 0, "duplicate": 0, "rejected": 0}
    breakdowns: dict[str, dict[str, int]] = {
        "filtered_by_reason": {},
        "duplicate_by_reason": {},
        "rejected_by_stage": {},
    }
    for item in counts:
        for key in ("input", "kept", "filtered", "duplicate", "rejected"):
            total[key] += item[key]
        total["repeats"] += item.get("repeats", 0)
        for key, target in breakdowns.items():
            for reason, count in item[key].items():
                target[reason] = target.get(reason, 0) + count
    total.update({key: dict(sorted(value.items())) for key, value in breakdowns.items()})
    return total


def corpus_manifest(state: RefreshState, output_dir: str) -> dict[str, Any]:
    """The top-level manifest: every committed version, its counts and data shards, and the totals."""
    versions = []
    data_shards = []
    for record in state.versions:
        manifest = read_json(FileSystems.join(output_dir, record.dir, MANIFEST)) or {}
        shards = [f"{record.dir}/{s['file']}" for s in manifest.get("shards", {}).get("data", [])]
        data_shards += shards
        versions.append(
            {
                "version": record.version,
                "dir": record.dir,
                "manifest": f"{record.dir}/{MANIFEST}",
                "manifest_sha256": record.manifest_sha256,
                "inputs": len(record.inputs),
                "input_sources": [fp.source for fp in record.inputs],
                "config_hash": record.config_hash,
                "counts": record.counts,
            }
        )
    return {
        "kind": CORPUS_KIND,
        "winnow_version": winnow.__version__,
        "keep_policy": KEEP_POLICY,
        "versions": versions,
        "totals": _sum_counts(v["counts"] for v in versions),
        "data_shards": data_shards,
        "invariant": "for every version and in total: input == kept + filtered + duplicate + rejected",
    }


def _write_corpus_files(state: RefreshState, config: WinnowConfig, output_dir: str) -> dict[str, Any]:

    corpus = corpus_manifest(state, output_dir)
    if not FileSystems.exists(output_dir):
        FileSystems.mkdirs(output_dir)
    if config.output.report.enabled:
        _write_if_changed(FileSystems.join(output_dir, CARD), corpus_card(corpus, config).encode())
    _write_if_changed(
        FileSystems.join(output_dir, MANIFEST), (json.dumps(corpus, indent=2, sort_keys=True) + "\n").encode()
    )
    return corpus


def _write_if_changed(path: str, payload: bytes) -> None:
    """A refresh with nothing new must not touch the corpus files (it only repairs a stale one)."""
    if file_sha256(path) != hashlib.sha256(payload).hexdigest():
        atomic_write_bytes(path, payload)


def _absolute(path: str) -> str:
    """Local paths absolute (the state names its output dir wherever refresh runs from)."""

    return path.rstrip("/") if "://" in path else os.path.abspath(path)


def refresh(
    config: WinnowConfig,
    state_dir: str,
    stages: list[str] | None = None,
    extra_args: list[str] | None = None,
    on_progress: Callable[[str], None] | None = None,
    *,
    submit_only: bool = False,
    finalize_only: bool = False,
) -> RefreshResult:
    """Process the inputs no committed version has seen into the next version; commit it atomically."""
    state_dir = _absolute(state_dir)
    output_dir = _absolute(config.output.dir)
    config = config.model_copy(deep=True)
    config.output.dir = output_dir
    with state_lock(state_dir):
        state = load_state(state_dir)
        if state.output_dir is not None and state.output_dir != output_dir:
            raise StateError(f"state {state_dir} belongs to output {state.output_dir}, not {output_dir}")
        _check_output(output_dir, state)
        index_dir = _minhash_index(config, state_dir)
        version = state.last_version + 1
        name = version_name(version)
        staging_dir = FileSystems.join(state_dir, STAGING, name)
        warnings = []
        if state.versions and state.versions[-1].config_hash != settings_hash(config):
            warnings.append(
                f"the settings differ from those of {state.versions[-1].dir}: this version is curated differently"
            )

        if finalize_only:
            pending = read_json(FileSystems.join(staging_dir, PENDING))
            if pending is None:
                raise NothingStagedError(f"nothing to finalise: no submitted version {name} under {state_dir}")
            new_files = pending["files"]
            new = [InputFingerprint(**fp) for fp in pending["fingerprints"]]
        else:
            files = input_files(config)
            processed = state.processed()
            pairs = [(f, fingerprint(f["path"], f["source"])) for f in files]
            pairs = [(f, fp) for f, fp in pairs if fp.key not in processed]
            new_files, new = [f for f, _ in pairs], [fp for _, fp in pairs]
            if not new:
                _discard_uncommitted(state, output_dir, state_dir, index_dir)
                corpus = _write_corpus_files(state, config, output_dir) if state.versions else {}
                return RefreshResult(
                    None, output_dir, state_dir, corpus, processed_inputs=len(files), warnings=warnings
                )

        version_dir = FileSystems.join(output_dir, name)
        narrowed = _narrow(config, new_files, version_dir)
        specs = refresh_stages(narrowed, stages, state.hash_paths(state_dir), version, staging_dir)
        identity_extra = {
            "refresh_version": version,
            "accepted": [f["sha256"] for v in state.versions for f in v.hash_files],
            "minhash_index": bool(index_dir),
        }
        # The version's pipeline output and its accepted hashes must both be complete to resume it.
        # A MinHash index appended by a killed pipeline cannot be told complete, so that redoes;
        # --finalize-only follows a job the scheduler saw succeed, so its index appends are whole.
        resumable = (
            (index_dir is None or finalize_only)
            and read_json(FileSystems.join(staging_dir, HASH_SUMMARY)) is not None
            and staged_run_complete(version_dir, run_identity(narrowed, [s.name for s in specs], identity_extra))
        )
        if finalize_only and not resumable:
            raise NothingStagedError(f"version {name} has no complete pipeline output to finalise (did the job fail?)")
        if not resumable:
            _discard_uncommitted(state, output_dir, state_dir, index_dir)
            pending = {"files": new_files, "fingerprints": [asdict(fp) for fp in new]}
            atomic_write_bytes(FileSystems.join(staging_dir, PENDING), json.dumps(pending, indent=1).encode())
        card_extra = {
            "version": f"{name} (inputs not processed by earlier versions)",
            "keep_policy": KEEP_POLICY,
            "earlier_versions": ", ".join(v.dir for v in state.versions) or "none",
        }
        result = run_pipeline(
            narrowed,
            extra_args=extra_args,
            on_progress=on_progress,
            stage_specs=specs,
            identity_extra=identity_extra,
            resume=resumable,
            submit_only=submit_only,
            finalize_only=finalize_only,
            card_extra=card_extra,
        )
        if result.submitted_only:
            return RefreshResult(version, output_dir, state_dir, {}, new, run=result, warnings=warnings)

        record = VersionRecord(
            version=version,
            dir=name,
            inputs=new,
            counts=result.manifest["counts"],
            config_hash=settings_hash(config),
            manifest_sha256=file_sha256(FileSystems.join(version_dir, MANIFEST)) or "",
            hash_files=_commit_hashes(state_dir, staging_dir, name),
            index_files=_list_tree(index_dir) if index_dir else [],
        )
        committed = RefreshState(output_dir=output_dir, versions=[*state.versions, record])
        save_state(state_dir, committed)  # the commit
        remove_tree(FileSystems.join(state_dir, STAGING))
        corpus = _write_corpus_files(committed, config, output_dir)
        return RefreshResult(version, output_dir, state_dir, corpus, new, run=result, warnings=warnings)
