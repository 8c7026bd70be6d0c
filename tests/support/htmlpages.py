"""The HTML pages gpupipe writes (--report-html, gpupipe report --html), read as a browser would:
parsed for what it would fetch, and drawn by headless Chromium where one is installed."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image


class Page(HTMLParser):
    """What a browser would fetch or run, the headings, and the pictures of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.images: list[str] = []
        self.fetched: list[str] = []
        self._heading = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("h2", "h3"):
            self._heading = True
            self.headings.append("")
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            if value and not value.startswith("data:"):
                self.fetched.append(value)
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.fetched.append(tag)

    def handle_endtag(self, tag):
        if tag in ("h2", "h3"):
            self._heading = False

    def handle_data(self, data):
        if self._heading:
            self.headings[-1] += data


def assert_a_browser_draws(page: Path, shot: Path) -> None:
    """Headless Chromium draws ``page`` into ``shot``: text, bars and photos, not a blank page.
    Skips the test where no Chromium is installed (.ci/run installs it)."""
    browser = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(name)), None)
    if browser is None:
        pytest.skip("no Chromium here (.ci/run installs it): the page is checked without a browser only")
    subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,1400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    with Image.open(shot) as im:
        assert im.size == (1200, 1400)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50
