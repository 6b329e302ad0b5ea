"""HTML to main text: decoding, payload checks and three extractor backends.

* ``trafilatura``: ``trafilatura.extract``, the most accurate open extractor on the
  trafilatura and ScrapingHub benchmarks, and the slowest (lxml, many XPath passes, fallbacks).
* ``resiliparse``: ``extract_plain_text(main_content=True)``, about 10x faster (Lexbor C DOM)
  but it keeps much more boilerplate (related links, comment forms, captions).
* ``fast`` (default): resiliparse's parser and extractor with a boilerplate step in front and
  behind it. In front, one walk over the DOM drops script-like nodes, picks the article
  container when the page marks one (``itemprop=articleBody``, ``entry-content``, ``<article>``…,
  the markers trafilatura's BODY_XPATH looks for) and prunes elements whose class/id names
  boilerplate (share, related, footer, byline, cookie…, trafilatura's discard vocabulary),
  never an element holding most of the page's text. Behind it, the extractor's minimal HTML
  is cut into blocks, link-dominated blocks (menus, "read more" lists) are dropped, and so
  are headings left with nothing under them. ``bench/extraction_quality.py`` measures all three.

Every failure mode of real payloads ends as an ``ExtractResult`` with a reason, never an
exception: oversized pages (``too_large``), non-HTML bodies such as PDF or images
(``not_html``), pages with no text (``empty``).
"""

from __future__ import annotations

import codecs
import html as htmllib
import re
from dataclasses import dataclass
from typing import Any

BACKENDS = ("fast", "trafilatura", "resiliparse")

# Magic numbers of binary payloads that show up in web crawls with an HTML-ish content type.
_BINARY_MAGIC = (
    b"%PDF",
    b"\x89PNG",
    b"\xff\xd8\xff",
    b"GIF8",
    b"PK\x03\x04",
    b"RIFF",
    b"\x1f\x8b",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"\x00\x00\x01\x00",
    b"OggS",
    b"ID3",
    b"fLaC",
    b"wOFF",
    b"wOF2",
    b"\xd0\xcf\x11\xe0",
)
_HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")
_TEXT_TYPES = ("text/plain",)
# Anything a reader would see: not whitespace, zero-width/format characters or controls.
_VISIBLE = re.compile(r"[^\s\u200b-\u200f\u2028-\u202f\u2060-\u206f\ufeff\x00-\x1f\x7f-\x9f]")
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.I)


@dataclass(frozen=True)
class ExtractResult:
    """The main text, or why there is none (``too_large``, ``not_html``, ``empty``)."""

    text: str | None
    reason: str | None = None
    encoding: str | None = None
    detail: str | None = None


def media_type(content_type: str | None) -> str | None:
    """``text/html; charset=utf-8`` -> ``text/html``."""
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def looks_binary(data: bytes) -> bool:
    """A known binary signature, or NUL bytes near the start (no 8-bit HTML or text has those)."""
    if data.startswith(_UTF16_BOMS):
        return False  # UTF-16 text is full of NUL bytes
    head = data[:1024].lstrip()
    return head.startswith(_BINARY_MAGIC) or b"\x00" in data[:1024]


def decode_html(data: bytes, content_type: str | None = None, default: str = "utf-8") -> tuple[str, str]:
    """Bytes to text: the HTTP charset if it names a codec, else <meta> or detection (resiliparse).

    Returns (text, encoding used). Undecodable bytes are dropped rather than failing the page.
    """
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding  # lazy: resiliparse only when extracting HTML

    if data.startswith(_UTF16_BOMS):
        return data.decode("utf-16", errors="ignore"), "utf-16"
    encoding = None
    match = _CHARSET.search(content_type or "")
    if match:
        try:
            encoding = codecs.lookup(match.group(1)).name
        except LookupError:
            encoding = None
    if encoding is None:
        encoding = detect_encoding(data, from_html_meta=True) or default
    try:
        codecs.lookup(encoding)
    except LookupError:
        encoding = default
    return bytes_to_str(data, encoding, errors="ignore", fallback_encodings=(default, "utf-8", "cp1252")), encoding


# ---------------------------------------------------------------------------------------------
# The fast backend

