"""--report-html: one self-contained page about a run, looked at in a real browser where one is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.support import REPO_ROOT
from tests.support.htmlpages import Page, assert_a_browser_draws

EXAMPLES = REPO_ROOT / "examples" / "photos"


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("html")
    src = tmp / "in"
    src.mkdir()
    for photo in EXAMPLES.iterdir():
        if photo.suffix in (".jpg", ".png"):
            shutil.copy(photo, src / photo.name)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.new("RGB", (40, 30), "orange").save(src / "small.png")       # decodes, but its crop cannot apply
    spec = tmp / "spec.toml"
    spec.write_text('[[variant]]\nname = "thumb"\nformat = "jpeg"\nops = [{ op = "thumbnail", size = 128 }]\n'
                    '[[variant]]\nname = "corner"\nformat = "png"\n'
                    'ops = [{ op = "crop", x = 0, y = 0, width = 100, height = 100 }]\n')
    report = tmp / "report.html"
    done = subprocess.run([sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(tmp / "out"), "--spec",
                           str(spec), "--report-html", str(report), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr                # two inputs failed
    return report


def test_the_page_stands_alone_and_says_what_happened(page: Path) -> None:
    text = page.read_text()
    parsed = Page()
    parsed.feed(text)
    assert parsed.fetched == []                             # nothing from the network or the disk
    headings = [h.strip() for h in parsed.headings]
    for wanted in ("Throughput", "Time per stage", "CPU per stage", "Failures", "Outputs", "thumb", "corner",
                   "Failed inputs"):
        assert wanted in headings, headings
    assert text.count("<svg") == 3                          # throughput, time per stage, CPU per stage
    assert "broken.jpg" in text and "truncated" in text and "processing" in text and "small.png" in text
    pictures = [src for src in parsed.images if src.startswith("data:image/jpeg;base64,")]
    # 3 photos in each variant but the 100x100 crop of a 40x30 image; the failed small.png still decodes.
    assert len(pictures) == len(parsed.images) == 3 + 3 + 1
    assert "cannot be decoded" in text                      # broken.jpg


def test_a_browser_draws_the_page(page: Path, tmp_path: Path) -> None:
    assert_a_browser_draws(page, tmp_path / "shot.png")
