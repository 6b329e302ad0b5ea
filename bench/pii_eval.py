"""Precision and recall of PII redaction per kind on a labelled set of real web text; docs/s per core.

The labelled set (``tests/data/pii/labelled.jsonl.gz``, built by ``--build`` from the shared corpora):

* natural: 120 weborganizer-dclm pages that contain at least one loose PII-like candidate, with
  every candidate labelled by hand (``tests/data/pii/natural_labels.json``): their real e-mail
  addresses and phone numbers (UK, US, NZ, Nigerian, Taiwanese, … formats) and their real
  non-PII look-alikes (dates, ISBNs, ISSNs, account numbers, times, coordinates);
* planted: 200 other pages with no such candidate, each given 1–4 synthetic PII values in varied
  formats (valid by construction: Luhn, IBAN mod-97, global IP ranges, numbers libphonenumber
  accepts) and 0–2 hard negatives (Luhn-failing card numbers, IBANs with a wrong check, private
  IPs, version strings, ISBNs, dates, tracking numbers) at seeded places.

Scoring: a prediction is a true positive when it overlaps a gold span of the same kind (each
gold span counts once); ``exact`` also requires the same boundaries. Figures are printed for the
*choose* split (any tuning looked only at it) and the *report* split (by id hash; the quoted figures).

Peer, same run: plain regular expressions without validation (datatrove's PII formatter style:
e-mail and IPv4 patterns, plus digit-run phone, 13–19-digit card and IBAN-shape patterns), to show
what each validator buys.

Full pipeline (``--pipeline``): the labelled set through winnow's Beam graph (stage ``pii``): the
output text must equal the core's redaction document by document (so the precision and recall above
hold for the stage), and the manifest's per-kind counts must equal the core's; then ``--speed-docs``
weborganizer-dclm pages through normalize → filter → pii, with the redactions per 1,000 kept pages by
kind and the wall-clock cost of the stage (run with and without it).

    python bench/pii_eval.py [--build] [--speed-docs 2000] [--pipeline]
"""

from __future__ import annotations

import argparse
import gzip
import ipaddress
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

import xxhash

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._pipeline import run_winnow  # noqa: E402
from winnow.stages.pii.redact import IBAN_LENGTHS, KINDS, PiiRedactor, Span, luhn_ok  # noqa: E402

# The checkout's sibling shared/ (main checkout) or the nearest one above (a worktree).
CORPORA = next(
    (p / "shared" / "corpora" for p in Path(__file__).resolve().parents if (p / "shared" / "corpora").is_dir()),
    Path("shared/corpora"),
)
DATA = ROOT / "tests" / "data" / "pii"
LABELLED = DATA / "labelled.jsonl.gz"
NATURAL = DATA / "natural_labels.json"
SEED = 17

# -------------------------------------------------------------------------------------------
# Building the labelled set

_LOOSE = [
    re.compile(r"[^\s<>()\[\]]+@[^\s<>()\[\]]+"),
    re.compile(r"\d+\.\d+\.\d+\.\d+"),
    re.compile(r"[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{0,4}){2,7}"),
    re.compile(r"\b[A-Z]{2}\d{2}\s?[A-Z0-9]{4}"),
    re.compile(r"(?<![\w])\+?\(?\d[\d\s().\-/]{5,}\d"),
]


def _has_loose_candidate(text: str) -> bool:
    for pattern in _LOOSE:
        for match in pattern.finditer(text):
            if pattern is _LOOSE[-1] and sum(c.isdigit() for c in match.group()) < 7:
                continue
            return True
    return False


_FIRST_NAMES = ("anna", "ben", "carla", "david", "elif", "farid", "grace", "hiro", "ines", "jonas", "kemal", "lucia")


