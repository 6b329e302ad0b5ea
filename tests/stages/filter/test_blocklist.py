"""URL blocklists: UT1-style list files and the domain / url / substring match modes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from winnow.stages.filter.blocklist import (
    BlocklistError,
    BlocklistFile,
    UrlBlocklist,
    normalise_url,
    read_blocklist,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "blocklist"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """The public suffix list must come from tldextract's bundled snapshot, never from the network."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_reads_ut1_domains_file():
    blocklist = read_blocklist(DATA / "adult" / "domains", "domain")
    assert blocklist.name == "adult"
    assert blocklist.entries == {
        "example-adult.com",
        "shop.example.org",
        "wild-card.net",
        "leading-dot.info",
        "spaced.example.biz",
        "co.uk",
        "xn--bcher-porn-9db.de",
        "203.0.113.7",
        "blogspot.com",
    }


def test_list_file_errors(tmp_path):
    with pytest.raises(BlocklistError, match="cannot be read"):
        read_blocklist(tmp_path / "missing", "domain")
    empty = tmp_path / "empty"
    empty.write_text("# only a comment\n\n   \n")
    with pytest.raises(BlocklistError, match="holds no entry"):
        read_blocklist(empty, "domain")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(BlocklistError, match="not UTF-8"):
        read_blocklist(binary, "domain")


@pytest.fixture(scope="module")
def by_domain() -> UrlBlocklist:
    return UrlBlocklist.from_files([DATA / "adult" / "domains"], "domain")


@pytest.mark.parametrize(
    ("url", "entry"),
    [
        ("https://example-adult.com/", "example-adult.com"),
        ("http://www.example-adult.com/a?b=c", "example-adult.com"),
        ("http://deep.sub.example-adult.com", "example-adult.com"),
        ("example-adult.com/no-scheme", "example-adult.com"),
        ("https://EXAMPLE-ADULT.COM.", "example-adult.com"),
        ("https://shop.example.org/cart", "shop.example.org"),
        ("https://a.shop.example.org/", "shop.example.org"),
        ("https://x.wild-card.net", "wild-card.net"),
        ("http://bücher-porn.de/", "xn--bcher-porn-9db.de"),
        ("http://www.xn--bcher-porn-9db.de/", "xn--bcher-porn-9db.de"),
        ("http://203.0.113.7:8080/x", "203.0.113.7"),
        ("https://someone.blogspot.com/post", "blogspot.com"),
    ],
)
def test_domain_mode_blocks_host_and_parents_to_registered_domain(by_domain, url, entry):
    match = by_domain.match(url)
    assert match is not None and (match.list_name, match.entry) == ("adult", entry)


@pytest.mark.parametrize(
    "url",
    [
        "https://www.bbc.co.uk/news",  # "co.uk" is a public suffix: listing it blocks nothing
        "https://example.org/",  # only the shop. subtree of example.org is listed
        "https://notexample-adult.com/",
        "https://example-adult.com.evil.net/",
        "http://203.0.113.8/",
        "",
        None,
        "::not a url::",
    ],
)
def test_domain_mode_does_not_overblock(by_domain, url):
    assert by_domain.match(url) is None


def test_registered_domain_uses_the_public_suffix_list(by_domain):
    assert by_domain.domain_candidates("https://a.b.example.co.uk/x") == [
        "a.b.example.co.uk",
        "b.example.co.uk",
        "example.co.uk",
    ]
    assert by_domain.domain_candidates("http://10.0.0.1/") == ["10.0.0.1"]
    private = UrlBlocklist(
        [BlocklistFile("l", frozenset({"blogspot.com"}))], "domain", include_psl_private_domains=True
    )
    # With PSL private suffixes on, blogspot.com is a suffix, so each blog is its own registered domain.
    assert private.match("https://someone.blogspot.com/") is None


def test_url_mode_matches_at_path_boundaries():
    blocklist = UrlBlocklist.from_files([DATA / "adult" / "urls"], "url")
    assert blocklist.match("https://www.example.com/private")
    assert blocklist.match("http://example.com/private/page.html?x=1")
    assert blocklist.match("http://news.example.net/section/sub?id=3")
    assert blocklist.match("http://example.com/privateer") is None
    assert blocklist.match("http://example.com/") is None
    assert blocklist.match("http://news.example.net/section/sub?id=4") is None
    assert normalise_url("HTTPS://User@WWW.Example.com:443/A/b/#frag") == "example.com/a/b"


def test_substring_mode_reports_the_longest_entry(tmp_path):
    words = tmp_path / "expressions"
    words.write_text("casino\nonline-casino\n")
    blocklist = UrlBlocklist.from_files([words], "substring")
    match = blocklist.match("https://best-ONLINE-CASINO.example/")
    assert match is not None and match.entry == "online-casino"
    assert blocklist.match("https://example.com/cassino") is None


def test_lists_are_tried_in_order(tmp_path):
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("example.com\n")
    second.write_text("example.com\nother.com\n")
    blocklist = UrlBlocklist.from_files([first, second], "domain")
    assert blocklist.match("http://example.com").list_name == "first"
    assert blocklist.match("http://other.com").list_name == "second"
