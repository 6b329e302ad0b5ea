"""The ``output.tokens`` config section: training-ready token files written beside the Parquet shards."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from winnow.core.config import Section

TokenFormat = Literal["megatron", "mds", "parquet"]

# An MDS shard addresses its samples with uint32 offsets; a part holds at most target_bytes plus one
# sequence, so the target leaves room below 4 GiB for a long document and the shard header.
MDS_MAX_TARGET_BYTES = 2 << 30


class TokenOutputConfig(Section):
    """Token ids of the kept documents (and of packed contexts or DD pieces) in trainer formats
    (docs/token-output.md)."""

    formats: list[TokenFormat] = Field(
        default_factory=list,
        description="Formats to write under `tokens/`: any of megatron (Megatron-Core .bin/.idx), mds "
        "(MosaicML Streaming shards), parquet. Empty: no token output.",
    )
    dtype: Literal["auto", "uint16", "uint32"] = Field(
        "auto", description="Token id type; auto: uint16 when every id of the tokenizer fits, else uint32."
    )
    append_eos: bool = Field(
        True,
        description="End each document sequence with the tokenizer's EOS. Packed contexts and DD pieces always "
        "hold the EOS the pack stage put between documents.",
    )
    target_bytes: int = Field(
        1_000_000_000,
        gt=0,
        description="Token bytes per file; a sequence goes to part start_byte // target_bytes of its dataset, "
        "and the manifest lists every part.",
    )

    @field_validator("formats")
    @classmethod
    def _each_format_once(cls, formats: list[str]) -> list[str]:
        return list(dict.fromkeys(formats))

    @model_validator(mode="after")
    def _mds_offsets_fit(self) -> TokenOutputConfig:
        if "mds" in self.formats and self.target_bytes > MDS_MAX_TARGET_BYTES:
            raise ValueError(
                f"output.tokens.target_bytes must be at most {MDS_MAX_TARGET_BYTES} with mds "
                "(MDS shards stay under 4 GiB)"
            )
        return self