def _plant_email(rng: random.Random) -> str:
    first, last = rng.choice(_FIRST_NAMES), rng.choice(["smith", "okafor", "muller", "tanaka", "rossi", "novak"])
    local = rng.choice([f"{first}.{last}", f"{first}{rng.randint(1, 99)}", f"{first[0]}{last}", f"{first}_{last}+news"])
    host = rng.choice(
        [
            "gmail.com",
            "yahoo.co.uk",
            "web.de",
            "uni-heidelberg.de",
            "acme-corp.io",
            "mail.ru",
            "orange.fr",
            "cs.ucla.edu",
        ]
    )
    return f"{local}@{host}"


def _plant_ip(rng: random.Random) -> str:
    if rng.random() < 0.3:
        groups = [rng.choice(["2a00", "2a02", "2001", "2604", "2c0f"])] + [
            f"{rng.randrange(1 << 16):x}" for _ in range(7)
        ]
        address = ipaddress.IPv6Address(":".join(groups))
        return address.compressed if rng.random() < 0.7 else address.exploded
    while True:
        address = ipaddress.IPv4Address(rng.randrange(1 << 24, 224 << 24))
        if address.is_global:
            return str(address)


def _plant_phone(rng: random.Random) -> str:
    import phonenumbers

    region = rng.choice(["US", "US", "US", "CA", "GB", "DE", "FR", "AU", "IN"])
    while True:
        if region in ("US", "CA"):
            area = rng.choice([212, 415, 617, 312, 206, 303, 512, 404, 305, 702, 416, 604])
            national = f"{area}{rng.randint(2, 9)}{rng.randint(0, 99):02d}{rng.randint(0, 9999):04d}"
        else:
            example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.FIXED_LINE)
            digits = str(example.national_number)
            keep = rng.randint(2, 4)
            national = digits[:keep] + "".join(str(rng.randint(0, 9)) for _ in digits[keep:])
        number = phonenumbers.parse(national, region)
        if phonenumbers.is_valid_number(number):
            break
    if region in ("US", "CA"):
        a, b, c = national[:3], national[3:6], national[6:]
        return rng.choice([f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}", f"1-{a}-{b}-{c}"])
    style = rng.choice([phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.NATIONAL])
    return phonenumbers.format_number(number, style)


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(str(rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    for check in "0123456789":
        if luhn_ok(body + check):
            return body + check
    raise AssertionError("unreachable")


def _plant_card(rng: random.Random, valid: bool = True) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16)])
    digits = _luhn_complete(prefix, length, rng)
    if not valid:
        digits = digits[:-1] + str((int(digits[-1]) + rng.randint(1, 9)) % 10)
    # Amex prints 4-6-5; the others 4-4-4-4.
    groups = (
        [digits[:4], digits[4:10], digits[10:]] if length == 15 else [digits[i : i + 4] for i in range(0, length, 4)]
    )
    return rng.choice([" ", "-", ""]).join(groups)


def _iban_check(country: str, bban: str) -> str:
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{98 - int(numeric) % 97:02d}"


def _plant_iban(rng: random.Random, valid: bool = True) -> str:
    country = rng.choice(["DE", "GB", "FR", "NL", "ES", "IT", "CH", "PL"])
    length = IBAN_LENGTHS[country] - 4
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    if country == "GB":
        bban = "".join(rng.choice(letters) for _ in range(4)) + "".join(str(rng.randint(0, 9)) for _ in range(14))
    elif country == "NL":
        bban = "".join(rng.choice(letters) for _ in range(4)) + "".join(str(rng.randint(0, 9)) for _ in range(10))
    else:
        bban = "".join(str(rng.randint(0, 9)) for _ in range(length))
    check = _iban_check(country, bban)
    if not valid:
        check = f"{(int(check) + rng.randint(1, 50)) % 97 + 2:02d}"
    compact = country + check + bban
    if rng.random() < 0.6:
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