# Elements whose content is never main text.
_NOISE_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object", "canvas"})
# Elements a boilerplate class/id may remove (trafilatura prunes the same block-level set).
_PRUNE_TAGS = frozenset({"div", "section", "ul", "ol", "dl", "aside", "form", "details", "figure", "nav", "footer"})
# Class/id tokens naming boilerplate, following trafilatura's discard vocabulary. Tokens that
# wrap real content on common CMSs were measured out: "widget" (Elementor wraps articles in
# elementor-widget), "sidebar" as a class (layouts like has-sidebar), "slide", "hidden", "expand".
_BOTH = r"^shar|viral|newsletter|syndication|tags|bread-?crumb|button|author"
_BOILERPLATE_ID = re.compile(
    _BOTH + r"|footer|Footer|share|Share|^nav|Nav|related|message-container|premium|^ad-|teaser|Teaser"
    r"|^reply-|^respond|reader-comments|akismet|cookie|sidebar"
)
_BOILERPLATE_CLASS = re.compile(
    _BOTH + r"|^(?:nav|post-nav)|subnav|navbar|navbox|(?:^| )menu| ad |-ad-|(?:^| )ad-|outbrain|taboola|criteo"
    r"|paid-?content|footer|Footer|byline|Byline|share-|sociable|embedded|tag-list|consent|modal-content"
    r"|permission|elated|next-|-stories|most-popular|more-on|(?:^| )meta|rating|attachment|timestamp"
    r"|user-info|user-profile|article-infos|message-container|overlay|obfuscated|blurred|^hide-"
    r"|comments-title|nocomments|-reply-|akismet|suggest-links|-hide-|hide-print|noprint|notloaded"
    r"|^reply-|cookie|caption"
)
_COMMENTS_ID = re.compile(r"^(?:[Cc]omment(?!ary)|comol|disqus_thread|dsq-comments)")
_COMMENTS_CLASS = re.compile(r"^[Cc]omment(?!ary)|(?:article|post)-comments")
# Article containers, strongest markers first (itemprop/entry-content, then <article>, then
# story/main-ish names, then <main>).
_ARTICLE_ID = re.compile(r"(?:entry|article|art)-content|article__content|article(?:-|__)?body|articleBody|body-text")
_ARTICLE_CLASS = re.compile(
    r"^(?:post|entry)$|post[-_]text|post-body|post-?entry|post[-_]?content|postContent|post_inner_wrapper"
    r"|article-?text|articleText|(?:entry|page|text|article|art)-content|article__content"
    r"|article(?:-|__)?body|articleBody|ArticleContent|body-text|article__container"
)
_STORY_ID = re.compile(r"content-main|content-body|contentBody|main-content|^primary|story-body|^article$|^story$")
_STORY_CLASS = re.compile(
    r"content[-_]main|content(?:-|__)body|[Mm]ain-content|[Pp]age-content|^article |post-bodycopy|story-?content"
    r"|(?:theme|blog|section|single)-content|single-post|main-column|wpb_text_column|story-body|field-body"
    r"|fulltext|^(?:postarea|art-postcontent|text|cell|story|content)$"
)

_BLOCKS = re.compile(r"\n\s*\n")
_TAG = re.compile(r"<[^>]+>")
_LINK = re.compile(r"<a\b[^>]*>(.*?)</a>", re.S)
_LIST_ITEM = re.compile(r"<li\b[^>]*>(.*?)</li>", re.S)
_HEADING = re.compile(r"^\s*<h[1-6]\b")
_INLINE_SPACE = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


@dataclass(frozen=True)
class FastOptions:
    """Knobs of the fast backend, measured on trafilatura-eval (bench/extraction_quality.py)."""

    use_container: bool = True
    container_min_share: float = 0.25  # a container must hold this share of the page's text
    prune_max_share: float = 0.4  # never prune an element holding this share of the text
    link_density: float = 0.6  # blocks whose text is at least this much link text are menus
    link_block_max_chars: int = 1000  # long blocks are kept whatever their links
    drop_orphan_headings: bool = True


def _remove(nodes: list[Any]) -> None:
    for node in nodes:
        parent = node.parent
        if parent is not None:
            parent.remove_child(node)


def _container_rank(el: Any, tag: str, cls: str, ident: str) -> int:
    """0-3 for article-container markers (strongest first), -1 for none."""
    if (
        el.getattr("itemprop") == "articleBody"
        or (ident and _ARTICLE_ID.search(ident))
        or (cls and _ARTICLE_CLASS.search(cls))
    ):
        return 0
    if tag == "article":
        return 1
    if (ident and _STORY_ID.search(ident)) or (cls and _STORY_CLASS.search(cls)) or el.getattr("role") == "article":
        return 2
    if tag == "main" or el.getattr("role") == "main":
        return 3
    return -1


