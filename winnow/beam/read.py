"""Readers: JSONL (plain, .gz, .zst) and Parquet into Arrow batches of documents, WARC/WET into dicts.

Globs are expanded when the graph is built, so a missing path or an empty glob is an
error before any data moves. Each file becomes one or more read tasks (byte ranges of
uncompressed JSONL, row groups of Parquet, whole compressed files), reshuffled so the
runner spreads them over workers. Every bad record becomes a dead-letter record with its
source file, byte offset and a one-line reason; a reader never raises on bad data.

JSONL is read in blocks of ``_BLOCK_BYTES`` cut into lines, and each line is parsed with orjson
(several times faster than ``json``). orjson and ``json`` differ only where orjson refuses
(NaN, Infinity, lone surrogates, invalid UTF-8: those lines go through ``json``, which then accepts
or rejects them exactly as before) and on integers beyond 64 bits, which orjson returns as floats:
a record with a float that large is parsed again with ``json``. Documents leave in batches of
``batch_rows`` documents or ``batch_bytes`` text bytes (``winnow.core.batches``); the batching
never changes a document.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

import apache_beam as beam
import orjson
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from winnow.beam.contract import KEPT, REJECTED, counter
from winnow.core.batches import elements_of
from winnow.core.config import InputSpec
from winnow.core.schemas import derive_id, metadata_json, rejected_record

READ_STAGE = "read"
_GLOB_CHARS = "*?["
_SNIFF_BYTES = 8192
_BLOCK_BYTES = 8 << 20
_INT64_FLOAT = 2.0**63  # orjson turns integers beyond 64 bits into floats; json keeps them exact


class InputError(ValueError):
    """An input that cannot be read at all (missing path, empty glob): fails before the run."""


@dataclass(frozen=True)
class ReadTask:
    """One unit of reading: a whole file, a byte range of a plain JSONL file, or a row group."""

    path: str
    source: str
    format: str
    input_index: int
    start: int = 0
    end: int = -1
    row_group: int = -1


def detect_format(path: str, declared: str) -> str:
    if declared != "auto":
        return declared
    name = path.lower()
    for suffix in (".gz", ".zst", ".zstd"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".wet"):
        return "wet"
    if name.endswith((".warc", ".arc")):
        return "warc"
    return "jsonl"


def _glob_root(pattern: str) -> str:
    cut = min((pattern.find(c) for c in _GLOB_CHARS if c in pattern), default=-1)
    if cut == -1:
        return pattern.rsplit("/", 1)[0] if "/" in pattern else ""
    return pattern[:cut].rsplit("/", 1)[0] if "/" in pattern[:cut] else ""


def _relative(path: str, root: str) -> str:
    if root and path.startswith(root.rstrip("/") + "/"):
        return path[len(root.rstrip("/")) + 1 :]
    return path.rsplit("/", 1)[-1]


def expand_inputs(specs: list[InputSpec]) -> list[ReadTask]:
    """Match every input glob now; raise ``InputError`` for anything that matches nothing.

    ``source`` is the path relative to the glob's fixed prefix (plus the input's name), so
    derived ids do not depend on where the corpus is mounted.
    """
    if not specs:
        raise InputError("no inputs: give --input PATH/GLOB or an `inputs:` section in the config")
    tasks: list[ReadTask] = []
    seen: set[str] = set()
    for index, spec in enumerate(specs):
        for pattern in spec.paths:
            try:
                matches = FileSystems.match([pattern])[0].metadata_list
            except Exception as error:  # Beam raises BeamIOError for unknown schemes and missing dirs
                raise InputError(f"input {pattern!r} cannot be listed: {error}") from None
            files = sorted((m for m in matches if not m.path.endswith("/")), key=lambda m: m.path)
            if not files:
                kind = "glob matched no files" if any(c in pattern for c in _GLOB_CHARS) else "path does not exist"
                raise InputError(f"input {pattern!r}: {kind}")
            root = _glob_root(pattern)
            for meta in files:
                if meta.path in seen:
                    continue
                seen.add(meta.path)
                source = _relative(meta.path, root)
                if spec.name:
                    source = f"{spec.name}/{source}"
                fmt = detect_format(meta.path, spec.format)
                tasks.extend(_split(ReadTask(meta.path, source, fmt, index), meta.size_in_bytes, spec))
    return tasks


def _split(task: ReadTask, size: int, spec: InputSpec) -> list[ReadTask]:
    """Byte ranges for big plain JSONL, row groups for Parquet, the whole file otherwise."""
    if task.format == "jsonl" and _compression(task.path) is None and size > spec.split_bytes:
        return [
            replace(task, start=start, end=min(start + spec.split_bytes, size))
            for start in range(0, size, spec.split_bytes)
        ]
    if task.format == "parquet":
        try:
            with FileSystems.open(task.path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                groups = pq.ParquetFile(handle).metadata.num_row_groups
        except Exception:
            return [task]  # the reader rejects the file with the real error
        return [replace(task, row_group=i) for i in range(groups)] or [task]
    return [task]


def _compression(path: str) -> str | None:
    lower = path.lower()
    if lower.endswith(".gz"):
        return "gzip"
    if lower.endswith((".zst", ".zstd")):
        return "zstd"
    return None


def _open_decompressed(path: str) -> BinaryIO:
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    kind = _compression(path)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if kind == "zstd":
        import zstandard  # lazy: zstandard only for .zst inputs

        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
        return io.BufferedReader(reader, buffer_size=1 << 20)  # type: ignore[arg-type]
    return raw  # type: ignore[return-value]


class DocumentBuilder:
    """Turns one parsed input record into a document dict, or explains why it cannot."""

    def __init__(self, spec: InputSpec):
        self.fields = spec.fields
        mapped = [self.fields.id, self.fields.text, self.fields.url, self.fields.html]
        self._mapped = {name for name in mapped if name}

    def build(self, record: Any, source: str, offset: int) -> dict[str, Any]:
        """Raises ``ValueError`` with a one-line reason for a record that is not a document."""
        if not isinstance(record, dict):
            raise ValueError(f"record is a JSON {_json_type(record)}, expected an object")
        text = record.get(self.fields.text)
        html = record.get(self.fields.html) if self.fields.html else None
        if text is None and html is None:
            raise ValueError(f"record has no {self.fields.text!r} field (or it is null)")
        if text is not None and not isinstance(text, str):
            raise ValueError(f"field {self.fields.text!r} must be a string, got {_json_type(text)}")
        if html is not None and not isinstance(html, (str, bytes)):
            raise ValueError(f"field {self.fields.html!r} must be a string, got {_json_type(html)}")
        if text is not None and not text.strip() and not html:
            raise ValueError(f"field {self.fields.text!r} is empty")
        doc_id = record.get(self.fields.id) if self.fields.id else None
        if doc_id is None or doc_id == "":
            doc_id = derive_id(source, offset)
        elif isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
            raise ValueError(f"field {self.fields.id!r} must be a string or integer, got {_json_type(doc_id)}")
        url = record.get(self.fields.url) if self.fields.url else None
        if url is not None and not isinstance(url, str):
            url = str(url)
        if self.fields.metadata is None:
            metadata = {k: v for k, v in record.items() if k not in self._mapped}
        else:
            metadata = {k: record[k] for k in self.fields.metadata if k in record}
        doc: dict[str, Any] = {
            "id": str(doc_id),
            "text": text if text is not None else "",
            "url": url,
            "source": source,
            "metadata": metadata,
        }
        if html is not None and (text is None or not text.strip()):
            doc["html"] = html
        return doc


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _has_huge_float(value: Any) -> bool:
    if isinstance(value, float):
        return abs(value) >= _INT64_FLOAT
    if isinstance(value, dict):
        return any(_has_huge_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_huge_float(v) for v in value)
    return False


def _lines(stream: BinaryIO, offset: int) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line with its newline) of every line from ``offset`` on, read in large blocks.

    ``read1`` returns what one read of the underlying file decompresses, so the lines before a
    truncated or corrupt part still come out before the error does. A line longer than a block is
    gathered in pieces and joined once."""
    read = getattr(stream, "read1", stream.read)
    pending: list[bytes] = []
    while block := read(_BLOCK_BYTES):
        lines = block.split(b"\n")
        if len(lines) == 1:
            pending.append(block)
            continue
        if pending:
            pending.append(lines[0])
            lines[0] = b"".join(pending)
            pending = []
        last = lines.pop()
        for line in lines:
            yield offset, line + b"\n"
            offset += len(line) + 1
        if last:
            pending.append(last)
    if pending:
        yield offset, b"".join(pending)


