"""The base of every config section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
