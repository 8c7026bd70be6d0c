"""A disk that fills, on real tmpfs mounts, in each place a run writes: the outputs (with the
journal beside them, its default place), the journal alone, the report, the log, the trace
and the metrics file. Each ends with one clear message, the summary and exit 1, and the same
command run again once there is room finishes the work, skipping exactly what the first run
said it would. (A journal that fills its disk mid-run: tests/test_journal_hardening.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import hostile

INPUTS = 40


def _mount(point: Path, size: str) -> None:
    point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def disk(tmp_path: Path):
    """A 2 MB tmpfs (root only: mounting needs it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    point = tmp_path / "disk"
    _mount(point, "2m")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(disk: Path) -> Path:
    """Write until the disk is full; returns the filler, whose removal makes room again."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def make_inputs(directory: Path) -> Path:
    for i in range(INPUTS):
        (directory / f"{i:02d}.png").parent.mkdir(parents=True, exist_ok=True)
        (directory / f"{i:02d}.png").write_bytes(hostile.encoded("png", hostile.small_photo((240 + i, 180))))
    return directory


PLACES = ["outputs", "journal", "report", "log", "trace", "metrics"]


@pytest.mark.parametrize("place", PLACES)
def test_a_full_disk_stops_cleanly_and_the_run_resumes(tmp_path: Path, disk: Path, place: str) -> None:
    inputs = make_inputs(tmp_path / "in")
    out = disk / "out" if place == "outputs" else tmp_path / "out"
    side = {"journal": ["--journal", str(disk / "journal.sqlite")],
            "report": ["--report", str(disk / "report.json")],
            "log": ["--log", str(disk / "run.log")],
            "trace": ["--trace", str(disk / "trace.json")],
            "metrics": ["--metrics-file", str(disk / "gpupipe.prom")]}.get(place, [])
    filler = None if place == "outputs" else fill(disk)     # the outputs fill it themselves
    run = [sys.executable, "-m", "gpupipe", "run", str(inputs), "-o", str(out), "--resize", "200x", "-j", "2", *side]

    first = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "Traceback" not in first.stderr, first.stderr[-3000:]
    assert re.search(r"no space left|disk (is )?full", first.stderr, re.IGNORECASE), first.stderr[-3000:]
    if place == "journal":      # a journal that cannot even be created: one message before any work
        assert "--journal another path" in first.stderr and "processed" not in first.stderr
    else:
        assert "processed" in first.stderr                   # the summary was printed
    promised = re.search(r"skips? (?:the )?(\d+) input", first.stderr)

    if filler is not None:
        filler.unlink()
    else:
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    report = tmp_path / "again.json"
    again = subprocess.run([*run, "--report", str(report)] if place != "report" else run,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    outputs = sorted(p.name for p in out.iterdir() if p.is_file())
    assert outputs == [f"{i:02d}.png" for i in range(INPUTS)]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".gpupipe-" in p.name]
    if promised and place != "report":
        summary = json.loads(report.read_text())["summary"]
        assert summary["skipped"] == int(promised.group(1)), (first.stderr[-1500:], summary)
