"""Config section of the ``filter`` stage (heuristic rules, URL blocklists, drop or annotate).

Defaults follow the published pipelines they come from: FineWeb's heuristic filters
(datatrove's C4 / Gopher / FineWeb thresholds, C4's terminal-punctuation rule off as in
FineWeb). No blocklist is bundled: UT1's lists are downloaded by the user.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from winnow.core.config import Section


class C4FilterConfig(Section):
    """C4's rules (Raffel et al. 2020): line removal, then page-level checks on what is left."""

    enabled: bool = Field(True, description="Run the C4 rules.")
    terminal_punctuation: bool = Field(
        False,
        description="Drop lines not ending in . ? ! \" or ' (C4). Off by default as in FineWeb, whose "
        "ablations found it removes too much good text.",
    )
    min_words_per_line: int = Field(3, ge=0, description="Drop lines with fewer whitespace-separated words.")
    max_word_length: int = Field(1000, ge=-1, description="Drop lines with a longer word; -1 disables.")
    remove_citations: bool = Field(True, description="Strip Wikipedia-style [1], [edit], [citation needed].")
    javascript: bool = Field(True, description="Drop lines containing 'javascript'.")
    policy: bool = Field(True, description="Drop lines naming cookie / privacy / terms-of-use policies.")
    lorem_ipsum: bool = Field(True, description="Drop the page if a kept line contains 'lorem ipsum'.")
    curly_bracket: bool = Field(True, description="Drop the page if a kept line contains '{' (code, templates).")
    min_sentences: int = Field(5, ge=0, description="Drop the page if fewer sentences remain; 0 disables.")
    keep_paragraphs: bool = Field(
        True,
        description="Keep blank lines between kept lines. C4 (and datatrove) join kept lines with single "
        "newlines, which hides paragraphs from the Gopher paragraph-repetition rules that run next.",
    )
    badwords_file: str | None = Field(
        None,
        description="A word list, one per line (e.g. LDNOOBW's 'en'); pages containing any are dropped "
        "(`filter:c4_badwords`). Null disables; no list is bundled.",
    )
    badwords_no_spaces: bool = Field(
        False, description="Match bad words as substrings (for ja/zh/th, which have no spaces)."
    )


class GopherQualityConfig(Section):
    """Gopher's quality rules (Rae et al. 2021, appendix A1)."""

    enabled: bool = Field(True, description="Run the Gopher quality rules.")
    min_doc_words: int | None = Field(50, description="Minimum words (symbol-only tokens excluded); null disables.")
    max_doc_words: int | None = Field(100_000, description="Maximum words; null disables.")
    min_avg_word_length: float | None = Field(3, description="Minimum mean word length; null disables.")
    max_avg_word_length: float | None = Field(10, description="Maximum mean word length; null disables.")
    max_symbol_word_ratio: float | None = Field(
        0.1, description="Maximum '#' per word and '...'/'…' per word; null disables."
    )
    max_bullet_lines_ratio: float | None = Field(
        0.9, description="Maximum fraction of lines starting with • or -; null disables."
    )
    max_ellipsis_lines_ratio: float | None = Field(
        0.3, description="Maximum fraction of lines ending with ... or …; null disables."
    )
    min_alpha_words_ratio: float | None = Field(
        0.8, description="Minimum fraction of tokens with a letter (punctuation tokens count); null disables."
    )
    min_stop_words: int | None = Field(2, description="Minimum distinct stop words present; null disables.")
    stop_words: list[str] = Field(
        default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"],
        description="Stop words for `min_stop_words` (case-sensitive, as Gopher).",
    )


class GopherRepetitionConfig(Section):
    """Gopher's repetition rules (Rae et al. 2021, table A1)."""

    enabled: bool = Field(True, description="Run the Gopher repetition rules.")
    dup_line_frac: float | None = Field(0.3, description="Max fraction of lines that repeat an earlier line.")
    dup_para_frac: float | None = Field(0.3, description="Max fraction of paragraphs that repeat an earlier one.")
    dup_line_char_frac: float | None = Field(0.2, description="Max fraction of characters in repeated lines.")
    dup_para_char_frac: float | None = Field(0.2, description="Max fraction of characters in repeated paragraphs.")
    top_ngrams: dict[int, float] = Field(
        default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16},
        description="n -> max fraction of characters covered by the most frequent word n-gram.",
    )
    dup_ngrams: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="n -> max fraction of characters in word n-grams that repeat an earlier one.",
    )


