"""The HTML report in a real browser: headless Chromium, no network, no script errors.

Chromium comes from Debian (`apt-get install -y chromium`; .ci/run installs it). Without
it the test is skipped with that reason, except under CI, where a skip would hide a
report nobody saw render.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import memfit
from memfit.report.html import write_plan_report, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    # Every host name fails to resolve: nothing can be fetched even where a network exists.
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
ACTIVATIONS_RGB = (0xC4, 0x4E, 0x52)

# Put first in <head>, before Bokeh: records every error, then (after the charts had time
# to draw) writes what it saw into the title, which --dump-dom prints.
PROBE = """<script>
window.__errors = [];
addEventListener("error", e => __errors.push(String(e.message)));
addEventListener("unhandledrejection", e => __errors.push("rejected: " + e.reason));
const __consoleError = console.error;
console.error = (...a) => { __errors.push("console: " + a.join(" ")); __consoleError(...a); };
function __canvases(node) {
  let n = node.querySelectorAll("canvas").length;
  node.querySelectorAll("*").forEach(el => { if (el.shadowRoot) n += __canvases(el.shadowRoot); });
  return n;
}
addEventListener("load", () => setTimeout(() => {
  const roots = [...document.querySelectorAll("[data-root-id]")];
  const drawn = roots.filter(r => __canvases(r.parentElement) > 0).length;
  const fetched = performance.getEntriesByType("resource").map(r => r.name)
    .filter(n => !n.startsWith("data:"));
  document.title = "PROBE " + JSON.stringify({errors: __errors, roots: roots.length, drawn,
    canvases: __canvases(document), fetched});
}, 2000));
</script>"""


def _chromium_or_skip() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing under CI: .ci/run should have installed it")
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    return CHROMIUM


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    command = [_chromium_or_skip(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args]
    # A network namespace of its own where this user may make one: no network at all.
    if shutil.which("unshare") and os.geteuid() == 0:
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            command = ["unshare", "-n", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _probe(report: Path, tmp_path: Path) -> dict:
    page = report.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1)
    probed = tmp_path / f"probed-{report.name}"
    probed.write_text(page, encoding="utf-8")
    done = _run(["--virtual-time-budget=10000", "--dump-dom", probed.as_uri()], tmp_path)
    found = re.search(r"<title>PROBE (.*?)</title>", done.stdout, re.S)
    assert found, f"the page never finished drawing: {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<"))


def _screenshot(report: Path, tmp_path: Path):
    from PIL import Image

    shot = tmp_path / f"{report.stem}.png"
    _run(
        [
            "--virtual-time-budget=10000",
            "--window-size=1200,1800",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        tmp_path,
    )
    assert shot.exists(), "chromium wrote no screenshot"
    return Image.open(shot).convert("RGB")


def _near(pixels, rgb, tolerance: int):
    """Which pixels (an H x W x 3 array) lie within `tolerance` of `rgb` in every channel."""
    import numpy as np

    return (np.abs(pixels.astype(int) - np.array(rgb)) <= tolerance).all(axis=-1)


def _check_renders(report: Path, tmp_path: Path, charts: int) -> None:
    seen = _probe(report, tmp_path)
    assert seen["errors"] == []
    assert seen["fetched"] == []  # nothing outside the file was asked for
    assert seen["roots"] == charts and seen["drawn"] == charts
    import numpy as np

    pixels = np.asarray(_screenshot(report, tmp_path))
    background = pixels[5, 5]  # the page's own background, top left
    ink = float((~_near(pixels, background, 8)).mean())
    red = int(_near(pixels, ACTIVATIONS_RGB, 24).sum())
    assert ink > 0.05, f"the screenshot is almost blank ({ink:.1%} not background)"
    # The table swatches are 10x10 pixels: this much of the activations' colour is charts.
    assert red > 5000


def test_profile_report_renders_offline_without_errors(tmp_path) -> None:
    result = memfit.profile(memfit.zoo.get("cnn"), batch_size=64)
    report = write_report(result, tmp_path / "profile.html")
    assert report.stat().st_size < 5 * 10**6
    # Categories at the peak, the timeline, the modules.
    _check_renders(report, tmp_path, charts=3)


def test_plan_report_renders_offline_without_errors(tmp_path) -> None:
    workload = memfit.zoo.get("mlp", depth=4, width=256, inputs=64)
    plan = memfit.plan(workload, "6MB", batch_size=256, reserve_bytes=0)
    baseline = memfit.estimate(workload, 256)
    report = write_plan_report(plan.to_dict(), tmp_path / "plan.html", baseline=baseline)
    # Baseline against plan, the alternatives, the baseline's timeline.
    charts = 3 if plan.to_dict()["alternatives"] else 2
    _check_renders(report, tmp_path, charts=charts)