class _BatchBuffer:
    """Documents of one read task, cut into Arrow batches of ``rows`` documents or ``size`` text bytes."""

    def __init__(self, rows: int, size: int):
        self.rows, self.size = rows, size
        self.docs: list[dict[str, Any]] = []
        self.bytes = 0

    def add(self, doc: dict[str, Any]) -> list[Any]:
        doc["metadata"] = metadata_json(doc["metadata"]) if doc["metadata"] else "{}"
        self.docs.append(doc)
        self.bytes += len(doc["text"]) + len(doc.get("html") or "")
        return self.flush() if len(self.docs) >= self.rows or self.bytes >= self.size else []

    def flush(self) -> list[Any]:
        elements = elements_of(self.docs)
        self.docs, self.bytes = [], 0
        return elements


class ReadDocuments(beam.DoFn):
    """Reads one ``ReadTask``; yields Arrow batches of documents (main; WARC: single documents) and
    dead-letter records (``rejected``)."""

    def __init__(self, specs: list[InputSpec]):
        self._specs = specs
        self._docs = counter("read:documents")
        self._bad = counter("read:rejected")

    def process(self, task: ReadTask) -> Iterator[Any]:
        spec = self._specs[task.input_index]
        builder = DocumentBuilder(spec)
        readers = {"jsonl": self._jsonl, "parquet": self._parquet, "warc": self._warc, "wet": self._warc}
        batches = task.format in ("jsonl", "parquet")
        buffer = _BatchBuffer(spec.batch_rows, spec.batch_bytes)
        for item in readers[task.format](task, spec, builder):
            if isinstance(item, beam.pvalue.TaggedOutput):
                self._bad.inc()
                yield item
                continue
            self._docs.inc()
            if batches:
                yield from buffer.add(item)
            else:
                yield item
        yield from buffer.flush()

    def _reject(self, task: ReadTask, offset: int | None, raw: bytes, error: str) -> beam.pvalue.TaggedOutput:
        return beam.pvalue.TaggedOutput(
            REJECTED, rejected_record(source=task.source, offset=offset, raw=raw, error=error, stage=READ_STAGE)
        )

    # -- JSONL -------------------------------------------------------------------------
    def _jsonl(self, task: ReadTask, spec: InputSpec, builder: DocumentBuilder) -> Iterator[Any]:
        try:
            stream = _open_decompressed(task.path)
        except Exception as error:
            yield self._reject(task, None, b"", f"cannot open file: {type(error).__name__}: {error}")
            return
        with stream:
            offset = 0
            try:
                if task.start > 0:
                    # A line belongs to the range in which it starts: skip the partial line.
                    stream.seek(task.start - 1)
                    offset = task.start - 1 + len(stream.readline())
                first = True
                for line_offset, line in _lines(stream, offset):
                    offset = line_offset
                    if task.end >= 0 and offset >= task.end:
                        break
                    offset += len(line)
                    if first and task.start == 0:
                        first = False
                        if b"\x00" in line[:_SNIFF_BYTES]:
                            yield self._reject(task, 0, line[:_SNIFF_BYTES], "binary file (NUL bytes), not JSON lines")
                            return
                    if not line.strip():
                        continue
                    if len(line) > spec.max_record_bytes:
                        yield self._reject(
                            task, line_offset, line, f"record of {len(line)} bytes exceeds max_record_bytes"
                        )
                        continue
                    yield self._parse_line(task, line, line_offset, builder)
            except (EOFError, OSError, zlib.error, ValueError) as error:
                message = str(error) or type(error).__name__
                yield self._reject(
                    task, offset, b"", f"file unreadable after byte {offset} (truncated or corrupt): {message}"
                )

    def _parse_line(self, task: ReadTask, line: bytes, offset: int, builder: DocumentBuilder) -> Any:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None  # json gives the verdict, and the same message as always
        if record is not None and not _has_huge_float(record):
            try:
                return builder.build(record, task.source, offset)
            except ValueError as error:
                return self._reject(task, offset, line, str(error))
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as error:
            return self._reject(task, offset, line, f"invalid UTF-8 at byte {error.start} of the line")
        try:
            record = json.loads(decoded)
        except json.JSONDecodeError as error:
            return self._reject(task, offset, line, f"malformed JSON: {error.msg} (column {error.colno})")
        except RecursionError:
            return self._reject(task, offset, line, "malformed JSON: nested too deeply")
        try:
            # orjson refused the line; json accepts a lone surrogate escape, which no UTF-8 consumer
            # (Beam's coders, Arrow, Parquet) can hold.
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return self._reject(task, offset, line, "record holds a lone surrogate (\\udXXX escape): not valid Unicode")
        try:
            return builder.build(record, task.source, offset)
        except ValueError as error:
            return self._reject(task, offset, line, str(error))

    # -- Parquet -----------------------------------------------------------------------
    def _parquet(self, task: ReadTask, spec: InputSpec, builder: DocumentBuilder) -> Iterator[Any]:

        try:
            with FileSystems.open(task.path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                parquet = pq.ParquetFile(handle)
                table = parquet.read_row_group(task.row_group) if task.row_group >= 0 else parquet.read()
                base = sum(parquet.metadata.row_group(i).num_rows for i in range(max(task.row_group, 0)))
        except Exception as error:
            yield self._reject(task, None, b"", f"cannot read Parquet: {type(error).__name__}: {error}")
            return
        for index, row in enumerate(table.to_pylist()):
            offset = base + index  # row number within the file
            try:
                yield builder.build(row, task.source, offset)
            except ValueError as error:
                raw = json.dumps(row, default=str, ensure_ascii=False).encode()
                yield self._reject(task, offset, raw, str(error))

    # -- WARC / WET ----------------------------------------------------------------------
    def _warc(self, task: ReadTask, spec: InputSpec, builder: DocumentBuilder) -> Iterator[Any]:
        from fastwarc.warc import ArchiveIterator, WarcRecordType  # lazy: FastWARC only for WARC inputs

        wanted = WarcRecordType.conversion if task.format == "wet" else WarcRecordType.response
        skipped = counter("read:warc_records_skipped")
        try:
            raw = FileSystems.open(task.path, compression_type=CompressionTypes.UNCOMPRESSED)
        except Exception as error:
            yield self._reject(task, None, b"", f"cannot open file: {type(error).__name__}: {error}")
            return
        offset = 0
        with raw:
            try:
                for record in ArchiveIterator(raw, parse_http=task.format != "wet"):
                    offset = record.stream_pos
                    if record.record_type != wanted:
                        skipped.inc()  # warcinfo/request/metadata records are not documents
                        continue
                    yield self._warc_document(task, record, builder)
            except Exception as error:
                yield self._reject(
                    task, offset, b"", f"WARC unreadable after byte {offset}: {type(error).__name__}: {error}"
                )

    def _warc_document(self, task: ReadTask, record: Any, builder: DocumentBuilder) -> Any:
        offset = record.stream_pos
        try:
            payload = record.reader.read()
        except Exception as error:
            return self._reject(task, offset, b"", f"WARC record payload unreadable: {type(error).__name__}: {error}")
        headers = record.headers
        record_id = (headers.get("WARC-Record-ID") or "").strip("<>") or derive_id(task.source, offset)
        metadata: dict[str, Any] = {"warc_date": headers.get("WARC-Date"), "warc_record_id": record_id}
        doc: dict[str, Any] = {
            "id": record_id,
            "text": "",
            "url": (headers.get("WARC-Target-URI") or "").strip("<>") or None,
            "source": task.source,
            "metadata": metadata,
        }
        if task.format == "wet":
            try:
                doc["text"] = payload.decode("utf-8")
            except UnicodeDecodeError:
                return self._reject(task, offset, payload, "WET conversion record is not valid UTF-8")
            if not doc["text"].strip():
                return self._reject(task, offset, payload, "WET conversion record is empty")
            return doc
        http = record.http_headers
        metadata["content_type"] = http.get("Content-Type") if http is not None else None
        metadata["http_status"] = http.status_code if http is not None else None
        if not payload:
            return self._reject(task, offset, b"", "WARC response record has an empty body")
        doc["html"] = payload
        return doc


class ReadInputs(beam.PTransform):
    """All configured inputs → documents; returns ``{"kept": docs, "rejected": dead letters}``."""

    def __init__(self, specs: list[InputSpec]):
        super().__init__()
        self.specs = specs
        self.tasks = expand_inputs(specs)

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        outputs = (
            pbegin
            | "ReadTasks" >> beam.Create(self.tasks)
            | "SpreadTasks" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadDocuments(self.specs)).with_outputs(REJECTED, main=KEPT)
        )
        return {KEPT: outputs[KEPT], REJECTED: outputs[REJECTED]}
