"""gpupipe report OUT --html: the page about what the journal records across runs, from real runs."""

from __future__ import annotations

import html
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gpupipe.htmlreport import MAX_BARS, write_from_journal
from gpupipe.journal import default_path
from tests.support.badfiles import PHOTO
from tests.support.corpus import stills
from tests.support.htmlpages import Page, assert_a_browser_draws

# One variant cropping the corner: outputs of 100x100, and an input smaller than that fails yet still decodes.
SPEC = ('[[variant]]\nname = "corner"\nformat = "jpeg"\n'
        'ops = [{ op = "crop", x = 0, y = 0, width = 100, height = 100 }]\n')


def gpupipe_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpupipe", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def run(src: Path, out: Path, spec: Path) -> None:
    done = gpupipe_cli("run", src, "-o", out, "--spec", spec, "--backend", "cpu", "--quiet")
    assert done.returncode == 1, done.stderr                # the failed inputs stay failed


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Two runs on one OUT: the first does two stills (one in a subfolder) and fails two inputs,
    the second does a still added since and skips the rest."""
    tmp = tmp_path_factory.mktemp("journal-html")
    src, spec = tmp / "in", tmp / "spec.toml"
    (src / "sub").mkdir(parents=True)
    spec.write_text(SPEC)
    photos = stills()
    shutil.copy(photos[0], src / "first.png")
    shutil.copy(photos[1], src / "sub" / "second.png")
    (src / "truncated.jpg").write_bytes(PHOTO.read_bytes()[:20_000])
    Image.new("RGB", (40, 30), "orange").save(src / "small.png")      # decodes, but the crop cannot apply
    run(src, tmp / "out", spec)
    shutil.copy(photos[2], src / "third.png")
    run(src, tmp / "out", spec)
    return tmp


@pytest.fixture(scope="module")
def page(runs: Path) -> str:
    done = gpupipe_cli("report", runs / "out", "--html", runs / "page.html")
    assert done.returncode == 0, done.stderr
    return (runs / "page.html").read_text()


def parsed(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def table_rows(text: str) -> list[list[str]]:
    return [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in re.findall(r"<tr>(.*?)</tr>", text)]


def pages_of(runs: Path, tmp_path: Path, **options) -> str:
    write_from_journal(default_path(runs / "out"), tmp_path / "page.html", **options)
    return (tmp_path / "page.html").read_text()


def test_the_page_stands_alone(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert parsed(page).fetched == []                       # nothing from the network or the disk
    assert "://" not in page
    assert all(src.startswith("data:image/jpeg;base64,") for src in parsed(page).images)


def test_the_counts_are_those_of_both_runs(page: str) -> None:
    rows = {row[0]: row[1] for row in table_rows(page) if len(row) == 2}
    assert (rows["inputs done"], rows["inputs failed"], rows["runs"]) == ("3", "2", "2")
    assert rows["outputs"].startswith("3 (")
    runs = [row for row in table_rows(page) if len(row) == 6][1:]            # the runs, newest first
    assert [row[2:5] for row in runs] == [["1", "0", "4"], ["2", "2", "0"]]
    assert "did not finish" not in page


def test_the_failures_show_their_class_path_and_message(runs: Path, page: str) -> None:
    headings = [h.strip() for h in parsed(page).headings]
    assert "truncated: 1 file(s)" in headings and "processing: 1 file(s)" in headings
    assert f"<code>{html.escape(str(runs / 'in' / 'truncated.jpg'))}</code>" in page
    assert "lies outside the 40×30 image" in page
    assert "cannot be decoded" in page                      # the truncated input's picture


def test_inputs_done_over_time_count_each_input_done(page: str) -> None:
    chart = page.split("<h2>Inputs done over time</h2>")[1].split("<h2>")[0]
    assert sum(float(n) for n in re.findall(r"<title>([\d.]+) inputs</title>", chart)) == 3


def test_the_cpu_per_stage_is_the_last_runs(page: str) -> None:
    section = page.split("<h2>CPU per stage</h2>")[1].split("<h2>")[0]
    assert "<svg" in section and "workers" in section and "No stage timings" not in section


def test_one_picture_per_sampled_output_by_folder(page: str) -> None:
    headings = [h.strip() for h in parsed(page).headings]
    assert "(top folder)" in headings and "sub" in headings
    sheet = page.split("<h2>Outputs</h2>")[1].split("<h2>")[0]
    assert sorted(re.findall(r"<img alt='([^']*)' src='data:image/jpeg", sheet)) == \
        ["first_corner.jpg", "second_corner.jpg", "third_corner.jpg"]
    assert len(parsed(page).images) == 3 + 1                # and the failed small.png, which still decodes


def test_outputs_gone_or_above_max_pixels_are_left_out(runs: Path, tmp_path: Path) -> None:
    output = runs / "out" / "first_corner.jpg"
    output.rename(tmp_path / "away.jpg")
    try:
        text = pages_of(runs, tmp_path, max_pixels=10**8)
    finally:
        (tmp_path / "away.jpg").rename(output)
    assert "first_corner.jpg" not in text and "second_corner.jpg" in text and "1 of 2 left out" in text
    small = pages_of(runs, tmp_path, max_pixels=5_000)      # the 100x100 outputs are above it, small.png is not
    assert len(parsed(small).images) == 1 and "small.png" in small


def test_inputs_done_days_apart_fit_the_chart(runs: Path, tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    with sqlite3.connect(default_path(runs / "out")) as source, sqlite3.connect(journal) as copy:
        source.backup(copy)
        copy.execute("UPDATE inputs SET updated = updated - 3 * 86400 WHERE rowid = "
                     "(SELECT MIN(rowid) FROM inputs WHERE state = 'ok')")
    write_from_journal(journal, tmp_path / "page.html", max_pixels=10**8)
    chart = (tmp_path / "page.html").read_text().split("<h2>Inputs done over time</h2>")[1].split("<h2>")[0]
    bars = [float(n) for n in re.findall(r"<title>([\d.]+) inputs</title>", chart)]
    assert len(bars) <= MAX_BARS and sum(bars) == 3 and bars[0] == 1 and bars[-1] == 2
    assert re.search(r"per \d+ min", chart)


def test_a_killed_run_did_not_finish_and_left_no_stage_timings(runs: Path, tmp_path: Path) -> None:
    killed = subprocess.run([sys.executable, "-c", "import os, sys, gpupipe; gpupipe.run(sys.argv[1], sys.argv[2], "
                             "sys.argv[3], backend='cpu', on_outcome=lambda outcome: os._exit(9))",
                             runs / "in", tmp_path / "out", runs / "spec.toml"], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    done = gpupipe_cli("report", tmp_path / "out", "--html", tmp_path / "page.html")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "page.html").read_text()
    assert "did not finish" in text and "No stage timings" in text


def test_a_dash_writes_the_page_to_stdout(runs: Path, tmp_path: Path) -> None:
    done = gpupipe_cli("report", runs / "out", "--html", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("<!DOCTYPE html>") and done.stdout.rstrip().endswith("</body></html>")
    assert "inputs done: 3" in done.stderr                  # the words go to stderr: stdout is the page alone
    assert list(tmp_path.iterdir()) == []                   # no file named '-', no temporary
    both = gpupipe_cli("report", runs / "out", "--html", "-", "--json", cwd=tmp_path)
    assert both.returncode == 2 and both.stdout == "" and "both ask for stdout" in both.stderr


def test_the_journal_folder_is_left_as_it_was(runs: Path, tmp_path: Path) -> None:
    before = sorted(os.listdir(default_path(runs / "out").parent))
    done = gpupipe_cli("report", runs / "out", "--html", tmp_path / "page.html")
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(default_path(runs / "out").parent)) == before
    assert os.listdir(tmp_path) == ["page.html"]            # renamed into place, no temporary left


def test_a_missing_journal_is_one_error_line(tmp_path: Path) -> None:
    done = gpupipe_cli("report", tmp_path / "nothing", "--html", tmp_path / "page.html")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: no journal at")
    assert not (tmp_path / "page.html").exists()


def test_a_browser_draws_the_page(runs: Path, page: str, tmp_path: Path) -> None:
    assert_a_browser_draws(runs / "page.html", tmp_path / "shot.png")
