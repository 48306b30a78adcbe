"""`gliotl demo --quick` end to end, and its report in a real browser (headless Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, float]:
    out = tmp_path_factory.mktemp("demo")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gliotl", "demo", "--quick", "--out", str(out)],
                          capture_output=True, text=True)
    return out, proc, time.perf_counter() - start


@pytest.mark.slow
def test_quick_demo_runs_both_systems_and_summarises(quick_demo):
    out, proc, seconds = quick_demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "report:" in proc.stdout and "Spearman" in proc.stdout
    report = (out / "report.html").read_text()
    assert "SYNTHETIC chain" in report  # --quick says clearly what data the drug part used
    for part in ("drug", "mgmt"):
        manifest = json.loads((out / part / "manifest.json").read_text())
        assert manifest["status"] == "finished"
    assert "spottune" in report and "routed to the" in report
    # a second run reuses the finished parts and is much faster
    start = time.perf_counter()
    again = subprocess.run([sys.executable, "-m", "gliotl", "demo", "--quick", "--out", str(out)],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert time.perf_counter() - start < seconds


@pytest.mark.slow
def test_report_is_self_contained_static(quick_demo):
    out, proc, _ = quick_demo
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script src" not in html and "<link" not in html and "@import" not in html
    assert html.count("data:image/png;base64,") >= 3


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs"
                    " it)")
def test_report_renders_in_headless_chromium_without_external_requests(quick_demo, tmp_path):
    out, proc, _ = quick_demo
    assert proc.returncode == 0, proc.stderr[-2000:]
    netlog = tmp_path / "netlog.json"
    dom = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         f"--log-net-log={netlog}", "--virtual-time-budget=5000", "--dump-dom",
         (out / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert page.count("<table") >= 3
    assert len(re.findall(r"<img[^>]+src=\"data:image/png;base64,", page)) >= 3
    assert "gliotl demo" in page
    if netlog.is_file():  # every URL the page asked for: only itself (file://) and data: URIs
        urls = set(re.findall(r'"url":"([^"]+)"', netlog.read_text(errors="replace")))
        external = [u for u in urls if u.startswith(("http://", "https://", "ws://", "wss://"))]
        assert external == []
