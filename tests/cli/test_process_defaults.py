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
import gc, json, os, sys
import gpupipe
light = "numpy" not in sys.modules
import gpupipe.cli
import numpy
print(json.dumps({"light": light, "blas": os.environ.get("OPENBLAS_NUM_THREADS"),
                  "threads": len(os.listdir("/proc/self/task")), "run": gpupipe.run.__module__,
                  "collector": gc.isenabled(), "frozen": gc.get_freeze_count()}))
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


ENTRY_PROBE = """
import atexit, gc, json, sys
atexit.register(lambda: print(json.dumps({"collector": gc.isenabled(), "frozen": gc.get_freeze_count()})))
sys.argv = ["gpupipe", "--version"]
import gpupipe.__main__ as entry
entry.main()
"""


def test_the_command_s_imports_are_left_out_of_the_collector_s_walks_and_it_runs():
    """The `gpupipe` command freezes what its imports made (gpupipe/__main__.py); importing
    gpupipe.cli in another program leaves that program's collector alone."""
    out = subprocess.run([sys.executable, "-c", ENTRY_PROBE], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    seen = json.loads(out.splitlines()[-1])
    assert out.startswith("gpupipe ")                   # the command ran (--version)
    assert seen["collector"], "the command left the garbage collector off"
    assert seen["frozen"] > 25_000      # typer and the registries (31 500 here): never walked again
    imported = probe()
    assert imported["collector"] and imported["frozen"] == 0


def test_a_users_blas_setting_wins():
    assert probe(OPENBLAS_NUM_THREADS="2")["blas"] == "2"


def test_a_quiet_run_that_goes_well_says_nothing_and_never_loads_rich(tmp_path):
    """rich draws the progress bar and the summary: a run with nothing to show spares its 30-40 ms.
    Nor does a run load what only other paths use: tomllib (spec files, 4 ms), secrets (2 ms;
    os.urandom names side files' temporaries), Pillow's imaging (11 ms: simplejpeg reads and
    writes these JPEGs) and OpenSSL's hashes (3-4 ms: gpupipe.digests has CPython's own)."""
    from PIL import Image
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.new("RGB", (64, 48), (10, 90, 200)).save(inputs / "p.jpg")
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "gpupipe", "run", str(inputs), "-o",
                           str(tmp_path / "out"), "--thumbnail", "32", "--quiet"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert all(line.startswith("import time:") for line in lines), "a quiet run said something"
    modules = {line.rsplit("|", 1)[1].strip() for line in lines if "|" in line}
    assert "gpupipe.cli.run" in modules and "numpy" in modules
    assert not any(name == "rich" or name.startswith("rich.") for name in modules)
    assert not modules & {"tomllib", "secrets", "PIL.Image", "PIL.features", "hashlib", "_hashlib"}


COMMAND_LINE_PROBE = """
import json, sys
import gpupipe.cli, gpupipe.api, gpupipe.engine.processes, gpupipe.engine.pool, gpupipe.journal
from gpupipe.backends import choose_backend
choice = choose_backend("cpu", workers=2)
print(json.dumps({"pixel_libraries": sorted(m for m in ("numpy", "simplejpeg", "cv2", "PIL") if m in sys.modules),
                  "choice": choice.description}))
"""


def test_the_command_line_and_a_runs_own_process_load_no_pixel_library():
    """The command line, the engine's coordinating side and the choice of the CPU backend load no
    NumPy, simplejpeg, OpenCV or Pillow: `--help` or `ops` never wait for them (50 ms of their
    start), and a run loads them just before it forks its workers (engine.pool), which inherit them."""
    seen = json.loads(subprocess.run([sys.executable, "-c", COMMAND_LINE_PROBE], cwd=REPO_ROOT, capture_output=True,
                                     text=True, timeout=120, check=True).stdout)
    assert seen == {"pixel_libraries": [], "choice": "cpu (NumPy/OpenCV/Pillow, 2 worker processes)"}
    for command in (["--help"], ["ops"], ["run", "--help"]):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "gpupipe", *command], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120, check=True)
        modules = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if "|" in line}
        assert "gpupipe.cli" in modules and not modules & {"numpy", "simplejpeg", "cv2", "PIL"}, command


# What a worker process sees, reported by a python op as its input's tags.
WORKER_PROBE = """
import gc, os, sys
import gpupipe

def probe(image):
    opencv = sys.modules.get("cv2")
    return gpupipe.Tagged(image, {"opencv_loaded": opencv is not None,
                                  "opencv_threads": opencv.getNumThreads() if opencv else None,
                                  "frozen": gc.get_freeze_count()})
"""


def _worker_sees(tmp_path, *ops: str) -> list[dict]:
    from PIL import Image
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 48), (i * 40, 90, 200)).save(inputs / f"p{i}.jpg")
    (tmp_path / "probe.py").write_text(WORKER_PROBE)
    report = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "gpupipe", "run", str(inputs), "-o", str(tmp_path / "out"), *ops,
                    "--python", f"{tmp_path / 'probe.py'}:probe", "-j", "2", "--backend", "cpu", "--quiet",
                    "--report", str(report)], cwd=REPO_ROOT, check=True, timeout=120)
    return [outcome["tags"] for outcome in json.loads(report.read_text())["files"]]


def test_a_run_whose_ops_need_no_opencv_never_loads_it(tmp_path):
    """OpenCV is 35 ms of a run's start-up: a thumbnail run's processes never import it."""
    seen = _worker_sees(tmp_path, "--thumbnail", "32")
    assert len(seen) == 4 and not any(tags["opencv_loaded"] for tags in seen)


def test_workers_that_load_opencv_keep_to_one_thread_each(tmp_path):
    """A worker whose ops load OpenCV runs it with one thread: the workers are the parallelism."""
    seen = _worker_sees(tmp_path, "--blur", "1.5")
    assert len(seen) == 4 and all(tags["opencv_loaded"] and tags["opencv_threads"] == 1 for tags in seen)


def test_workers_leave_what_they_inherit_to_the_collector_of_the_run_s_process(tmp_path):
    """A worker's garbage collector never walks the objects it inherited (frozen at the fork: each
    walk would copy every page they sit on); the run's process collects its own as before."""
    import gc

    import gpupipe
    seen = _worker_sees(tmp_path, "--thumbnail", "32")
    assert len(seen) == 4 and all(tags["frozen"] > 10_000 for tags in seen)
    gpupipe.run(tmp_path / "in", tmp_path / "again", gpupipe.Spec.single([gpupipe.ops.Thumbnail(16)]),
                backend="cpu", workers=2)
    assert gc.get_freeze_count() == 0
