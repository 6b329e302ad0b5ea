"""PII detection and redaction: regular expressions find candidates, validators keep the real ones.

Each kind pairs a permissive pattern with a check that a random string rarely passes, which is
what keeps precision high on web text full of version numbers, dates, order numbers and code:

* ``email``: RFC-5322-ish local part and dotted host; the host must end in a real public suffix
  (tldextract's bundled list, never fetched), so ``logo@2x.png`` or ``user@localhost`` are not emails.
  Obfuscated forms (``name [at] host [dot] com``) are not handled.
* ``ip``: IPv4 dotted quads with octets 0–255 (no leading zeros) and IPv6 in any textual form,
  parsed by ``ipaddress``. ``ip_public_only`` (default on, like datatrove's PII formatter) keeps only
  globally routable addresses: private, loopback, link-local and documentation ranges identify no one.
  A dotted quad right after "version"/"v"/"build" is a version number, not an address. IPv6 needs
  three non-empty groups, which keeps C++/Rust paths such as ``Abc::Def`` out.
* ``phone``: ``phonenumbers`` (libphonenumber's metadata) with ``Leniency.VALID``: numbers written
  with a ``+`` country code are found for every country, national forms for ``phone_regions``
  (default US/Canada and UK; one matcher pass per region, so each added region costs time and
  some precision: ``bench/pii_eval.py --regions`` measures it).
* ``credit_card``: 13–19 digits, contiguous or in groups split by one consistent space or hyphen;
  Luhn checksum, and the issuer prefix and length of a known network (Visa, Mastercard, Amex,
  Discover, JCB, Diners, UnionPay, Maestro). Luhn alone passes one random number in ten.
* ``iban``: country code, check digits and BBAN, optionally in groups of four; the length must be
  the registry's length for that country and the ISO 13616 mod-97 check must give 1.

Overlaps between kinds resolve to the longer span (then the kind order above), so an IBAN is never
also redacted as a phone number. Offsets are character offsets.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

KINDS = ("email", "ip", "phone", "credit_card", "iban")
_PRIORITY = {kind: rank for rank, kind in enumerate(("email", "iban", "credit_card", "ip", "phone"))}

Counter = Callable[[str, int], None]


@dataclass(frozen=True)
class Span:
    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Redaction:
    """One redacted value: its kind, where its placeholder sits in the output text, where it was in the input."""

    kind: str
    start: int
    end: int
    source_start: int
    source_end: int

    def as_record(self) -> dict[str, int | str]:
        return {"kind": self.kind, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class PiiResult:
    text: str
    counts: dict[str, int]
    redactions: tuple[Redaction, ...]


# ---------------------------------------------------------------------------------------------
# Validators (public: the bench and the tests call them directly)


def luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card_network(digits: str) -> str | None:
    """The issuing network whose prefix and length fit these digits (ISO/IEC 7812 IIN ranges)."""
    length = len(digits)
    two, four, six = int(digits[:2]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4" and length in (13, 16, 19):
        return "visa"
    if (51 <= two <= 55 or 2221 <= four <= 2720) and length == 16:
        return "mastercard"
    if two in (34, 37) and length == 15:
        return "amex"
    if (four == 6011 or two == 65 or 644 <= int(digits[:3]) <= 649 or 622126 <= six <= 622925) and 16 <= length <= 19:
        return "discover"
    if 3528 <= four <= 3589 and 16 <= length <= 19:
        return "jcb"
    if (300 <= int(digits[:3]) <= 305 or two in (36, 38, 39) or four == 3095) and 14 <= length <= 19:
        return "diners"
    if two == 62 and 16 <= length <= 19:
        return "unionpay"
    if (four in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763) or two == 67) and 12 <= length <= 19:
        return "maestro"
    return None


def credit_card_ok(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and _card_network(digits) is not None and luhn_ok(digits)


# IBAN length per country (SWIFT IBAN registry). A country not listed is not accepted.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_ok(compact: str) -> bool:
    """Registry length for the country and ISO 13616 mod-97 == 1 (letters count as 10..35)."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    remainder = 0
    for char in rearranged:
        value = int(char, 36)
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
    return remainder == 1


def ip_ok(candidate: str, public_only: bool) -> bool:
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    if address.version == 6 and sum(1 for group in candidate.split(":") if group) < 3:
        return False
    return address.is_global if public_only else True


# ---------------------------------------------------------------------------------------------
# Candidate patterns

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24})(?![\w-])"
)
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_VERSION_BEFORE = re.compile(r"(?i)\b(?:version|ver\.?|build|release|v)\s*$")
_IPV6 = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f:.]*:[0-9A-Fa-f.]*:)"
    r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}(?![\w:])"
)
_CARD = re.compile(r"(?<![\w-])\d(?:\d| (?=\d)|-(?=\d)){11,22}\d(?![\w]|-\d)")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){10,30}")


def _consistent_grouping(raw: str) -> bool:
    """Contiguous digits, or groups split by one kind of separator (as cards are printed)."""
    separators = {char for char in raw if not char.isdigit()}
    if not separators:
        return True
    if len(separators) > 1:
        return False
    groups = raw.split(separators.pop())
    return all(2 <= len(group) <= 6 for group in groups)


