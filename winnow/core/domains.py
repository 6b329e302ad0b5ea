"""Domain taxonomies shared by scoring, tagging, mixing and the report.

WebOrganizer topics and formats (their exact id orders) and DataMan's 15 application domains.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# docs/domains.md#weborganizer: the exact id orders of WebOrganizer's two taxonomies.
TOPICS: tuple[str, ...] = (
    "Adult",
    "Art & Design",
    "Software Dev.",
    "Crime & Law",
    "Education & Jobs",
    "Hardware",
    "Entertainment",
    "Social Life",
    "Fashion & Beauty",
    "Finance & Business",
    "Food & Dining",
    "Games",
    "Health",
    "History",
    "Home & Hobbies",
    "Industrial",
    "Literature",
    "Politics",
    "Religion",
    "Science & Tech.",
    "Software",
    "Sports & Fitness",
    "Transportation",
    "Travel",
)

FORMATS: tuple[str, ...] = (
    "Academic Writing",
    "Content Listing",
    "Creative Writing",
    "Support",
    "Comment Section",
    "FAQ",
    "Truncated",
    "Knowledge Article",
    "Legal",
    "Listicle",
    "News Article",
    "Nonfiction Writing",
    "About (Org.)",
    "News (Org.)",
    "About (Pers.)",
    "Personal Blog",
    "Product Page",
    "Q&A",
    "Spam / Ads",
    "Structured Data",
    "Docs.",
    "Audio Transcript",
    "Tutorial",
    "User Review",
)

TAXONOMIES: dict[str, tuple[str, ...]] = {"topic": TOPICS, "format": FORMATS}

# docs/dataman.md#criteria-and-domains: DataMan's 15 application domains, letter → name. The tag stage writes the
# letter (what
# the DataMan model emits and what ``application_domain`` holds), so both sources agree.
DATAMAN_DOMAINS: dict[str, str] = {
    "A": "Medicine",
    "B": "Finance",
    "C": "Law",
    "D": "Education",
    "E": "Technology",
    "F": "Entertainment",
    "G": "Mathematics",
    "H": "Coding",
    "I": "Government",
    "J": "Culture",
    "K": "Transportation",
    "L": "Retail E-commerce",
    "M": "Telecommunication",
    "N": "Agriculture",
    "O": "Other",
}

_DOMAIN_LETTER = {name: letter for letter, name in DATAMAN_DOMAINS.items()}

# docs/domains.md#dataman-domains [ours, for reports only]: WebOrganizer topic → DataMan domain; topics not listed →
# Other.
TOPIC_TO_DATAMAN: dict[str, str] = {
    "Health": "A",
    "Finance & Business": "B",
    "Crime & Law": "C",
    "Education & Jobs": "D",
    "Science & Tech.": "E",
    "Hardware": "E",
    "Software": "E",
    "Entertainment": "F",
    "Games": "F",
    "Software Dev.": "H",
    "Politics": "I",
    "Art & Design": "J",
    "Literature": "J",
    "History": "J",
    "Religion": "J",
    "Transportation": "K",
    "Fashion & Beauty": "L",
}


def dataman_domain_of_topic(topic: str) -> str:
    """The docs/domains.md#dataman-domains DataMan letter for a WebOrganizer topic name ("O" = Other when none fits)."""
    return TOPIC_TO_DATAMAN.get(topic, "O")


def dataman_letter(value: Any) -> str | None:
    """A DataMan domain as its letter, from a letter (``"E"``) or a name (``"Technology"``)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.upper() in DATAMAN_DOMAINS:
        return text.upper()
    return _DOMAIN_LETTER.get(text)


def taxonomy_descriptions() -> dict[str, list[dict[str, Any]]]:
    """Names and descriptions of both taxonomies (WebOrganizer's taxonomy file, bundled)."""
    path = Path(__file__).resolve().parent.parent / "data" / "models" / "tagger" / "taxonomy.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return {"topic": data["topics"], "format": data["formats"]}
