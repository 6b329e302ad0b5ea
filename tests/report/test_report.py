"""report.html and DATASET_CARD.md: contents, self-containment, and a real headless browser."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_config, run
from corpora import run_corpus

from winnow.config import ReportConfig
from winnow.report.html import render_report, stage_flow

SVG = re.compile(r'src="data:image/svg\+xml;base64,([^"]+)"')


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("report")
    config = make_config(
        [{"paths": [str(run_corpus(base / "in"))], "name": "web"}],
        base / "out",
        output={
            "shards": {"target_rows": 8},
            "report": {"title": "Test corpus", "license": "ODC-By-1.0", "source_licenses": {"web": "CC-BY-4.0"}},
        },
    )
    run(config)
    return base / "out"


def images(page: str) -> list[ElementTree.Element]:
    """Every embedded chart, parsed: each must be well-formed SVG."""
    return [ElementTree.fromstring(base64.b64decode(data)) for data in SVG.findall(page)]


def test_report_has_every_section_with_exact_counts_and_embedded_plots(finished_run: Path):
    page = (finished_run / "report.html").read_text()
    manifest = json.loads((finished_run / "manifest.json").read_text())
    counts = manifest["counts"]
    assert manifest["report"] == {"html": "report.html", "card": "DATASET_CARD.md"}
    for section in ("accounting", "throughput-per-step", "score-distributions", "composition-of-the-kept-documents"):
        assert f'id="{section}"' in page
    for section in ("length-distributions", "duplicate-clusters", "sample-documents"):
        assert f'id="{section}"' in page
    assert "failed to render" not in page
    assert f"input {counts['input']:,} = kept + filtered + duplicate + rejected = {counts['input']:,}" in page
    assert "<td>dedup:exact</td><td class='n'>6</td>" in page
    assert "<td>read</td><td class='n'>1</td>" in page  # the broken line, rejected by the reader
    # Plots: accounting, throughput, URL host is absent (no URLs) → source, lengths, clusters.
    charts = images(page)
    assert len(charts) >= 5 and page.count("<img") == len(charts)
    assert all(c.tag == "{http://www.w3.org/2000/svg}svg" for c in charts)
    assert all(float(c.get("width")) > 300 and float(c.get("height")) > 100 for c in charts)
    # Samples from every bucket: kept, the duplicate reason, the rejecting stage.
    for heading in ("<h3>kept</h3>", "<h3>duplicate: dedup:exact</h3>", "<h3>rejected: read</h3>"):
        assert heading in page
    assert "<b>duplicate_of</b> d0" in page
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<script" not in page


def test_dataset_card_states_sources_thresholds_counts_and_declared_licenses(finished_run: Path):
    card = (finished_run / "DATASET_CARD.md").read_text()
    manifest = json.loads((finished_run / "manifest.json").read_text())
    assert card.startswith("# Dataset card: Test corpus")
    assert "| web | `" in card and "| CC-BY-4.0 |" in card
    assert "Dataset license: ODC-By-1.0." in card
    assert '| `dedup.exact.keep` | `"lowest_id"` |' in card and '| `normalize.unicode_form` | `"NFC"` |' in card
    assert f"| kept |  | {manifest['counts']['kept']:,} |" in card
    assert "|  | `dedup:exact` | 6 |" in card


def test_report_shows_scores_domains_and_cluster_sizes_when_the_shards_have_them(tmp_path: Path):
    (tmp_path / "data").mkdir()
    rows = [
        {
            "id": f"d{i}",
            "text": "word " * (10 + i),
            "url": f"https://site{i % 3}.example/page",
            "source": "crawl/a.jsonl",
            "quality_score": i / 40,
            "edu_int": i % 5,
            "topic": ["Science", "Sports", "Travel"][i % 3],
            "format": "Article",
            "cluster_size": 1 + (i % 4 == 0) * 2,
        }
        for i in range(40)
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data" / "part-00000-of-00001.parquet")
    counts = {
        "input": 50,
        "kept": 40,
        "filtered": 4,
        "duplicate": 6,
        "rejected": 0,
        "filtered_by_reason": {"filter:gopher_word_count": 4},
        "duplicate_by_reason": {"dedup:minhash": 6},
        "rejected_by_stage": {},
    }
    manifest = {
        "counts": counts,
        "stages": ["filter", "dedup", "score", "tag"],
        "shards": {"data": [{"file": "data/part-00000-of-00001.parquet"}], "removed": [], "rejected": []},
        "runner": "DataflowRunner",
        "config_hash": "0" * 64,
        "winnow_version": "test",
        "config": {"seed": 0},
    }
    page = render_report(str(tmp_path), manifest, ReportConfig(), timings={})
    assert "failed to render" not in page
    assert 'alt="Histogram of quality_score"' in page and 'alt="Histogram of edu_int"' in page
    assert 'alt="Histogram of cluster_size"' not in page  # a cluster size is not a score
    assert 'alt="Kept documents by topic"' in page and 'alt="Kept documents by format"' in page
    assert 'alt="Kept documents by URL host"' in page
    assert "Sizes from the cluster_size column" in page and "<td class='n'>3</td><td class='n'>10</td>" in page
    assert "n/a" in page  # no timings from this runner
    assert stage_flow(counts, manifest["stages"]) == [
        ("read", 50, 50),
        ("filter", 50, 46),
        ("dedup", 46, 40),
        ("score", 40, 40),
        ("tag", 40, 40),
        ("write", 40, 40),
    ]


# -- a real browser -------------------------------------------------------------------------
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class DevTools:
    """Chrome DevTools Protocol over --remote-debugging-pipe (fd 3 in, fd 4 out): no extra packages."""

    def __init__(self, binary: str):
        self._commands_r, self._commands = os.pipe()
        self._events, events_w = os.pipe()
        self._profile = tempfile.mkdtemp(prefix="winnow-chromium-")
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe"]
        flags += [f"--user-data-dir={self._profile}", "about:blank"]
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{self._commands_r} 4>&{events_w}', binary, *flags],
            pass_fds=(self._commands_r, events_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(self._commands_r)
        os.close(events_w)
        self._buffer = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._events], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("no answer from the browser")
            chunk = os.read(self._events, 1 << 16)
            if not chunk:
                raise EOFError("the browser exited")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + 30
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._receive(deadline))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, EOFError, OSError):
            self.call("Browser.close")
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._commands)
        os.close(self._events)
        shutil.rmtree(self._profile, ignore_errors=True)


@pytest.mark.skipif(find_browser() is None, reason="no Chromium (apt-get install chromium-headless-shell)")
def test_report_opens_in_headless_chromium_without_errors_and_shows_its_plots(finished_run: Path):
    browser = DevTools(find_browser())
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})
        session = browser.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Page.navigate", {"url": (finished_run / "report.html").resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        probe = (
            "JSON.stringify({images: [...document.images].map(i => [i.complete, i.naturalWidth, "
            "i.getBoundingClientRect().height]), "
            "sections: [...document.querySelectorAll('h2')].map(h => h.textContent)})"
        )
        found = browser.call("Runtime.evaluate", {"expression": probe, "returnByValue": True}, session=session)
        page = json.loads(found["result"]["value"])
    finally:
        browser.close()
    errors = [
        e
        for e in browser.events
        if e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
    ]
    assert errors == []
    assert page["sections"][:3] == ["Accounting", "Throughput per step", "Score distributions"]
    assert len(page["images"]) >= 5
    assert all(complete and width > 300 and height > 100 for complete, width, height in page["images"])