@dataclass(frozen=True)
class PiiRedactor:
    """Finds and replaces PII of the configured kinds; one instance per worker (it caches parsers).

    ``replacement`` is a ``str.format`` template with ``{KIND}`` (upper case) and ``{kind}``.
    """

    kinds: Sequence[str] = KINDS
    replacement: str = "<{KIND}>"
    # Regions whose national formats are recognised (numbers with a +country code are found for all).
    # US+GB chosen on the bench's choose split: nine regions raised recall but cost precision and 3.6x speed.
    phone_regions: Sequence[str] = ("US", "GB")
    ip_public_only: bool = True
    _suffixes: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown PII kind(s) {unknown}; known: {list(KINDS)}")

    @cached_property
    def _tld_extract(self):  # tldextract is imported on first use: workers that never need it skip its load
        # Bundled public-suffix snapshot only: no URL to fetch, no cache directory to write.
        import tldextract  # lazy: the public suffix list loads only when a domain is matched

        return tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)

    def _public_host(self, host: str) -> bool:
        known = self._suffixes.get(host)
        if known is None:
            parts = self._tld_extract(host)
            known = bool(parts.suffix) and bool(parts.domain)
            if len(self._suffixes) < 1 << 16:
                self._suffixes[host] = known
        return known

    # -- finders ---------------------------------------------------------------------------

    def _emails(self, text: str) -> Iterator[Span]:
        if "@" not in text:
            return
        for match in _EMAIL.finditer(text):
            local = match.group()[: match.group().index("@")]
            if local.endswith(".") or ".." in local:
                continue
            if self._public_host(match.group(1).lower()):
                yield Span("email", match.start(), match.end())

    def _ips(self, text: str) -> Iterator[Span]:
        for match in _IPV4.finditer(text):
            if _VERSION_BEFORE.search(text, max(0, match.start() - 10), match.start()):
                continue
            if ip_ok(match.group(), self.ip_public_only):
                yield Span("ip", match.start(), match.end())
        if "::" in text or text.count(":") >= 7:
            for match in _IPV6.finditer(text):
                if ip_ok(match.group(), self.ip_public_only):
                    yield Span("ip", match.start(), match.end())

    def _cards(self, text: str) -> Iterator[Span]:
        for match in _CARD.finditer(text):
            raw = match.group()
            if not _consistent_grouping(raw):
                continue
            # A card followed by another group of digits (a year, a code) still counts: try
            # the longest run of leading groups that validates.
            separator = next((char for char in raw if not char.isdigit()), None)
            groups = raw.split(separator) if separator else [raw]
            for keep in range(len(groups), 0, -1):
                digits = "".join(groups[:keep])
                if credit_card_ok(digits):
                    length = sum(map(len, groups[:keep])) + keep - 1
                    yield Span("credit_card", match.start(), match.start() + length)
                    break

    def _ibans(self, text: str) -> Iterator[Span]:
        position = 0
        while match := _IBAN.search(text, position):
            position = match.start() + 1
            length = IBAN_LENGTHS.get(match.group()[:2])
            if length is None:
                continue
            # Take exactly the registry length of characters: the greedy pattern may run on
            # into a following code or word (or the next IBAN, which the search then finds).
            taken, end = 0, match.start()
            while taken < length and end < match.end():
                if text[end] != " ":
                    taken += 1
                end += 1
            if taken < length or (end < len(text) and text[end].isalnum()):
                continue
            if iban_ok(text[match.start() : end].replace(" ", "")):
                yield Span("iban", match.start(), end)
                position = end

    def _phones(self, text: str) -> Iterator[Span]:
        import phonenumbers  # lazy: phonenumbers metadata is large; loaded only for phone detection

        for region in self.phone_regions:
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
                yield Span("phone", match.start, match.end)

    def find(self, text: str) -> list[Span]:
        """Validated, non-overlapping spans in text order."""
        finders = {
            "email": self._emails,
            "ip": self._ips,
            "phone": self._phones,
            "credit_card": self._cards,
            "iban": self._ibans,
        }
        candidates = [span for kind in self.kinds for span in finders[kind](text)]
        candidates.sort(key=lambda s: (-(s.end - s.start), _PRIORITY[s.kind], s.start))
        chosen: list[Span] = []
        for span in candidates:
            if all(span.end <= other.start or span.start >= other.end for other in chosen):
                chosen.append(span)
        return sorted(chosen, key=lambda s: s.start)

    def __call__(self, text: str, count: Counter | None = None) -> PiiResult:
        spans = self.find(text)
        counts = dict.fromkeys(self.kinds, 0)
        pieces: list[str] = []
        redactions: list[Redaction] = []
        cursor = out_len = 0
        for span in spans:
            pieces.append(text[cursor : span.start])
            out_len += span.start - cursor
            placeholder = self.replacement.format(KIND=span.kind.upper(), kind=span.kind)
            pieces.append(placeholder)
            redactions.append(Redaction(span.kind, out_len, out_len + len(placeholder), span.start, span.end))
            out_len += len(placeholder)
            cursor = span.end
            counts[span.kind] += 1
        pieces.append(text[cursor:])
        if count is not None:
            for kind, value in counts.items():
                if value:
                    count(f"pii:{kind}", value)
        return PiiResult("".join(pieces), counts, tuple(redactions))
