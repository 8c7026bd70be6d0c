"""A run killed outright (SIGKILL, no chance to clean up) at 20 random points, and run again
each time: in the end every input has exactly one output, byte-identical to an uninterrupted
run's, no temporary file is left and the journal says every input is done."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from tests.support import hostile

KILLS = 20


def command(inputs: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "gpupipe", "run", str(inputs), "-o", str(out), "--resize", "200x",
            "--blur", "1.5", "-j", "2"]


def outputs_below(out: Path) -> dict[str, bytes]:
    found = {}
    for top, dirs, files in os.walk(out):
        dirs[:] = [d for d in dirs if d != ".gpupipe"]
        for name in files:
            path = Path(top, name)
            found[str(path.relative_to(out))] = path.read_bytes()
    return found


def test_sigkill_at_random_points_then_resume_leaves_exactly_one_good_output_each(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    for i in range(48):
        size = (480 + 8 * i, 320)
        fmt, ext = ("jpeg", "jpg") if i % 3 else ("png", "png")
        path = inputs / f"set{i % 4}" / f"{i:02d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(hostile.encoded(fmt, hostile.small_photo(size)))

    clean = tmp_path / "clean"
    started = time.perf_counter()
    subprocess.run(command(inputs, clean), check=True, capture_output=True)
    full_run = time.perf_counter() - started
    reference = outputs_below(clean)
    assert len(reference) == 48

    out = tmp_path / "out"
    rng = random.Random(20261205)
    for _ in range(KILLS):
        run = subprocess.Popen(command(inputs, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, full_run))
        run.kill()
        run.wait()
    final = subprocess.run(command(inputs, out), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-2000:]

    assert outputs_below(out) == reference                  # exactly one output each, all complete
    for name in reference:
        with Image.open(out / name) as im:
            im.load()
    leftovers = [name for top, _, files in os.walk(out) for name in files
                 if name.endswith(".tmp") or ".gpupipe-" in name]
    assert leftovers == []
    journal = subprocess.run([sys.executable, "-m", "gpupipe", "report", str(out), "--json"],
                             capture_output=True, text=True, check=True)
    assert json.loads(journal.stdout)["inputs"] == {"ok": 48}
