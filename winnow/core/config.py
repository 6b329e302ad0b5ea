"""The base of every config section."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo

from winnow.core.models import PACKAGE_PREFIX, PACKAGE_ROOT_PREFIX, package_file

PACKAGE_PREFIXES = (PACKAGE_PREFIX, PACKAGE_ROOT_PREFIX)


class Section(BaseModel):
    """Base for all config sections: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FieldMapping(Section):
    """Which input fields hold the document's id, text, URL, HTML and metadata."""

    id: str | None = Field(
        "id", description="Input field with a stable document id; null derives one from source path + offset."
    )
    text: str = Field("text", description="Input field with the document text.")
    url: str | None = Field("url", description="Input field with the document URL (optional in the data).")
    html: str | None = Field(
        "html", description="Input field with raw HTML; records with HTML and no text go to the extract stage."
    )
    metadata: list[str] | None = Field(
        None,
        description="Input fields copied into the `metadata` column; null copies every field not mapped above.",
    )


class InputSpec(Section):
    """One input: a set of paths or globs in one format."""

    paths: list[str] = Field(
        ...,
        min_length=1,
        description="Paths or globs, local or on any Beam filesystem (gs://, s3://). "
        "Relative paths in a config file are relative to that file.",
    )
    format: Literal["auto", "jsonl", "parquet", "warc", "wet"] = Field(
        "auto",
        description="File format; `auto` decides by extension (.jsonl[.gz|.zst], .parquet, .warc[.gz], .wet[.gz]).",
    )
    name: str | None = Field(None, description="Prefix for the `source` column; defaults to none.")
    fields: FieldMapping = Field(default_factory=FieldMapping, description="Field mapping for JSONL and Parquet.")
    split_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="Uncompressed JSONL files larger than this are read as parallel byte ranges.",
    )
    max_record_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Records larger than this are rejected instead of parsed."
    )


class ShardingConfig(Section):
    """How kept documents are cut into Parquet shards."""

    target_bytes: int | None = Field(
        256 * 1024 * 1024,
        gt=0,
        description="Target uncompressed text bytes per shard (zstd files come out smaller). "
        "Ignored when `target_rows` is set.",
    )
    target_rows: int | None = Field(None, gt=0, description="Target rows per shard; overrides `target_bytes`.")
    row_group_rows: int = Field(10_000, gt=0, description="Rows per Parquet row group.")
    compression_level: int = Field(3, ge=1, le=22, description="zstd compression level.")


class TokenizerConfig(Section):
    """The tokenizer every token count and budget uses (docs/budgets.md#tokens); recorded in the manifest."""

    path: str = Field(
        "winnow:models/tokenizer/winnow-bpe-32k.json",
        description="A `tokenizers` JSON file: the bundled byte-level BPE, or a local copy of e.g. the Llama-2 or "
        "GPT-NeoX tokenizer the papers used. Never a hub name.",
    )
    eos_token: str = Field("<|endoftext|>", description="End-of-text token appended between packed documents.")


def config_file_path(value: str, base_dir: Any = None) -> str:
    """A file a config names, as the run will open it: remote (``gs://…``) and package (``winnow:…``)
    paths unchanged, a relative path resolved against ``base_dir`` (the config file's folder, as for
    inputs), else kept as given (relative to the working directory)."""
    if "://" in value or value.startswith(PACKAGE_PREFIXES) or os.path.isabs(value) or base_dir is None:
        return value
    return str((Path(base_dir) / value).resolve())


def local_config_file(path: str) -> Path | None:
    """The local file behind a config path (package data included); None for a remote path."""
    if "://" in path:
        return None
    if path.startswith(PACKAGE_PREFIXES):
        return package_file(path) or Path(path)  # a missing package file reads as "not found"
    return Path(path).expanduser()


def context_base_dir(info: ValidationInfo) -> Any:
    """The folder relative paths resolve against, when ``parse_config`` passed one in the validation context."""
    return (info.context or {}).get("base_dir") if isinstance(info.context, dict) else None
