"""Which configured source a document belongs to (per-source filter profiles, review decisions).

A document's ``source`` is its input's ``name`` followed by the file's path under the glob root
(``arxiv/2024/part-0.parquet``), or just that path for an unnamed input. A key names a source
when it equals ``source``, is a leading path of it (an input name or a folder), or matches it as
a glob (``*.warc.gz``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable


def source_matches(source: str, key: str) -> bool:
    """Whether ``key`` (an input name, a leading path or a glob) names ``source``."""
    return source == key or source.startswith(key.rstrip("/") + "/") or fnmatch.fnmatchcase(source, key)


def matching_key(source: str, keys: Iterable[str]) -> str | None:
    """The first of ``keys`` (in the config's order) that names ``source``; None when none does."""
    return next((key for key in keys if source_matches(source, key)), None)
