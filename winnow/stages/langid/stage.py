"""Stage ``langid``: language and score per document, kept by per-language thresholds.

The model loads once per worker and predicts a batch per call: fastText's per-call overhead is
larger than its per-document cost on short texts.
"""

from __future__ import annotations

import pyarrow as pa

from winnow.beam.contract import CountFn, Document, Drop, Outcome, PerDocumentStage, StageSpec
from winnow.stages.langid.config import LangIdConfig
from winnow.stages.langid.identify import keep_decision, make_identifier

STAGE = "langid"
COLUMNS = (pa.field("language", pa.string()), pa.field("language_score", pa.float32()))


class LangIdStep:
    """Adds ``language`` / ``language_score``; drops by the per-language keep rules when filtering."""

    def __init__(self, config: LangIdConfig):
        self.config = config

    def setup(self, count: CountFn) -> None:
        c = self.config
        self.identifier = make_identifier(c.backend, c.model_path, c.max_chars, c.sample_chars, c.sample_windows)

    def __call__(self, docs: list[Document]) -> list[Outcome]:
        predictions = self.identifier.predict([doc["text"] for doc in docs])
        outcomes: list[Outcome] = []
        for doc, (language, score) in zip(docs, predictions, strict=True):
            out = {**doc, "language": language, "language_score": score}
            rule = keep_decision(language, score, self.config.keep) if self.config.filter else None
            outcomes.append(Drop(rule, out) if rule is not None else out)
        return outcomes


def LangId(config: LangIdConfig) -> PerDocumentStage:
    return PerDocumentStage(STAGE, LangIdStep(config), config.batch_size, fields=COLUMNS)


SPEC = StageSpec(name=STAGE, config=LangIdConfig, transform=LangId, columns=COLUMNS, batches=True)
