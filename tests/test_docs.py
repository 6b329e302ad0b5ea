"""The method docs hold together: every relative link in the README and docs/ resolves, anchors included,
the docs index lists every page, and the section map points at sections that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_EXTERNAL = ("http://", "https://", "mailto:")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (links and headings in code are not Markdown)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (letters, digits, `-`, `_` and
    spaces stay), spaces turned into hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading).strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in "-_ ")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file defines; a repeated heading gets ``-1``, ``-2``… as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(files: list[Path], root: Path = ROOT) -> list[str]:
    """``file: target (why)`` for every relative link that does not resolve to a file and anchor."""
    problems = []
    for path in files:
        for line in _prose_lines(path.read_text(encoding="utf-8")):
            for target in _LINK.findall(line):
                if target.startswith(_EXTERNAL):
                    continue
                file_part, _, anchor = target.partition("#")
                resolved = (path.parent / file_part).resolve() if file_part else path
                if not resolved.exists():
                    problems.append(f"{path.relative_to(root)}: {target} (no such file)")
                elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                    problems.append(f"{path.relative_to(root)}: {target} (no such section)")
    return problems


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def test_every_relative_link_and_anchor_resolves() -> None:
    assert broken_links(_markdown_files()) == []


def test_a_broken_file_link_and_a_broken_anchor_are_caught(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A page\n\n## Some `code` section\n", encoding="utf-8")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#some-code-section) [gone](missing.md) [bad anchor](a.md#nowhere)\n"
        "```\n[in code](ignored.md)\n```\n[web](https://example.org/x.md)\n",
        encoding="utf-8",
    )
    problems = broken_links([page], root=tmp_path)
    assert problems == ["b.md: missing.md (no such file)", "b.md: a.md#nowhere (no such section)"]


def test_headings_get_githubs_anchors(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("# Title\n## The hash RNG\n## Tests\n## Tests\n## `pack.mode` and DD (dd)\n", encoding="utf-8")
    assert anchors(page) == {"title", "the-hash-rng", "tests", "tests-1", "packmode-and-dd-dd"}


def test_the_docs_index_lists_every_page() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    linked = {Path(target.partition("#")[0]).name for target in _LINK.findall(index)}
    pages = {path.name for path in DOCS.glob("*.md")} - {"README.md"}
    assert pages - linked == set()


def test_the_section_map_points_at_existing_sections() -> None:
    rows = [line.split("\t") for line in (DOCS / "section-map.tsv").read_text(encoding="utf-8").splitlines()]
    header, body = rows[0], rows[1:]
    assert header[:2] == ["section", "target"]
    assert body, "the section map is empty"
    sections = [row[0] for row in body]
    assert len(sections) == len(set(sections)), "a section is mapped twice"
    for section, target, *_ in body:
        assert re.fullmatch(r"\d+(\.\d+)?", section), section
        file_part, _, anchor = target.partition("#")
        path = ROOT / file_part
        assert file_part.startswith("docs/") and path.exists(), target
        assert not anchor or anchor in anchors(path), target