_TEMPLATES = {
    "email": [
        "Contact me at {v}.",
        "E-mail: {v}",
        "Send your CV to <{v}>",
        "Questions? Write to {v} anytime.",
        "({v})",
    ],
    "ip": ["Our server at {v} was down.", "Logged from IP {v} yesterday", "Ping {v} to test.", "Host: {v}"],
    "phone": ["Call us on {v}.", "Tel: {v}", "Phone {v} (office hours)", "Text {v} for details"],
    "credit_card": ["My card number is {v}, please charge it.", "Card: {v}", "paid with {v} exp 04/27"],
    "iban": ["Please transfer to IBAN {v}.", "IBAN: {v}", "Bank details {v} (reference 2291)"],
}

_NEGATIVES = [
    (
        "version",
        lambda rng: (
            f"Upgrade to version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}.{rng.randint(0, 99)} now."
        ),
    ),
    ("private_ip", lambda rng: f"Set the gateway to 192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)} first."),
    (
        "private_ip",
        lambda rng: f"The box answers on 10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}.",
    ),
    ("bad_card", lambda rng: f"Order reference {_plant_card(rng, valid=False)}."),
    ("bad_iban", lambda rng: f"Account {_plant_iban(rng, valid=False)} was closed."),
    (
        "isbn",
        lambda rng: (
            f"ISBN 978-{rng.randint(0, 1)}-{rng.randint(100, 999)}-{rng.randint(10000, 99999)}-{rng.randint(0, 9)}"
        ),
    ),
    (
        "date",
        lambda rng: (
            f"On {rng.randint(2000, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} at 9:{rng.randint(10, 59)}"
        ),
    ),
    ("tracking", lambda rng: f"Tracking number 1Z{rng.randint(10**15, 10**16 - 1)}."),
    ("coordinates", lambda rng: f"GPS: {rng.uniform(-80, 80):.6f}, {rng.uniform(-170, 170):.6f}"),
    ("time", lambda rng: f"Posted 2017-04-09 {rng.randint(10, 23)}:{rng.randint(10, 59)}:{rng.randint(10, 59)}"),
]


def _plant(text: str, rng: random.Random) -> tuple[str, list[dict]]:
    """Insert 1–4 PII sentences and 0–2 hard negatives at the ends of random lines."""
    lines = text.split("\n")
    planters = {
        "email": _plant_email,
        "ip": _plant_ip,
        "phone": _plant_phone,
        "credit_card": _plant_card,
        "iban": _plant_iban,
    }
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(KINDS)
        # The value is marked as \x00kind\x02value\x01 and the markers resolved to spans below.
        sentence = rng.choice(_TEMPLATES[kind]).replace("{v}", f"\x00{kind}\x02{planters[kind](rng)}\x01")
        line = rng.randrange(len(lines))
        lines[line] = (lines[line] + " " + sentence).strip()
    for _ in range(rng.randint(0, 2)):
        _, make = rng.choice(_NEGATIVES)
        line = rng.randrange(len(lines))
        lines[line] = (lines[line] + " " + make(rng)).strip()
    marked = "\n".join(lines)
    pieces: list[str] = []
    gold: list[dict] = []
    cursor = length = 0
    while (start := marked.find("\x00", cursor)) >= 0:
        middle, end = marked.index("\x02", start), marked.index("\x01", start)
        pieces.append(marked[cursor:start])
        length += start - cursor
        value = marked[middle + 1 : end]
        gold.append(
            {"kind": marked[start + 1 : middle], "start": length, "end": length + len(value), "origin": "planted"}
        )
        pieces.append(value)
        length += len(value)
        cursor = end + 1
    pieces.append(marked[cursor:])
    return "".join(pieces), gold


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line, _ in zip(handle, range(limit or 1 << 62), strict=False)]


