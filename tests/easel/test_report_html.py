"""report.html renders in headless Chromium: no console errors, plots load, the page is not blank.

Uses Debian's /usr/bin/chromium through Playwright (never a browser download); skips with the
reason when it is absent (`apt-get install -y chromium`).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from easel.report import write_report
from tests._chromium import chromium_missing, render
from tests.easel._synthetic_run import config_with, make_run


def test_report_html_renders_in_chromium(tmp_path: Path) -> None:
    from PIL import Image

    if why := chromium_missing():
        pytest.skip(why)
    cfg = config_with(**{"flux2-dev": {"tflop_per_step": 280.0}})
    run = make_run(tmp_path / "run", cfg, failures_every=9)
    files = write_report(run, cfg)
    shot = tmp_path / "report.png"
    out = render(files.report_html, shot)

    assert out["errors"] == []
    assert len(out["images"]) == 2
    assert all(done and w > 100 and h > 100 for done, w, h in out["images"])
    for words in (
        "What was simulated or tiny",
        "Quality",
        "Cost per image",
        "Latency",
        "Per niche",
        "Physical floor",
        "below floor",
        "Reproducibility",
    ):
        assert words in out["text"]

    # Not blank: a full-page screenshot of a long report with many distinct colours.
    img = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    assert img.height > 2000
    small = img.resize((img.width // 4, img.height // 4))
    colours = small.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50
    # Most of the page is background, but a real share of it is ink.
    white = max(count for count, _ in colours)
    assert white / (small.width * small.height) < 0.95
