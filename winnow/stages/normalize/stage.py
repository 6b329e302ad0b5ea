"""Stage ``normalize``: mojibake repair (``mojibake``), then Unicode form, control characters and
whitespace (``normalizer``). ftfy runs first: the control-character step would otherwise delete the
C1 bytes that ftfy turns back into quotes and dashes."""

from __future__ import annotations

from winnow.beam.contract import CountFn, Document, Drop, Outcome, PerDocumentStage, StageSpec
from winnow.stages.normalize.config import NormalizeConfig
from winnow.stages.normalize.mojibake import MojibakeFixer
from winnow.stages.normalize.normalizer import TextNormalizer

STAGE = "normalize"


class NormalizeStep:
    """Normalises each document's text; a text that normalises to nothing is removed as ``normalize:empty``."""

    def __init__(self, config: NormalizeConfig):
        self.config = config

    def setup(self, count: CountFn) -> None:
        c = self.config
        self.count = count
        self.normalizer = TextNormalizer(
            unicode_form=c.unicode_form,
            strip_control=c.strip_control,
            collapse_spaces=c.collapse_spaces,
            max_blank_lines=c.max_blank_lines,
            normalize_newlines=c.normalize_newlines,
        )
        self.fix_mojibake = MojibakeFixer() if c.fix_mojibake else None

    def __call__(self, docs: list[Document]) -> list[Outcome]:
        return [self._one(doc) for doc in docs]

    def _one(self, doc: Document) -> Outcome:
        if "html" in doc:  # not extracted yet: nothing to normalise (extract runs first when enabled)
            return doc
        text = doc["text"]
        if self.fix_mojibake is not None:
            text = self.fix_mojibake(text, self.count)
        text = self.normalizer(text)
        if not text:
            return Drop("empty")
        if text == doc["text"]:
            return doc
        self.count("changed", 1)
        return {**doc, "text": text}


def Normalize(config: NormalizeConfig) -> PerDocumentStage:
    return PerDocumentStage(STAGE, NormalizeStep(config))


SPEC = StageSpec(name=STAGE, config=NormalizeConfig, transform=Normalize)
