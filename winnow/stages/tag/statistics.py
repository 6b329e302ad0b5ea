"""Per-domain statistics of the tag stage: documents, characters, tokens and score distributions, mergeable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from winnow.core.stats import ScoreSummary


@dataclass
class DomainStats:
    """Documents, characters, tokens and score summaries of one domain value; merges exactly."""

    documents: int = 0
    characters: int = 0
    tokens: int = 0
    scores: dict[str, ScoreSummary] | None = None
    sources: dict[str, int] | None = None

    def add(
        self,
        characters: int,
        tokens: int,
        scores: dict[str, float],
        ranges: dict[str, tuple[float, float]],
        bins: int,
        source: str | None = None,
    ) -> DomainStats:
        self.documents += 1
        self.characters += characters
        self.tokens += tokens
        self.scores = self.scores or {}
        for name, value in scores.items():
            if name not in ranges:
                continue
            if name not in self.scores:
                self.scores[name] = ScoreSummary.empty(*ranges[name], bins)
            self.scores[name].add(value)
        if source is not None:
            self.sources = self.sources or {}
            self.sources[source] = self.sources.get(source, 0) + 1
        return self

    def merge(self, other: DomainStats) -> DomainStats:
        scores = dict(self.scores or {})
        for name, summary in (other.scores or {}).items():
            scores[name] = scores[name].merge(summary) if name in scores else summary
        sources = dict(self.sources or {})
        for name, count in (other.sources or {}).items():
            sources[name] = sources.get(name, 0) + count
        return DomainStats(
            self.documents + other.documents,
            self.characters + other.characters,
            self.tokens + other.tokens,
            scores or None,
            sources or None,
        )


def prior(values: Sequence[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """WebOrganizer's prior, ``{domain, tokens, documents, weight = tokens / total}``, largest first."""
    total = sum(tokens for _, _, tokens in values)
    rows = [
        {"domain": name, "tokens": tokens, "documents": documents, "weight": tokens / total if total else 0.0}
        for name, documents, tokens in values
    ]
    return sorted(rows, key=lambda r: (-r["tokens"], r["domain"]))
