"""The HTML fleet report: self-contained, escaped, and its charts really render in headless Chromium."""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from keysweep.central.fleet_report import build_report, load_report
from keysweep.central.html_report import SCRIPT, render_html
from keysweep.central.store import open_store

from tests.support.fleet import HOSTILE_HOST, HOSTILE_PATH, LIVE_KEY, NOW, SECRET_SHAPE, build_store
from tests.support.png import decode

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    found = shutil.which("chromium") or (os.path.exists("/usr/bin/chromium") and "/usr/bin/chromium") or None
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI (scripts/install-system-deps.sh installs it)")
        pytest.skip("chromium is not installed (run scripts/install-system-deps.sh)")
    return found


def _run_chromium(tmp_path: Path, page: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    return subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.fixture
def page(tmp_path: Path) -> Path:
    store = open_store(str(build_store(tmp_path / "fleet.db")), create=False)
    try:
        report = load_report(store, now=NOW)
    finally:
        store.close()
    out = tmp_path / "report.html"
    out.write_text(render_html(report), encoding="utf-8")
    return out


def test_self_contained_and_escaped(page):
    text = page.read_text()
    # nothing to fetch: no src/href at all, and a CSP that allows no network
    assert not re.search(r"\b(src|href|action)\s*=", text.replace(html.escape(HOSTILE_HOST, quote=True), ""))
    csp = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text).group(1))
    assert csp.startswith("default-src 'none';") and "connect-src" not in csp
    # the only script is the inline one, allowed by its hash
    assert text.count("<script") == 1
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp
    # host values appear escaped, never as markup
    assert HOSTILE_HOST not in text and html.escape(HOSTILE_HOST, quote=True) in text
    assert "<script>document.title" not in text
    assert html.escape(HOSTILE_PATH.replace("\x1b", "\\x1b"), quote=True) in text and "\x1b" not in text
    assert len(re.findall(r'<svg class="ks-chart"', text)) == 5
    assert LIVE_KEY in text and "aws iam create-role --role-name web-1-role" in text
    assert not SECRET_SHAPE.search(text)


@pytest.mark.timeout(180)
def test_charts_render_in_headless_chromium(page, tmp_path):
    dom = _run_chromium(tmp_path, page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    out = dom.stdout
    assert re.search(r'<body[^>]* data-charts-ready="5"', out) and ">charts-ready:5<" in out
    errors = re.search(r'<div id="ks-errors">(.*?)</div>', out, re.S)
    assert errors is not None and errors.group(1) == "", errors and errors.group(1)
    assert "pwned" not in re.search(r"<title>(.*?)</title>", out, re.S).group(1)

    shot = tmp_path / "report.png"
    run = _run_chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1280,2000")
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    image = decode(shot.read_bytes())
    assert (image.width, image.height) == (1280, 2000)
    total = image.width * image.height
    not_white = image.count(lambda p: p != (255, 255, 255))
    assert not_white > total * 0.2  # a blank (or error) page is almost all one colour
    # the live-key bars (#c62828) were painted
    red = image.count(lambda p: abs(p[0] - 0xC6) < 14 and abs(p[1] - 0x28) < 14 and abs(p[2] - 0x28) < 14)
    assert red > 2000


@pytest.mark.timeout(180)
def test_the_page_check_can_fail(page, tmp_path):
    """A chart that did not draw all its bars is reported in the DOM (so the check above is not vacuous)."""
    broken = tmp_path / "broken.html"
    broken.write_text(page.read_text().replace('data-bars="2"', 'data-bars="7"', 1), encoding="utf-8")
    dom = _run_chromium(tmp_path, broken, "--dump-dom")
    assert "charts-incomplete:4/5" in dom.stdout
    assert not re.search(r"<body[^>]* data-charts-ready", dom.stdout)
    assert re.search(r'<div class="ks-error">script error: [^<]*charts not drawn', dom.stdout)


@pytest.mark.timeout(180)
def test_empty_report_renders(tmp_path):
    empty = tmp_path / "empty.html"
    empty.write_text(render_html(build_report([], [], now=NOW)), encoding="utf-8")
    dom = _run_chromium(tmp_path, empty, "--dump-dom")
    assert re.search(r'<body[^>]* data-charts-ready="5"', dom.stdout) and "No keys reported." in dom.stdout