def _is_boilerplate(el: Any, cls: str, ident: str, comments: bool) -> bool:
    if (ident and _BOILERPLATE_ID.search(ident)) or (cls and _BOILERPLATE_CLASS.search(cls)):
        return True
    if el.getattr("aria-hidden") == "true" or "nav" in (el.getattr("role") or "").lower():
        return True
    return not comments and bool((ident and _COMMENTS_ID.search(ident)) or (cls and _COMMENTS_CLASS.search(cls)))


_NOISE_SELECTOR = ",".join(sorted(_NOISE_TAGS))
_SCAN_SELECTOR = ",".join(
    [f"{tag}[class],{tag}[id],{tag}[role],{tag}[aria-hidden]" for tag in sorted(_PRUNE_TAGS)]
    + ["article", "main", "[itemprop=articleBody]"]
)


def _select(node: Any, selector: str) -> tuple[Any, ...]:
    """All matches as a tuple: slicing a NodeCollection is one C call, while indexing it
    element by element costs ~0.5 ms per item (measured, resiliparse 2.0.1)."""
    found = node.query_selector_all(selector)
    return found[0 : len(found)] if len(found) else ()


@dataclass
class _Scan:
    containers: list[Any | None]
    candidates: list[Any]  # boilerplate-named elements, document order


def _scan(body: Any, comments: bool) -> _Scan:
    """Container candidates and boilerplate-named elements, found by Lexbor's CSS engine and
    checked with one regex per attribute (node access is the cost, so few nodes are touched)."""
    scan = _Scan([None, None, None, None], [])
    for el in _select(body, _SCAN_SELECTOR):
        tag = el.tag
        cls = el.getattr("class") or ""
        ident = el.getattr("id") or ""
        if tag in ("article", "div", "main", "section"):
            rank = _container_rank(el, tag, cls, ident)
            if rank >= 0 and scan.containers[rank] is None:
                scan.containers[rank] = el
        if tag in _PRUNE_TAGS and _is_boilerplate(el, cls, ident, comments):
            scan.candidates.append(el)
    return scan


def _prune(candidates: list[Any], limit: float) -> None:
    """Remove boilerplate-named elements, outermost first, unless one holds most of the text."""
    last = None
    victims = []
    for el in candidates:
        # Removed elements are disjoint and in document order: only the last can contain ``el``.
        if last is not None and last.contains(el):
            continue
        if len(el.text or "") < limit:
            last = el
            victims.append(el)
    _remove(victims)


def _block_text(block: str) -> str:
    if "<li" in block:
        block = _LIST_ITEM.sub(lambda m: "\n• " + m.group(1).strip() + "\n", block)
    text = htmllib.unescape(_TAG.sub("", block.replace("<br>", "\n")))
    text = _INLINE_SPACE.sub(" ", text)
    return _BLANK_LINES.sub("\n", text).strip()


def clean_minimal_html(markup: str, opts: FastOptions) -> str:
    """Resiliparse's minimal HTML to text, without link-dominated blocks and orphan headings."""
    blocks = []
    for raw in _BLOCKS.split(markup):
        if not raw.strip():
            continue
        keep = True
        if "<a" in raw:
            text_len = len(_TAG.sub("", raw).strip()) or 1
            if text_len < opts.link_block_max_chars:
                link_len = sum(len(_TAG.sub("", m).strip()) for m in _LINK.findall(raw))
                keep = link_len / text_len < opts.link_density
        blocks.append((raw, keep, bool(_HEADING.match(raw))))
    out = []
    for i, (raw, keep, heading) in enumerate(blocks):
        if not keep:
            continue
        if heading and opts.drop_orphan_headings:
            following = blocks[i + 1] if i + 1 < len(blocks) else None
            # A heading introducing nothing, or only a removed block, is boilerplate's title.
            if following is None or not following[1] or following[2]:
                continue
        text = _block_text(raw)
        if text:
            out.append(text)
    return "\n".join(out)


