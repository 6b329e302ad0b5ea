"""Language identification: fastText lid.176 (default) or CLD2, batch in, (language, score) out.

lid.176 is the model CCNet, RefinedWeb, DCLM and FineWeb use; it ships with winnow
(``winnow/data/models/lid.176.ftz``, CC BY-SA 3.0, see the README there) and is loaded with
the ``fasttext`` module of ``fasttext-numpy2-wheel``. fastText predicts one line at a time,
so newlines are replaced by spaces first, as DCLM does. A long document is read through a bounded
sample of windows spread over it (``sample_text``): fastText's cost grows with the text it reads. CLD2
(``pycld2``) is a second backend: no model file and faster on long documents, with fewer
languages (see bench/langid_eval.py).

Codes: lid.176's labels are ISO 639-1 where one exists (else ISO 639-3, e.g. ``ceb``);
CLD2's legacy codes (``iw``, ``jw``, ``zh-Hant``) are mapped to the same scheme.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from winnow.core.models import PACKAGE_DATA, resolve_model_path

UNKNOWN = "und"
_LABEL_PREFIX = "__label__"
# CLD2 rejects C0/C1 controls (other than tab/newline) and lone surrogates as invalid UTF-8.
_CLD2_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_CLD2_CODES = {"iw": "he", "jw": "jv", "in": "id", "zh-Hant": "zh", "un": UNKNOWN, "xxx": UNKNOWN}


def bundled_model_path() -> Path:
    """The lid.176.ftz shipped as package data."""
    return PACKAGE_DATA / "models" / "lid.176.ftz"


def _window_words(text: str, lo: int, hi: int) -> list[str]:
    """The whole words of ``text[lo:hi]``: a word the window cuts at either edge is left out.

    A cut word would reach fastText as a word it never saw; a window without a space inside (text
    without spaces, as Chinese or Japanese) is kept as it is, since it holds no whole word.
    """
    words = text[lo:hi].split()
    if len(words) < 2:
        return words
    first = 1 if lo > 0 and not text[lo - 1].isspace() and not text[lo].isspace() else 0
    end = len(words) - 1 if hi < len(text) and not text[hi].isspace() and not text[hi - 1].isspace() else len(words)
    return words[first:end]


def sample_text(text: str, budget: int | None, windows: int = 16) -> str:
    """About ``budget`` characters of ``text`` in ``windows`` equal windows spread evenly from its start to its end.

    A long page's label then rests on all of it rather than on its header; lid.176 averages word and
    n-gram vectors, so many small windows estimate the whole text's average better than one prefix or
    a few large windows (bench/langid_eval.py measures this). Each window keeps its whole words, one
    window per line of the result, whitespace collapsed. The sample depends on the text only. Texts
    within the budget, and a budget of 0 or None, come back unchanged. [ours]
    """
    n = len(text)
    if not budget or n <= budget:
        return text
    windows = max(1, min(windows, budget))
    width = budget // windows
    if windows == 1:
        return " ".join(_window_words(text, 0, width))
    # n > budget >= windows * width keeps the windows apart; the first starts the text, the last ends it.
    span, last = n - width, windows - 1
    return "\n".join(" ".join(_window_words(text, lo, lo + width)) for lo in (span * j // last for j in range(windows)))


def prepare_text(
    text: str, max_chars: int | None = None, sample_chars: int | None = None, sample_windows: int = 16
) -> str:
    """One line of collapsed whitespace: fastText's predict refuses newlines.

    ``sample_chars`` (0/None: off) reads a sample of the text (``sample_text``); otherwise only the
    first ``max_chars`` characters are read. ``str.split`` splits on exactly the characters the
    regex ``\\s+`` matched before (``str.isspace``), at a fraction of its cost.
    """
    if sample_chars:
        text = sample_text(text, sample_chars, sample_windows)
    elif max_chars is not None and len(text) > max_chars:
        text = text[:max_chars]
    return " ".join(text.split())


def parse_label(label: str) -> str:
    """``__label__en`` -> ``en``."""
    return label[len(_LABEL_PREFIX) :] if label.startswith(_LABEL_PREFIX) else label


class LanguageIdentifier(Protocol):
    name: str

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]: ...


class FastTextLangId:
    """lid.176 (or any fastText language model) on a batch of texts; one C++ call per batch."""

    name = "fasttext"

    def __init__(
        self,
        model_path: str | Path | None = None,
        max_chars: int | None = None,
        sample_chars: int | None = None,
        sample_windows: int = 16,
    ):
        import fasttext  # lazy: fastText only when its model is used

        # fasttext prints a deprecation notice on every load_model; it is noise in worker logs.
        fasttext.FastText.eprint = lambda *_args, **_kwargs: None
        path = resolve_model_path(model_path) if model_path else bundled_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"fastText language-ID model not found: {path}")
        self.model = fasttext.load_model(str(path))
        self.max_chars = max_chars
        self.sample_chars = sample_chars
        self.sample_windows = sample_windows

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        lines = [prepare_text(t, self.max_chars, self.sample_chars, self.sample_windows) for t in texts]
        todo = [i for i, line in enumerate(lines) if line]
        out: list[tuple[str, float]] = [(UNKNOWN, 0.0)] * len(lines)
        if todo:
            # The C++ call directly: the lines hold no newline already, and the wrapper's per-line
            # check would copy each one again; the "\n" ends the line as the wrapper's does.
            labels, probs = self.model.f.multilinePredict([lines[i] + "\n" for i in todo], 1, 0.0, "strict")
            for i, label, prob in zip(todo, labels, probs, strict=True):
                # The quantised model's softmax can exceed 1 by float error (1.00003).
                out[i] = (parse_label(label[0]), min(float(prob[0]), 1.0))
        return out


class Cld2LangId:
    """Compact Language Detector 2 via pycld2; score = share of the text in the top language."""

    name = "cld2"

    def __init__(self, max_chars: int | None = None, sample_chars: int | None = None, sample_windows: int = 16):
        import pycld2  # lazy: CLD2 only for its langid backend

        self._detect: Any = pycld2.detect
        self.max_chars = max_chars
        self.sample_chars = sample_chars
        self.sample_windows = sample_windows

    def predict_one(self, text: str) -> tuple[str, float]:
        line = _CLD2_BAD.sub("", prepare_text(text, self.max_chars, self.sample_chars, self.sample_windows))
        if not line:
            return UNKNOWN, 0.0
        try:
            _reliable, _nbytes, details = self._detect(line, isPlainText=True)
        except Exception:  # pycld2.error on text it still considers invalid
            return UNKNOWN, 0.0
        _name, code, percent, _score = details[0]
        code = _CLD2_CODES.get(code, code)
        if code == UNKNOWN:
            return UNKNOWN, 0.0
        return code.split("-")[0], percent / 100.0

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        return [self.predict_one(t) for t in texts]


def make_identifier(
    backend: str,
    model_path: str | None = None,
    max_chars: int | None = None,
    sample_chars: int | None = None,
    sample_windows: int = 16,
) -> LanguageIdentifier:
    """The configured backend (``fasttext`` or ``cld2``)."""
    if backend == "fasttext":
        return FastTextLangId(model_path, max_chars, sample_chars, sample_windows)
    if backend == "cld2":
        return Cld2LangId(max_chars, sample_chars, sample_windows)
    raise ValueError(f"unknown language-ID backend {backend!r}; use 'fasttext' or 'cld2'")


def keep_decision(language: str, score: float, keep: dict[str, float]) -> str | None:
    """None to keep, else the drop rule: ``language`` (not wanted) or ``low_score`` (unsure)."""
    threshold = keep.get(language, keep.get("*"))
    if threshold is None:
        return "language"
    if score < threshold:
        return "low_score"
    return None
