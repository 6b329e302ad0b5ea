"""Reviewers' decisions, Beam-free: parse a decisions sheet and say what it does to a document.

The sheet is CSV (the one ``winnow review export`` writes, filled in, or any CSV with these columns):

* ``id``, ``decision``, ``label``: a **document** decision, ``keep`` or ``drop``; a dropped
  document is removed with reason ``review:<label>``;
* ``source``, ``decision``, ``label`` (and ``tokens``) with ``id`` empty: a **source** decision,
  ``drop_source`` (every document of the source) or ``cap_tokens`` (at most ``tokens`` of the
  source, kept in a seeded hash order; the cut includes the document that crosses the cap, so the
  cap holds within one document). ``source`` is an input name, a leading path or a glob of the
  ``source`` column, as in ``filter.by_source``; the first matching row applies.

Rows with an empty ``decision`` are skipped (a sheet under review); other columns are ignored.
``keep`` changes nothing (it records that a reviewer saw the document); a document decision wins
over its source's decision. Labels become reasons, so they are short names: letters, digits,
``_``, ``-``, ``.``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from winnow.core.config import Section
from winnow.core.sources import matching_key

LABEL_PATTERN = r"^[A-Za-z0-9_.\-]+$"
DOCUMENT_DECISIONS = ("keep", "drop")
SOURCE_DECISIONS = ("drop_source", "cap_tokens")


class DecisionRow(Section):
    """One filled-in row of a decisions sheet."""

    id: str | None = Field(None, description="Document id (document decisions).")
    source: str | None = Field(None, description="Source key (source decisions).")
    decision: Literal["keep", "drop", "drop_source", "cap_tokens"]
    label: str | None = Field(None, pattern=LABEL_PATTERN, description="Reason label: `review:<label>`.")
    tokens: int | None = Field(None, ge=0, description="`cap_tokens`: the source's token cap.")

    @model_validator(mode="after")
    def _consistent(self) -> DecisionRow:
        if self.id:
            if self.decision not in DOCUMENT_DECISIONS:
                raise ValueError(f"a row with an id takes a document decision ({', '.join(DOCUMENT_DECISIONS)})")
        elif not self.source:
            raise ValueError("a row needs an id (document decision) or a source (source decision)")
        elif self.decision not in SOURCE_DECISIONS:
            raise ValueError(f"a row without an id takes a source decision ({', '.join(SOURCE_DECISIONS)})")
        if self.decision != "keep" and not self.label:
            raise ValueError(f"`{self.decision}` needs a label (the removal reason is review:<label>)")
        if self.decision == "cap_tokens" and self.tokens is None:
            raise ValueError("`cap_tokens` needs `tokens`")
        return self


@dataclass(frozen=True)
class SourceDecision:
    key: str
    decision: str
    label: str
    tokens: int | None = None


@dataclass
class ReviewDecisions:
    """Document decisions by id and source decisions in sheet order."""

    documents: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    sources: list[SourceDecision] = field(default_factory=list)

    def document(self, doc_id: str) -> tuple[str, str | None] | None:
        return self.documents.get(doc_id)

    def source(self, source: str) -> SourceDecision | None:
        """The first source decision whose key names ``source``."""
        key = matching_key(source, [decision.key for decision in self.sources])
        return None if key is None else next(d for d in self.sources if d.key == key)


def parse_decisions(text: str, name: str) -> ReviewDecisions:
    """A decisions sheet's text → ``ReviewDecisions``; errors name the row and the column."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "decision" not in [f.strip() for f in reader.fieldnames]:
        raise ValueError(f"{name}: the header needs a `decision` column (and `id` or `source`, `label`)")
    out = ReviewDecisions()
    seen_sources: set[str] = set()
    for number, raw in enumerate(reader, start=2):
        values = {str(k).strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not values.get("decision"):
            continue
        row_data = {k: values.get(k) or None for k in ("id", "source", "decision", "label", "tokens")}
        try:
            row = DecisionRow.model_validate(row_data)
        except ValidationError as error:
            problem = error.errors()[0]
            column = ".".join(str(part) for part in problem["loc"]) or "row"
            raise ValueError(f"{name} row {number}: {column}: {problem['msg']}") from None
        if row.id:
            previous = out.documents.get(row.id)
            if previous is not None and previous != (row.decision, row.label):
                raise ValueError(f"{name} row {number}: id {row.id!r} has two different decisions")
            out.documents[row.id] = (row.decision, row.label)
        else:
            assert row.source is not None and row.label is not None
            if row.source in seen_sources:
                raise ValueError(f"{name} row {number}: source {row.source!r} has a decision already")
            seen_sources.add(row.source)
            out.sources.append(SourceDecision(row.source, row.decision, row.label, row.tokens))
    return out
