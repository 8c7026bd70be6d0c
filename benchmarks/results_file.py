"""Where a benchmark writes its result: benchmarks/results/NAME (or a path), with the date, the
machine, Python and the commit measured, so a figure can always be traced to what gave it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write_result(name: str, benchmark: str, **fields) -> Path:
    """``fields`` (config, results, raw runs, versions) under the common header, as indented JSON."""
    target = Path(name) if os.sep in name else HERE / "results" / name
    git = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    record = {"benchmark": benchmark, "date": date.today().isoformat(), "machine": platform.node(),
              "cpus": os.cpu_count(), "python": platform.python_version(), "git": git, **fields}
    target.write_text(json.dumps(record, indent=1) + "\n")
    return target
