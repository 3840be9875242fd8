"""The HTML usage report as people see it: `cloudctl report usage --format html` of the
scripted scenario (tests/unit/test_reports.py), rendered by headless Chromium (Debian's
`chromium`) into a PNG, whose chart bars are measured pixel by pixel.

Chromium runs in a network namespace of its own (`unshare --net`: a loopback that is down),
so the page can fetch nothing: what renders is what the file holds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from itertools import groupby
from pathlib import Path

import png
import pytest

from cloudctl import reports
from tests.unit.helpers import init_state
from tests.unit.test_reports import FROM, TO, record_all

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
WIDTH, HEIGHT = 900, 500
BAR_RGB = bytes.fromhex(reports.BAR_COLOUR.removeprefix("#"))


def screenshot(page: Path, png_file: Path, scratch: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed (scripts/setup.sh installs it)"
    proc = subprocess.run(
        ["unshare", "--net", chromium, "--headless", "--no-sandbox", "--disable-gpu",
         "--force-device-scale-factor=1", "--force-color-profile=srgb", "--hide-scrollbars",
         f"--user-data-dir={scratch / 'profile'}", f"--screenshot={png_file}",
         f"--window-size={WIDTH},{HEIGHT}", page.as_uri()],
        capture_output=True, text=True, timeout=60, check=False,
        env=dict(os.environ, HOME=str(scratch)),
    )  # fmt: skip
    assert proc.returncode == 0 and png_file.is_file(), proc.stderr


def bars(png_file: Path) -> list[tuple[int, int]]:
    """(height, width) of each horizontal band of bar-coloured pixels, top to bottom."""
    width, height, pixels, _ = png.Reader(filename=str(png_file)).asRGBA8()
    assert (width, height) == (WIDTH, HEIGHT)
    per_row = []
    for row in pixels:
        row = bytes(row)
        per_row.append(sum(row[x : x + 3] == BAR_RGB for x in range(0, len(row), 4)))
    return [(len(list(band)), count) for count, band in groupby(per_row) if count]


def dark_pixels(png_file: Path) -> int:
    _, _, pixels, _ = png.Reader(filename=str(png_file)).asRGBA8()
    return sum(
        max(row[x : x + 3]) < 96
        for row in (bytes(r) for r in pixels)
        for x in range(0, len(row), 4)
    )


def test_the_html_report_shows_its_chart_in_chromium(tmp_path):
    state = init_state(tmp_path / "state.json")
    record_all(state)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all: {}\n")
    page = tmp_path / "usage-instance.html"
    env = dict(os.environ, CLOUDCTL_HOME=str(tmp_path / "home"), CLOUDCTL_STATE=str(state))
    proc = subprocess.run(
        [str(BIN / "cloudctl"), "--inventory", str(inventory), "report", "usage",
         "--type", "instance", "--from", FROM, "--to", TO, "--format", "html",
         "--output-file", str(page)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    shot = tmp_path / "usage-instance.png"
    screenshot(page, shot, tmp_path)

    # dev/alice 4.5 h, dev/bob 0.3353 h, ops/carol 2.25 h: one bar each, in that order
    found = bars(shot)
    assert [height for height, _ in found] == [reports.BAR_HEIGHT] * 3, found
    alice, bob, carol = (width for _, width in found)
    assert alice == pytest.approx(reports.BAR_MAX, abs=2)
    assert alice / carol == pytest.approx(2, rel=0.02)  # twice the hours, twice as long
    assert bob / alice == pytest.approx(1207 / 16200, rel=0.05)
    assert dark_pixels(shot) > 2000  # the labels, figures and table rendered as text
