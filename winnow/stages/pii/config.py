"""Config section of the ``pii`` stage."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from winnow.core.config import Section

PiiKind = Literal["email", "ip", "phone", "credit_card", "iban"]


class PiiConfig(Section):
    """PII redaction: validated e-mail addresses, IP addresses, phone, card and IBAN numbers are replaced
    by a placeholder (docs/release-safety.md)."""

    enabled: bool = Field(True, description="Run this stage (after `filter`, before `dedup`).")
    kinds: list[PiiKind] = Field(
        default_factory=lambda: ["email", "ip", "phone", "credit_card", "iban"],
        description="Kinds to find and replace: `email` (host must end in a real public suffix), `ip` "
        "(IPv4/IPv6 parsed by `ipaddress`), `phone` (libphonenumber, Leniency.VALID), `credit_card` (issuer "
        "prefix and length, Luhn), `iban` (registry length, mod-97).",
    )
    replacement: str = Field(
        "<{KIND}>",
        description="Placeholder, a `str.format` template with `{KIND}` (upper case) and `{kind}`: `<EMAIL>`.",
    )
    phone_regions: list[str] = Field(
        default_factory=lambda: ["US", "GB"],
        description="Regions whose national phone formats are recognised (numbers written with +country code "
        "are found for every country); each region costs a matcher pass and some precision.",
    )
    ip_public_only: bool = Field(
        True,
        description="Redact only globally routable IP addresses (private, loopback and documentation ranges "
        "identify no one).",
    )

    @field_validator("replacement")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            value.format(KIND="EMAIL", kind="email")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"must be a str.format template using only {{KIND}} and {{kind}} ({error})") from None
        return value

    @field_validator("phone_regions")
    @classmethod
    def _regions(cls, value: list[str]) -> list[str]:
        bad = [region for region in value if not re.fullmatch(r"[A-Z]{2}", region)]
        if bad:
            raise ValueError(f"regions are ISO 3166-1 alpha-2 codes in upper case (US, GB, DE), got {bad}")
        return value
