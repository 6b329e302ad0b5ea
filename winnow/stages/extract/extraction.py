"""HTML to main text: decoding, payload checks and three extractor backends.

* ``trafilatura``: ``trafilatura.extract``, the most accurate open extractor on the
  trafilatura and ScrapingHub benchmarks, and the slowest (lxml, many XPath passes, fallbacks).
* ``resiliparse``: ``extract_plain_text(main_content=True)``, about 10x faster (Lexbor C DOM)
  but it keeps much more boilerplate (related links, comment forms, captions).
* ``fast`` (default): one walk over the DOM (selectolax's Lexbor binding) cuts the page into
  text blocks and remembers which blocks each marked element holds; the main text is then
  chosen by arithmetic over those runs (``select_blocks``): the article container when the page
  marks one (``itemprop=articleBody``, ``entry-content``, ``<article>``…, the markers
  trafilatura's BODY_XPATH looks for), else the smallest element holding most of the page's
  paragraph text; the lead paragraphs just before it; minus elements whose class/id names
  boilerplate (trafilatura's discard vocabulary) or whose tag is ``nav``/``footer``/``aside``,
  comment sections, captions, menus (link density), short text set directly in layout
  ``<div>``s, and headings that introduce nothing. Every threshold was chosen on one half of
  trafilatura-eval and is reported on the other half and on article-extraction-benchmark by
  ``bench/extraction_quality.py``, beside trafilatura, resiliparse and jusText.

Every failure mode of real payloads ends as an ``ExtractResult`` with a reason, never an
exception: oversized pages (``too_large``), non-HTML bodies such as PDF or images
(``not_html``), pages with no text (``empty``).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
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
#
# One walk over the DOM (selectolax's Lexbor binding: node access costs ~0.2 us, so a Python walk
# over every node stays a few times faster than trafilatura) cuts the page into text blocks at
# block-level elements. Each block keeps its innermost block tag, its length and its link text;
# elements that mark an article container or name boilerplate remember the run of blocks they hold.
# The choice of blocks is then plain arithmetic over those runs (see ``select_blocks``).


def _tags(names: str) -> frozenset[str]:
    return frozenset(names.split())


# Elements whose content is never main text (scripts, media, form controls).
_SKIP_TAGS = _tags(
    "script style noscript template svg iframe object canvas head select option button input textarea video "
    "audio map embed datalist meta link title math"
)
# Elements that start and end a text block.
_BLOCK_TAGS = _tags(
    "p div section article main header footer nav aside h1 h2 h3 h4 h5 h6 ul ol dl li dt dd table tr td th "
    "tbody thead tfoot caption blockquote pre figure figcaption form fieldset legend address details summary hr "
    "center body dialog menu hgroup search"
)
_HEADINGS = frozenset(("h1", "h2", "h3", "h4", "h5", "h6"))
# Elements that can hold the main text as a whole: candidates for the densest region.
_BOX_TAGS = _tags("div section article main td table form center ul ol dl blockquote")
# Blocks whose text sits directly in a layout element, not in a paragraph, list item, heading or cell.
_BARE_TAGS = _tags("div section article main header footer nav aside form body center")
# Blocks before an article container that may be its lead paragraph (not captions, titles or cells).
_LEAD_EXCLUDE = frozenset(("figcaption", "caption", "h1", "li", "td", "th", "dd", "dt", "address"))
# Elements a boilerplate class/id may remove (trafilatura prunes the same block-level set).
_PRUNE_TAGS = frozenset({"div", "section", "ul", "ol", "dl", "aside", "form", "details", "figure", "nav", "footer"})
# Removed by tag alone, like resiliparse's main-content mode does (header is not: it holds titles).
_BOILERPLATE_TAGS = frozenset(("nav", "footer", "aside"))
_FLAG_TAGS = _PRUNE_TAGS | {"article", "main"}
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
# One search tells most elements apart: nothing in their class or id names a region.
_ANY_CLASS = re.compile(
    "|".join(r.pattern for r in (_BOILERPLATE_CLASS, _COMMENTS_CLASS, _ARTICLE_CLASS, _STORY_CLASS))
)
_ANY_ID = re.compile("|".join(r.pattern for r in (_BOILERPLATE_ID, _COMMENTS_ID, _ARTICLE_ID, _STORY_ID)))
_SPACE = re.compile(r"\s+")
_LINE_BREAK = "\x00"  # stands for <br> until a block's whitespace is collapsed
_MAX_DEPTH = 256  # deeper subtrees (unclosed tags) are read as one run of text
_MAX_UNCLOSED_DIVS = 3000  # see fast_extract

# Inline elements whose closing matters: links (link text), <pre> (whitespace), <li> (bullets).
_COUNTED_TAGS = frozenset(("a", "pre", "li"))
_INLINE = ("", False, None)  # the state of any other inline element

# Region kinds (the second field of a region).
_PLAIN, _BOILERPLATE, _COMMENTS = 0, 1, 2


@dataclass(frozen=True)
class FastOptions:
    """Knobs of the fast backend. Every default was chosen on the *choose* half of trafilatura-eval
    and is reported on the other half and on article-extraction-benchmark (bench/extraction_quality.py).
    All of them are ``[ours]``: heuristics, not a published method."""

    use_container: bool = True  # extract only from the article container when the page marks one
    container_min_share: float = 0.15  # a marked container must hold this share of the page's text
    prune_max_share: float = 0.4  # a boilerplate-named element holding this share of the text stays
    # "Paragraph text": blocks of at least this many characters, under 30% link text, not headings.
    paragraph_chars: int = 80
    # No marked container: keep the smallest element that holds this share of the paragraph text.
    density_share: float = 0.85
    # Marked container: narrow it to the smallest element inside holding this share of its paragraph text.
    inner_density_share: float = 0.99
    # Lead paragraphs: up to this many blocks before the container, long and nearly link-free, are kept.
    lead_window: int = 8
    lead_min_chars: int = 80
    lead_max_link_share: float = 0.1
    link_density: float = 0.6  # blocks whose text is at least this much link text are menus
    link_block_max_chars: int = 1000  # long blocks are kept whatever their links
    # Text directly in a <div> (not in <p>, <li>, a heading or a cell) shorter than this is interface
    # text (dates, labels, buttons, promos) — on pages where paragraphs hold at least this share of the text.
    bare_block_min_chars: int = 120
    bare_block_min_paragraph_share: float = 0.2
    drop_captions: bool = True  # <figcaption>: photo credits and captions
    drop_orphan_headings: bool = True  # headings followed by nothing kept, or by another heading
    heading_max_chars: int = 100  # longer "headings" are leads set in <h2>: treated as text
    fallback_min_chars: int = 100  # shorter results are retried with <noscript> content


@dataclass(frozen=True)
class _Block:
    text: str
    chars: int
    link_chars: int
    tag: str  # innermost block-level element
    in_list: bool


# What one class or id string names: (article body, story/main column, boilerplate, comments).
_NAMES_NOTHING = (False, False, False, False)


def _class_names(cls: str) -> tuple[bool, bool, bool, bool]:
    if not _ANY_CLASS.search(cls):
        return _NAMES_NOTHING
    return (
        bool(_ARTICLE_CLASS.search(cls)),
        bool(_STORY_CLASS.search(cls)),
        bool(_BOILERPLATE_CLASS.search(cls)),
        bool(_COMMENTS_CLASS.search(cls)),
    )


def _id_names(ident: str) -> tuple[bool, bool, bool, bool]:
    if not _ANY_ID.search(ident):
        return _NAMES_NOTHING
    return (
        bool(_ARTICLE_ID.search(ident)),
        bool(_STORY_ID.search(ident)),
        bool(_BOILERPLATE_ID.search(ident)),
        bool(_COMMENTS_ID.search(ident)),
    )


def _region_kind(tag: str, attrs: dict, names: tuple[bool, bool, bool, bool], comments: bool) -> tuple[int, int]:
    """(container rank 0-3 or -1, region kind) of one element from its tag, attributes and names."""
    article, story, boilerplate, comment = names
    role = attrs.get("role") or ""
    rank = -1
    if tag in ("article", "div", "main", "section"):
        if article or attrs.get("itemprop") == "articleBody":
            rank = 0
        elif tag == "article":
            rank = 1
        elif story or role == "article":
            rank = 2
        elif tag == "main" or role == "main":
            rank = 3
    kind = _PLAIN
    if tag in _BOILERPLATE_TAGS:
        kind = _BOILERPLATE
    elif tag in _PRUNE_TAGS:
        if boilerplate or attrs.get("aria-hidden") == "true" or "nav" in role.lower():
            kind = _BOILERPLATE
        elif comment and not comments:
            kind = _COMMENTS
    return rank, kind


class _BlockWalker:
    """Cuts a DOM into text blocks and records which blocks each marked element holds.

    A region is ``[container rank, kind, first block, end block]``; ``boxes`` are the same for
    unmarked layout elements (candidates for the densest region)."""

    def __init__(self, comments: bool, tables: bool, noscript: bool):
        self.comments = comments
        skip = _SKIP_TAGS if tables else _SKIP_TAGS | {"table"}
        self.skip = skip - {"noscript"} if noscript else skip
        self.blocks: list[_Block] = []
        self.regions: list[list[int]] = []
        self.boxes: list[list[int]] = []
        self.parts: list[str] = []
        self.link_chars = 0
        self.in_link = 0
        self.in_pre = 0
        self.in_list = 0
        self.block_tags = ["body"]
        self.class_memo: dict[str, tuple[bool, bool, bool, bool]] = {}

    def flush(self) -> None:
        text = "".join(self.parts)
        self.parts = []
        if self.in_pre:
            text = text.replace(_LINE_BREAK, "\n").strip("\n")
        elif _LINE_BREAK in text:
            lines = (_SPACE.sub(" ", line).strip() for line in text.split(_LINE_BREAK))
            text = "\n".join(line for line in lines if line)
        else:
            text = _SPACE.sub(" ", text).strip()
        if text:
            self.blocks.append(_Block(text, len(text), self.link_chars, self.block_tags[-1], self.in_list > 0))
        self.link_chars = 0

    def enter(self, node: Any, tag: str) -> tuple | None:
        """Open an element; None when its subtree is skipped, ``_INLINE`` when closing it changes nothing."""
        if tag in self.skip:
            return None
        if tag == "br":
            self.parts.append(_LINE_BREAK)
            return None
        rank, kind = -1, _PLAIN
        if tag in _FLAG_TAGS:
            attrs = node.attributes
            if attrs:
                if "hidden" in attrs:
                    return None
                cls = attrs.get("class")
                names = _NAMES_NOTHING
                if cls:
                    names = self.class_memo.get(cls) or self.class_memo.setdefault(cls, _class_names(cls))
                ident = attrs.get("id")
                if ident:
                    names = tuple(a or b for a, b in zip(names, _id_names(ident), strict=True))
                rank, kind = _region_kind(tag, attrs, names, self.comments)
            elif tag in _BOILERPLATE_TAGS:
                kind = _BOILERPLATE
            elif tag == "article":
                rank = 1
            elif tag == "main":
                rank = 3
        is_block = tag in _BLOCK_TAGS
        if not is_block and tag not in _COUNTED_TAGS:
            return _INLINE
        region = None
        if is_block:
            if self.parts:
                self.flush()
            self.block_tags.append(tag)
            if rank >= 0 or kind:
                region = [rank, kind, len(self.blocks), -1]
                self.regions.append(region)
            elif tag in _BOX_TAGS:
                region = [-1, _PLAIN, len(self.blocks), -1]
                self.boxes.append(region)
        if tag == "a":
            self.in_link += 1
        elif tag == "pre":
            self.in_pre += 1
        elif tag == "li":
            self.in_list += 1
        return tag, is_block, region

    def exit(self, state: tuple) -> None:
        tag, is_block, region = state
        if is_block:
            if self.parts:
                self.flush()
            self.block_tags.pop()
            if region is not None:
                region[3] = len(self.blocks)
        if tag == "a":
            self.in_link -= 1
        elif tag == "pre":
            self.in_pre -= 1
        elif tag == "li":
            self.in_list -= 1

    def walk(self, root: Any, text_id: int) -> None:
        """Depth-first over ``root``'s subtree by child/next/parent links (no recursion: real pages
        nest thousands deep when tags are left open)."""
        stack: list[tuple] = []
        node = root.child
        while node is not None:
            if node.tag_id == text_id:
                text = node.text_content
                # Whitespace between blocks (most text nodes of real pages) opens no block.
                if text and (self.parts or not text.isspace()):
                    self.parts.append(text)
                    if self.in_link:
                        self.link_chars += len(text.strip())
            else:
                tag = node.tag
                if tag and tag[0] != "-":
                    state = self.enter(node, tag)
                    if state is not None:
                        child = node.child
                        if child is not None:
                            if len(stack) < _MAX_DEPTH:
                                stack.append(state)
                                node = child
                                continue
                            self.parts.append(" " + node.text(deep=True) + " ")
                        if state is not _INLINE:
                            self.exit(state)
            following = node.next
            while following is None and stack:
                node = node.parent
                state = stack.pop()
                if state is not _INLINE:
                    self.exit(state)
                following = node.next
            node = following
        if self.parts:
            self.flush()


def _paragraph_prefix(blocks: list[_Block], opts: FastOptions, skip: set[int]) -> list[int]:
    """Cumulative characters of paragraph text (see FastOptions.paragraph_chars)."""
    prefix = [0]
    for i, b in enumerate(blocks):
        good = (
            i not in skip
            and b.chars >= opts.paragraph_chars
            and b.link_chars < 0.3 * b.chars
            and b.tag not in _HEADINGS
        )
        prefix.append(prefix[-1] + (b.chars if good else 0))
    return prefix


def _densest(regions: list[list[int]], prefix: list[int], lo: int, hi: int, share: float) -> list[int] | None:
    """The region inside [lo, hi) spanning fewest blocks that holds ``share`` of its paragraph text."""
    total = prefix[hi] - prefix[lo]
    if not total:
        return None
    best = None
    for r in regions:
        if r[1] or r[2] < lo or r[3] > hi:
            continue
        if prefix[r[3]] - prefix[r[2]] >= share * total and (best is None or r[3] - r[2] < best[3] - best[2]):
            best = r
    return best


def _covered(regions: Iterable[list[int]]) -> set[int]:
    """Blocks held by any of ``regions`` (in document order), each counted once however deep the nesting."""
    covered: set[int] = set()
    end = -1
    for r in regions:
        if r[3] > end:
            covered.update(range(max(r[2], end), r[3]))
            end = r[3]
    return covered


def select_blocks(
    blocks: list[_Block], regions: list[list[int]], boxes: list[list[int]], opts: FastOptions
) -> list[str]:
    """Why each block is dropped ('' when it is kept).

    1. Container: the page's article container (strongest marker first) if it holds
       ``container_min_share`` of the text, narrowed to its densest inner element; else the
       densest element of the page. Lead paragraphs just before it are taken back.
    2. Boilerplate-named elements are removed (outermost first) unless they hold
       ``prune_max_share`` of the container's text; comment sections always are.
    3. Blocks: captions, menus (link density), short text sitting directly in layout
       elements, and headings that introduce nothing kept are dropped."""
    n = len(blocks)
    cum = [0]
    for b in blocks:
        cum.append(cum[-1] + b.chars)
    comments = _covered(r for r in regions if r[1] == _COMMENTS)
    container = None
    if opts.use_container:
        for rank in range(4):
            first = next((r for r in regions if r[0] == rank), None)
            if first is not None and cum[first[3]] - cum[first[2]] >= opts.container_min_share * cum[n]:
                container = first
                break
    prefix = None
    if container is not None and opts.inner_density_share:
        prefix = _paragraph_prefix(blocks, opts, comments)
        container = _densest(boxes + regions, prefix, container[2], container[3], opts.inner_density_share) or container
    elif container is None and opts.density_share:
        prefix = _paragraph_prefix(blocks, opts, comments)
        container = _densest(boxes + regions, prefix, 0, n, opts.density_share)
    lo, hi = (container[2], container[3]) if container is not None else (0, n)
    why = ["" if lo <= i < hi else "outside" for i in range(n)]
    limit = opts.prune_max_share * ((cum[hi] - cum[lo]) or 1)
    pruned: set[int] = set()
    end = -1
    for r in regions:  # document order: an outer element comes before the ones it holds
        if not r[1] or r[2] < end:
            continue
        if r[1] == _COMMENTS or cum[r[3]] - cum[r[2]] < limit:
            end = r[3]
            pruned.update(range(r[2], r[3]))
    for i in pruned:
        if not why[i]:
            why[i] = "boilerplate"
    if container is not None:
        # Outside the container a boilerplate name is enough: the size guard protects content only.
        named = _covered(r for r in regions if r[1] and r[3] <= lo)
        for i in range(lo - 1, max(lo - opts.lead_window, 0) - 1, -1):
            b = blocks[i]
            if (
                i not in pruned
                and i not in named
                and b.tag not in _LEAD_EXCLUDE
                and b.chars >= opts.lead_min_chars
                and b.link_chars <= opts.lead_max_link_share * b.chars
            ):
                why[i] = ""
    kept_chars = sum(b.chars for i, b in enumerate(blocks) if not why[i]) or 1
    paragraph_chars = sum(b.chars for i, b in enumerate(blocks) if not why[i] and b.tag == "p")
    drop_bare = paragraph_chars >= opts.bare_block_min_paragraph_share * kept_chars
    for i, b in enumerate(blocks):
        if why[i]:
            continue
        if opts.drop_captions and b.tag == "figcaption":
            why[i] = "caption"
        elif drop_bare and b.tag in _BARE_TAGS and b.chars < opts.bare_block_min_chars:
            why[i] = "bare"
        elif b.link_chars and b.chars < opts.link_block_max_chars and b.link_chars >= opts.link_density * b.chars:
            why[i] = "links"
    if opts.drop_orphan_headings:

        def heading(i: int) -> bool:
            return blocks[i].tag in _HEADINGS and blocks[i].chars < opts.heading_max_chars

        # A heading followed by a dropped menu, or by nothing, is that menu's title.
        seq = [i for i in range(n) if why[i] in ("", "links")]
        for j, i in enumerate(seq):
            if why[i] or not heading(i):
                continue
            nxt = seq[j + 1] if j + 1 < len(seq) else None
            if nxt is None or why[nxt] or heading(nxt):
                why[i] = "orphan heading"
    return why


_TEXT_NODE_ID: list[int] = []


def _parse(html: str) -> Any:
    from selectolax.lexbor import LexborHTMLParser  # lazy: selectolax only for the fast backend

    tree = LexborHTMLParser(html)  # drops lone surrogates itself
    if not _TEXT_NODE_ID:
        _TEXT_NODE_ID.append(LexborHTMLParser("<p>x</p>").css_first("p").child.tag_id)
    return tree


def fast_blocks(
    html: str, comments: bool = False, tables: bool = True, noscript: bool = False
) -> tuple[list[_Block], list[list[int]], list[list[int]]]:
    """The page's text blocks, marked regions and layout boxes (see ``_BlockWalker``)."""
    body = _parse(html).body
    walker = _BlockWalker(comments, tables, noscript)
    if body is not None:
        walker.walk(body, _TEXT_NODE_ID[0])
    return walker.blocks, walker.regions, walker.boxes


