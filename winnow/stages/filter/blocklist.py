"""URL blocklists: user-supplied lists (UT1-style ``domains``/``urls`` files) and three ways to match.

List files: one entry per line; ``#`` starts a comment; blank lines are skipped; gzip is read
when the name ends in ``.gz``. Entries are lower-cased, a leading ``*.``/``.`` and a trailing ``.``
are dropped, and internationalised names are stored in their IDNA (``xn--``) form so that
``bücher.de`` and ``xn--bcher-kva.de`` are the same entry. A file that cannot be read, is not
UTF-8 or holds no entry raises ``BlocklistError`` before the run.

Match modes (``match``):

* ``domain``: the URL's host, or any parent of it down to its registered domain, is listed.
  The registered domain comes from the Public Suffix List (tldextract's bundled snapshot, built so
  it never fetches). An entry ``example.com`` thus blocks ``www.example.com`` and
  ``a.b.example.com``, an entry ``shop.example.com`` blocks only that subtree, and an entry that is
  itself a public suffix (``co.uk``) never blocks a whole country. Hosts without a registered
  domain (IP addresses, unknown suffixes) match only by their full host. PSL private suffixes
  (``blogspot.com``) are off by default, as in tldextract, so ``blogspot.com`` is a registered domain.
* ``url``: the URL without scheme, ``www.``, fragment or trailing slash equals an entry, or starts with it
  at a path boundary (``/``, ``?``), which is how UT1 ``urls`` files and squidGuard read entries.
* ``substring``: an entry occurs anywhere in the lower-cased URL (keyword lists).

Each list has a name (``BlocklistFile.name``: the folder of a UT1 ``domains``/``urls`` file, e.g.
``adult``, else the file name without extensions) that the filter stage can report as the rule.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

MatchMode = Literal["domain", "url", "substring"]


class BlocklistError(ValueError):
    """A blocklist file that cannot be used; raised before the run starts."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"blocklist {self.path}: {problem}")


def _idna(host: str) -> str:
    """Lower-case ASCII form of a host name; the input unchanged when it does not encode."""
    host = host.strip().lower().rstrip(".")
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def normalise_domain(entry: str) -> str:
    entry = entry.strip().lower()
    entry = entry.removeprefix("*.").lstrip(".")
    return _idna(entry)


def normalise_url(url: str) -> str:
    """``host/path?query`` lower-cased, without scheme, credentials, port, ``www.``, fragment, final ``/``."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        host = _idna(parts.hostname or "")
    except ValueError:
        return url.strip().lower()
    host = host.removeprefix("www.")
    rest = parts.path.rstrip("/")
    if parts.query:
        rest += "?" + parts.query
    return (host + rest).lower()


def url_host(url: str) -> str:
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        return _idna(urlsplit(text).hostname or "")
    except ValueError:
        return ""


def _open_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


@dataclass(frozen=True)
class BlocklistFile:
    name: str
    entries: frozenset[str]


def list_name(path: Path) -> str:
    """``adult`` for UT1's ``.../adult/domains``; otherwise the file name without extensions."""
    stem = path.name.removesuffix(".gz")
    if stem in ("domains", "urls", "expressions") and path.parent.name:
        return path.parent.name
    return stem.split(".")[0]


def read_blocklist(path: str | Path, mode: MatchMode, name: str | None = None) -> BlocklistFile:
    """Read one list file; entries are normalised for ``mode``. Raises ``BlocklistError``."""
    path = Path(path)
    try:
        lines = _open_lines(path)
    except OSError as error:
        raise BlocklistError(path, f"cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise BlocklistError(path, f"is not UTF-8 text (byte {error.start})") from None
    normalise = {"domain": normalise_domain, "url": normalise_url, "substring": str.lower}[mode]
    entries = set()
    for line in lines:
        entry = line.split("#", 1)[0].strip()
        if entry:
            entries.add(normalise(entry))
    entries.discard("")
    if not entries:
        raise BlocklistError(path, "holds no entry (only blank lines or comments)")
    return BlocklistFile(name or list_name(path), frozenset(entries))


@dataclass(frozen=True)
class BlocklistMatch:
    list_name: str
    entry: str


class UrlBlocklist:
    """All configured lists with one match mode; ``match(url)`` names the first list that blocks it.

    Lists are tried in the configured order, so the reported list is deterministic.
    """

    def __init__(self, lists: Sequence[BlocklistFile], mode: MatchMode, include_psl_private_domains: bool = False):
        if not lists:
            raise ValueError("a URL blocklist needs at least one list")
        self.lists = list(lists)
        self.mode = mode
        self.include_psl_private_domains = include_psl_private_domains

    @classmethod
    def from_files(cls, files: Iterable[str | Path], mode: MatchMode, **options: bool) -> UrlBlocklist:
        return cls([read_blocklist(path, mode) for path in files], mode, **options)

    @cached_property
    def _tld_extract(self):  # tldextract is imported on first use: workers that never need it skip its load
        import tldextract  # lazy: the public suffix list loads only when a domain is matched

        # suffix_list_urls=() and cache_dir=None: the bundled PSL snapshot, no fetch, no cache writes.
        return tldextract.TLDExtract(
            cache_dir=None,
            suffix_list_urls=(),
            fallback_to_snapshot=True,
            include_psl_private_domains=self.include_psl_private_domains,
        )

    @cached_property
    def _substring_patterns(self) -> list[tuple[str, re.Pattern[str]]]:
        # Longest first, so the reported entry is the most specific one at a position.
        return [
            (
                blocklist.name,
                re.compile("|".join(re.escape(e) for e in sorted(blocklist.entries, key=(lambda e: (-len(e), e))))),
            )
            for blocklist in self.lists
        ]

    def domain_candidates(self, url: str) -> list[str]:
        """The host and each parent down to the registered domain, most specific first."""
        host = url_host(url)
        if not host:
            return []
        registered = self._tld_extract(host).top_domain_under_public_suffix
        if not registered or not host.endswith(registered):
            return [host]
        labels = host.split(".")
        depth = registered.count(".") + 1
        return [".".join(labels[i:]) for i in range(len(labels) - depth + 1)]

    def match(self, url: str | None) -> BlocklistMatch | None:
        if not url:
            return None
        if self.mode == "domain":
            candidates = self.domain_candidates(url)
            for blocklist in self.lists:
                for candidate in candidates:
                    if candidate in blocklist.entries:
                        return BlocklistMatch(blocklist.name, candidate)
            return None
        if self.mode == "url":
            normalised = normalise_url(url)
            prefixes = [normalised] + [normalised[:i] for i, char in enumerate(normalised) if char in "/?"]
            for blocklist in self.lists:
                for prefix in prefixes:
                    if prefix in blocklist.entries:
                        return BlocklistMatch(blocklist.name, prefix)
            return None
        lowered = url.lower()
        for name, pattern in self._substring_patterns:
            found = pattern.search(lowered)
            if found:
                return BlocklistMatch(name, found.group())
        return None