def fast_extract(html: str, comments: bool = False, tables: bool = True, opts: FastOptions | None = None) -> str:
    """The ``fast`` backend (see the module docstring)."""
    from resiliparse.extract.html2text import extract_plain_text  # lazy: resiliparse only when extracting HTML
    from resiliparse.parse.html import HTMLTree  # lazy: resiliparse only when extracting HTML

    opts = opts or FastOptions()
    tree = HTMLTree.parse(html)
    body = tree.body
    if body is None:
        return ""
    _remove(list(_select(body, _NOISE_SELECTOR)))
    scan = _scan(body, comments)
    root_len = len(body.text or "")
    container = None
    if opts.use_container:
        for candidate in scan.containers:
            if candidate is not None:
                size = len(candidate.text or "")
                if size >= opts.container_min_share * root_len:
                    container, root_len = candidate, size
                    break
    # Boilerplate ancestors of the container hold all of its text and so survive this limit.
    _prune(scan.candidates, opts.prune_max_share * (root_len or 1))
    if container is not None:
        tree = HTMLTree.parse(container.html)
    markup = extract_plain_text(
        tree,
        preserve_formatting="minimal_html",
        main_content=True,
        links=True,
        comments=comments,
        skip_elements=None if tables else ["table"],
    )
    return clean_minimal_html(markup, opts)


# ---------------------------------------------------------------------------------------------
# The extractor


class HtmlExtractor:
    """Configured once (from ``ExtractConfig``); turns one payload into an ``ExtractResult``."""

    def __init__(
        self,
        backend: str = "fast",
        max_html_bytes: int = 4 * 1024 * 1024,
        min_text_chars: int = 1,
        include_comments: bool = False,
        include_tables: bool = True,
        default_encoding: str = "utf-8",
        trafilatura_fast: bool = False,
        fast_options: FastOptions | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown extraction backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.backend = backend
        self.max_html_bytes = max_html_bytes
        self.min_text_chars = min_text_chars
        self.include_comments = include_comments
        self.include_tables = include_tables
        self.default_encoding = default_encoding
        self.trafilatura_fast = trafilatura_fast
        self.fast_options = fast_options or FastOptions()
        # Import now so a missing dependency fails at construction, not on the first page.
        if backend == "trafilatura":
            import trafilatura  # noqa: F401  # lazy: trafilatura only for its extract backend
        else:
            import resiliparse.extract.html2text  # noqa: F401  # lazy: resiliparse only when extracting HTML

    @classmethod
    def from_config(cls, config: Any) -> HtmlExtractor:
        return cls(
            backend=config.backend,
            max_html_bytes=config.max_html_bytes,
            min_text_chars=config.min_text_chars,
            include_comments=config.include_comments,
            include_tables=config.include_tables,
            default_encoding=config.default_encoding,
            trafilatura_fast=config.trafilatura_fast,
            fast_options=FastOptions(use_container=config.fast_container),
        )

    def extract_html(self, html: str) -> str:
        """Main text of decoded HTML with the configured backend ('' when there is none)."""
        if self.backend == "fast":
            return fast_extract(html, self.include_comments, self.include_tables, self.fast_options)
        if self.backend == "resiliparse":
            from resiliparse.extract.html2text import extract_plain_text  # lazy: resiliparse only when extracting HTML

            return extract_plain_text(
                html,
                main_content=True,
                comments=self.include_comments,
                skip_elements=None if self.include_tables else ["table"],
            )
        import trafilatura  # lazy: trafilatura only for its extract backend

        return (
            trafilatura.extract(
                html,
                include_comments=self.include_comments,
                include_tables=self.include_tables,
                fast=self.trafilatura_fast,
            )
            or ""
        )

    def __call__(self, payload: str | bytes, content_type: str | None = None) -> ExtractResult:
        size = len(payload)
        if size > self.max_html_bytes:
            return ExtractResult(None, "too_large", detail=f"{size} > {self.max_html_bytes} bytes")
        mtype = media_type(content_type)
        if mtype is not None and not mtype.startswith(_HTML_TYPES + _TEXT_TYPES):
            return ExtractResult(None, "not_html", detail=mtype)
        encoding = None
        if isinstance(payload, bytes | bytearray | memoryview):
            data = bytes(payload)
            if looks_binary(data):
                return ExtractResult(None, "not_html", detail="binary payload")
            html, encoding = decode_html(data, content_type, self.default_encoding)
        else:
            html = payload
            if "\x00" in html[:1024]:
                return ExtractResult(None, "not_html", detail="binary payload")
        if mtype is not None and mtype.startswith(_TEXT_TYPES):
            text = html  # plain text served as such: nothing to extract
        else:
            text = self.extract_html(html) if html.strip() else ""
        text = text.strip()
        if len(text) < max(self.min_text_chars, 1) or not _VISIBLE.search(text):
            return ExtractResult(None, "empty", encoding)
        return ExtractResult(text, None, encoding)