class FineWebFilterConfig(Section):
    """FineWeb's own rules (Penedo et al. 2024)."""

    enabled: bool = Field(True, description="Run the FineWeb rules.")
    line_punct_thr: float | None = Field(
        0.12, description="Min fraction of lines ending in sentence punctuation; null disables."
    )
    line_punct_exclude_zero: bool = Field(
        False, description="Do not apply `line_punct_thr` to documents with no such line at all."
    )
    short_line_thr: float | None = Field(
        0.67, description="Max fraction of lines of at most `short_line_length` characters; null disables."
    )
    short_line_length: int = Field(30, gt=0, description="A line this long or shorter is short.")
    char_dup_ratio: float | None = Field(
        0.01, description="Max fraction of characters in lines that repeat an earlier line; null disables."
    )
    new_line_ratio: float | None = Field(0.3, description="Max newlines per word (list-like pages); null disables.")


class UrlBlocklistConfig(Section):
    """URL blocklists (UT1-style list files) and how a document's URL is matched against them."""

    files: list[str] = Field(
        min_length=1,
        description="List files (UT1 `domains`/`urls` layout: one entry per line, `#` comments, `.gz` read), "
        "relative to the working directory. A missing, unreadable or empty file stops the run before it starts. "
        "The rule is `url_blocklist_<list>`, the list being the UT1 category folder (`adult/domains` → `adult`) "
        "or the file name.",
    )
    match: Literal["domain", "url", "substring"] = Field(
        "domain",
        description="`domain`: the URL's host or a parent of it down to its registered domain is listed "
        "(Public Suffix List from tldextract's bundled snapshot, never downloaded); `url`: the normalised URL "
        "or a path prefix of it is listed; `substring`: an entry occurs in the lower-cased URL.",
    )
    include_psl_private_domains: bool = Field(
        False,
        description="Treat PSL private suffixes (`blogspot.com`) as public suffixes, so `x.blogspot.com` is its "
        "own registered domain.",
    )


class FilterConfig(Section):
    """Heuristic quality filters, applied in order URL blocklist → C4 → Gopher quality → Gopher
    repetition → FineWeb."""

    enabled: bool = Field(True, description="Run this stage.")
    mode: Literal["drop", "annotate"] = Field(
        "drop",
        description="`drop`: a document goes at the first rule that fires (`filter:<rule>`); `annotate`: every "
        "rule is evaluated, no document is dropped, and the names of the rules that fired are written to "
        "`filter_flags` (empty list: drop mode would have kept it, with the same text).",
    )
    url_blocklist: UrlBlocklistConfig | None = Field(
        None, description="URL blocklists checked before the text rules; null: none."
    )
    c4: C4FilterConfig = Field(default_factory=C4FilterConfig, description="C4 rules.")
    gopher_quality: GopherQualityConfig = Field(default_factory=GopherQualityConfig, description="Gopher quality.")
    gopher_repetition: GopherRepetitionConfig = Field(
        default_factory=GopherRepetitionConfig, description="Gopher repetition."
    )
    fineweb: FineWebFilterConfig = Field(default_factory=FineWebFilterConfig, description="FineWeb rules.")
    by_source: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-source profiles: {key: overrides of the rule sections above}, e.g. "
        "`{default: {c4: {enabled: false}}, web: {}}`. A key is an input `name`, a leading path or a glob of "
        "the `source` column; the first matching key (in this order) applies, `default` to sources no other "
        "key names; without a match the sections above apply unchanged. Overrides merge into the sections.",
    )
    license_allow: list[str] | None = Field(
        None,
        description="Licence gate: keep only documents whose `license_field` is one of these (case-insensitive); "
        "others are removed as `filter:license_not_allowed`, those without one as `filter:license_missing`. "
        "Null: no gate.",
    )
    license_field: str = Field("license", description="Field (top level or in `metadata`) declaring the licence.")

    @model_validator(mode="after")
    def _profiles_are_valid(self) -> FilterConfig:
        for name in self.by_source:
            self.profile(name)
        return self

    def profile(self, name: str) -> FilterConfig:
        """The rule sections a ``by_source`` profile runs: the sections above with its overrides merged in."""
        overrides = self.by_source[name]
        fixed = sorted(set(overrides) & PER_RUN_KEYS)
        if fixed:
            raise ValueError(f"by_source.{name}: {', '.join(fixed)} cannot differ between sources")
        merged = _merged(self, overrides)
        merged["by_source"] = {}
        try:
            return FilterConfig.model_validate(merged)
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            message = "unknown key" if problem["type"] == "extra_forbidden" else problem["msg"]
            raise ValueError(f"by_source.{name}.{where}: {message}") from None


# Settings that apply to the whole run, never to one source's profile.
PER_RUN_KEYS = frozenset({"enabled", "mode", "url_blocklist", "by_source", "license_allow", "license_field"})


def _merged(model: BaseModel, overrides: dict[str, Any]) -> dict[str, Any]:
    """``model`` as a dict with ``overrides`` merged in: nested sections merge key by key, any other
    value (numbers, lists, the n-gram tables) is replaced whole."""
    out = model.model_dump()
    for key, value in overrides.items():
        current = getattr(model, key, None)
        out[key] = _merged(current, value) if isinstance(current, BaseModel) and isinstance(value, dict) else value
    return out