def build(corpora: Path) -> None:
    docs = read_jsonl(corpora / "weborganizer-dclm" / "docs.jsonl.gz")
    by_id = {doc["id"]: doc for doc in docs}
    natural = json.loads(NATURAL.read_text())["docs"]
    rows = []
    for doc_id, labels in natural.items():
        text = by_id[doc_id]["text"]
        gold = []
        for kind, value in labels:
            for match in re.finditer(re.escape(value), text):
                gold.append({"kind": kind, "start": match.start(), "end": match.end(), "origin": "natural"})
        rows.append({"id": doc_id, "origin": "natural", "text": text, "gold": sorted(gold, key=lambda g: g["start"])})
    hosts = sorted(
        (doc for doc in docs if doc["id"] not in natural and not _has_loose_candidate(doc["text"])),
        key=lambda doc: xxhash.xxh64_intdigest(f"pii-host:{doc['id']}".encode()),
    )[:200]
    rng = random.Random(SEED)
    for doc in hosts:
        text = doc["text"][:4000]
        planted, gold = _plant(text, rng)
        rows.append({"id": doc["id"], "origin": "planted", "text": planted, "gold": gold})
    DATA.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(LABELLED, "wb", mtime=0) as raw:
        for row in rows:
            raw.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    counts = Counter(g["kind"] + "/" + g["origin"] for row in rows for g in row["gold"])
    print(f"wrote {LABELLED} ({len(rows)} docs): {dict(sorted(counts.items()))}")


# -------------------------------------------------------------------------------------------
# Scoring


def split_of(doc_id: str) -> str:
    return "report" if xxhash.xxh64_intdigest(f"pii-split:{doc_id}".encode()) % 2 else "choose"


def load_labelled() -> list[dict]:
    return read_jsonl(LABELLED)


def score(rows: list[dict], find) -> dict[str, dict[str, float]]:
    """Per kind: tp/fp/fn (overlap) and exact matches."""
    table = {kind: Counter() for kind in KINDS}
    for row in rows:
        predicted: list[Span] = find(row["text"])
        gold = row["gold"]
        used: set[int] = set()
        for span in predicted:
            hit = next(
                (
                    i
                    for i, g in enumerate(gold)
                    if i not in used and g["kind"] == span.kind and span.start < g["end"] and g["start"] < span.end
                ),
                None,
            )
            if hit is None:
                table[span.kind]["fp"] += 1
            else:
                used.add(hit)
                table[span.kind]["tp"] += 1
                table[span.kind]["exact"] += (gold[hit]["start"], gold[hit]["end"]) == (span.start, span.end)
        for i, g in enumerate(gold):
            if i not in used:
                table[g["kind"]]["fn"] += 1
    return table


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "  n/a"


def print_table(title: str, table: dict[str, Counter]) -> None:
    print(f"\n{title}")
    print(f"  {'kind':12} {'gold':>5} {'tp':>5} {'fp':>5} {'fn':>5} {'precision':>9} {'recall':>7} {'exact':>6}")
    for kind, c in table.items():
        gold = c["tp"] + c["fn"]
        print(
            f"  {kind:12} {gold:5d} {c['tp']:5d} {c['fp']:5d} {c['fn']:5d} {_ratio(c['tp'], c['tp'] + c['fp']):>9} "
            f"{_ratio(c['tp'], gold):>7} {_ratio(c['exact'], c['tp']):>6}"
        )


# Plain-regex peer (no validation), in the style of datatrove's PII formatter.
_PEER = {
    "email": re.compile(
        r"\b[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,}\b"
    ),
    "ip": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"),
    "phone": re.compile(
        r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)\s?)?\d{2,4}[\s.-]\d{3,4}(?:[\s.-]\d{3,4})?(?!\w)"
    ),
    "credit_card": re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
}


def peer_find(text: str) -> list[Span]:
    spans = [Span(kind, m.start(), m.end()) for kind, pattern in _PEER.items() for m in pattern.finditer(text)]
    spans.sort(key=lambda s: (-(s.end - s.start), KINDS.index(s.kind), s.start))
    chosen: list[Span] = []
    for span in spans:
        if all(span.end <= o.start or span.start >= o.end for o in chosen):
            chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


def speed(redactor: PiiRedactor, texts: list[str]) -> tuple[float, float]:
    start = time.process_time()
    for text in texts:
        redactor(text)
    ours = len(texts) / (time.process_time() - start)
    start = time.process_time()
    for text in texts:
        peer_find(text)
    peer = len(texts) / (time.process_time() - start)
    return ours, peer


