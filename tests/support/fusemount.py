"""Mount one of the tests' FUSE filesystems (tests/support/faultfs.py, tests/faultfs_writes.py) for a fixture."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def fuse_mount(script: Path, source: Path, mount: Path, options: list[str]) -> Iterator[Path]:
    """Serve ``source`` at ``mount`` with ``script`` while the caller's fixture lasts (``yield from``);
    skip, saying why, where this machine has no FUSE."""
    try:
        import fuse  # noqa: F401  (fusepy, with libfuse2 underneath)
    except (ImportError, OSError) as exc:
        pytest.skip(f"FUSE for Python is not available here: {exc}")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse on this machine")
    mount.mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, str(script), str(source), str(mount), *options],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 10
    while not os.path.ismount(mount) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    if not os.path.ismount(mount):
        proc.kill()
        pytest.skip(f"could not mount a FUSE filesystem here: {proc.communicate()[0][-300:]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)     # lazy: a hung read may still hold it
        proc.kill()             # a killed FUSE server makes the kernel fail any read still hanging on it
        proc.wait(timeout=10)
