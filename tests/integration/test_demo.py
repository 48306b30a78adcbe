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

from gliotl.core.runs.rundir import foreign_entries

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
        # every file a finished run holds is one --overwrite knows as the run's own
        assert foreign_entries(out / part) == [], part
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


def render(page: Path, workdir: Path) -> tuple[str, list[str]]:
    """Open ``page`` in headless Chromium; return the rendered DOM and the network URLs that
    the page itself requested. Chromium's own background traffic (update checks, time sync) is
    marked in the net log with the initiator 'not an origin' and is not the page's doing."""
    netlog = workdir / "netlog.json"
    dom = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={workdir / 'profile'}",
         f"--log-net-log={netlog}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = netlog.read_text(errors="replace").rstrip()
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # the browser may exit before closing the JSON
        log = json.loads(text.rstrip(",") + "]}")
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requested = [event["params"]["url"] for event in log["events"]
                 if event["type"] == start and "url" in event.get("params", {})
                 and event["params"].get("initiator") != "not an origin"]
    external = [u for u in requested if u.startswith(("http://", "https://", "ws://", "wss://"))]
    return dom.stdout, external


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs"
                    " it)")
def test_report_renders_in_headless_chromium_without_external_requests(quick_demo, tmp_path):
    out, proc, _ = quick_demo
    assert proc.returncode == 0, proc.stderr[-2000:]
    # control: the check does see a page that loads an external image
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="https://example.invalid/x.png"></body></html>')
    (tmp_path / "c").mkdir()
    _, control_external = render(control, tmp_path / "c")
    assert control_external == ["https://example.invalid/x.png"]

    (tmp_path / "r").mkdir()
    page, external = render(out / "report.html", tmp_path / "r")
    assert external == []
    assert page.count("<table") >= 3
    assert len(re.findall(r"<img[^>]+src=\"data:image/png;base64,", page)) >= 3
    assert "gliotl demo" in page
    # every figure a paper needs is on the page, and its SVG and PDF lie beside it
    figures = dict((alt, stem) for stem, alt in re.findall(
        r'<figure data-file="([^"]+)"><img alt="([^"]*)" src="data:image/png;base64,', page))
    for wanted in ("Forest plot: pooled Spearman", "Predicted vs observed",
                   "Forest plot: hold-out AUC", "routed to the fine-tuned copy, per modality "
                   "and block, by MGMT class", "Learning curves"):
        assert any(wanted in alt for alt in figures), wanted
    for stem in figures.values():
        for fmt in ("svg", "pdf"):
            assert (out / "figures" / f"{stem}.{fmt}").stat().st_size > 1000, (stem, fmt)
    for part in ("drug", "mgmt"):
        sub = (out / part / "report.html").read_text()
        stems = re.findall(r'<figure data-file="([^"]+)">', sub)
        assert stems and all((out / part / "figures" / f"{s}.pdf").is_file() for s in stems)
    routing = (out / "mgmt" / "routing.csv").read_text().splitlines()
    assert routing[0] == "method,modality,fold,sample_id,y_true,block,tuned" and len(routing) > 1