def report_pipeline(rows: list[dict], corpora: Path, speed_docs: int) -> None:
    redactor = PiiRedactor()
    docs = [{"id": row["id"], "text": row["text"]} for row in rows]
    run = run_winnow(docs, ["pii"])
    core = {row["id"]: redactor(row["text"]) for row in rows}
    same = sum(row["text"] == core[row["id"]].text for row in run.kept)
    counts = {record["kind"]: record["redactions"] for record in run.section("pii")}
    core_counts = {kind: sum(result.counts[kind] for result in core.values()) for kind in KINDS}
    print(f"\nfull pipeline (stage pii) on the labelled set: output equals the core's on {same}/{len(rows)} docs")
    print(f"  manifest redactions {counts}; equal to the core's: {counts == core_counts}")

    pages = [
        {"id": d["id"], "text": d["text"], "url": d.get("url")}
        for d in read_jsonl(corpora / "weborganizer-dclm" / "docs.jsonl.gz", speed_docs)
    ]
    with_pii = run_winnow(pages, ["normalize", "filter", "pii"])
    without = run_winnow(pages, ["normalize", "filter"])
    kept = len(with_pii.kept)
    per_thousand = {r["kind"]: round(1000 * r["redactions"] / kept, 1) for r in with_pii.section("pii")}
    documents = sum(1 for row in with_pii.kept if row["pii_redactions"])
    print(
        f"  weborganizer-dclm, {len(pages)} pages → {kept} kept by normalize → filter: redactions per 1,000 kept "
        f"pages {per_thousand}; pages with any: {documents} ({documents / kept:.1%})"
    )
    extra = with_pii.cpu_seconds - without.cpu_seconds
    print(
        f"  CPU time, one in-memory worker: {with_pii.cpu_seconds:.1f}s with pii, {without.cpu_seconds:.1f}s without "
        f"(+{extra:.1f}s, {kept / max(extra, 1e-9):.0f} pages/s for the stage)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", action="store_true", help="rebuild the labelled set from the shared corpora")
    parser.add_argument("--corpora", type=Path, default=CORPORA)
    parser.add_argument("--speed-docs", type=int, default=2000)
    parser.add_argument("--regions", default="US,GB", help="phone regions, comma-separated")
    parser.add_argument("--pipeline", action="store_true", help="also run winnow's Beam graph (stage pii)")
    args = parser.parse_args()
    if args.build:
        build(args.corpora)
    rows = load_labelled()
    redactor = PiiRedactor(phone_regions=tuple(args.regions.split(",")))
    print(
        f"labelled set: {len(rows)} docs, {sum(len(r['gold']) for r in rows)} gold spans; phone regions {args.regions}"
    )
    for split in ("choose", "report"):
        part = [r for r in rows if split_of(r["id"]) == split]
        print_table(f"[{split} split, {len(part)} docs] winnow PiiRedactor", score(part, redactor.find))
        print_table(f"[{split} split] peer: plain regexes, no validation", score(part, peer_find))
    for origin in ("natural", "planted"):
        part = [r for r in rows if split_of(r["id"]) == "report" and r["origin"] == origin]
        print_table(f"[report split, {origin} only, {len(part)} docs] winnow PiiRedactor", score(part, redactor.find))
    texts = [doc["text"] for doc in read_jsonl(args.corpora / "weborganizer-dclm" / "docs.jsonl.gz", args.speed_docs)]
    ours, peer = speed(redactor, texts)
    mean_chars = sum(map(len, texts)) / len(texts)
    print(f"\nspeed on {len(texts)} weborganizer-dclm docs (mean {mean_chars:.0f} chars), one core, CPU time:")
    print(f"  winnow PiiRedactor {ours:8.0f} docs/s   plain-regex peer {peer:8.0f} docs/s   ratio {ours / peer:.2f}")
    if args.pipeline:
        report_pipeline(rows, args.corpora, args.speed_docs)


if __name__ == "__main__":
    main()
