"""Regenerate the config reference in docs/configuration.md from the pydantic models.

The block between the two markers is rewritten; the text around it is kept. ``--check`` exits 1
when the file is out of date instead of writing it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from winnow.cli.reference import config_reference_markdown

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def render(document: str) -> str:
    block = f"{START}\n{config_reference_markdown()}\n{END}"
    return re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, document, flags=re.S)


def main() -> int:
    current = REFERENCE.read_text(encoding="utf-8")
    updated = render(current)
    if "--check" in sys.argv:
        return 0 if updated == current else 1
    REFERENCE.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
