"""The CLI process's defaults, set before NumPy loads: one BLAS thread unless the user sets one.

OpenBLAS starts a thread per core when NumPy is imported, and each spins before it sleeps; the CLI's
parallelism is its worker processes, so it asks for one (gpupipe/cli/__init__.py). That only works
because ``import gpupipe`` itself imports nothing heavy: its public names load on first use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support import REPO_ROOT

PROBE = """
import json, os, sys
import gpupipe
light = "numpy" not in sys.modules
import gpupipe.cli
import numpy
print(json.dumps({"light": light, "blas": os.environ.get("OPENBLAS_NUM_THREADS"),
                  "threads": len(os.listdir("/proc/self/task")), "run": gpupipe.run.__module__}))
"""


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return json.loads(out)


def test_the_cli_process_keeps_to_one_blas_thread():
    seen = probe()
    assert seen["light"], "import gpupipe loaded NumPy: the CLI can no longer set its defaults first"
    assert seen["blas"] == "1"
    assert seen["threads"] == 1, "OpenBLAS started threads of its own"
    assert seen["run"] == "gpupipe.api"  # the lazy names still resolve


def test_a_users_blas_setting_wins():
    assert probe(OPENBLAS_NUM_THREADS="2")["blas"] == "2"