def fast_extract(html: str, comments: bool = False, tables: bool = True, opts: FastOptions | None = None) -> str:
    """The ``fast`` backend (see the module docstring).

    Pages with thousands of unclosed ``<div>``s get resiliparse's plain text instead: selectolax's
    Lexbor build takes time quadratic in nesting depth (0.6 s at 20,000 levels, 2.5 s at 40,000),
    and so does resiliparse's main-content mode (2.5 s at 10,000), while its parser and plain
    extraction stay linear. No real article nests that deep; such pages are left to the filters."""
    opts = opts or FastOptions()
    if html.count("<div") + html.count("<DIV") - html.count("</div") - html.count("</DIV") > _MAX_UNCLOSED_DIVS:
        from resiliparse.extract.html2text import extract_plain_text  # lazy: resiliparse only when extracting HTML

        return extract_plain_text(html, skip_elements=None if tables else ["table"])
    text = ""
    for noscript in (False, True):
        blocks, regions, boxes = fast_blocks(html, comments, tables, noscript)
        why = select_blocks(blocks, regions, boxes, opts)
        text = "\n".join(("• " + b.text if b.in_list else b.text) for b, w in zip(blocks, why, strict=True) if not w)
        if len(text) >= opts.fallback_min_chars or "<noscript" not in html:
            break
    return text


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
