"""Start-up: one small file end to end through the CLI, as a user runs it.

    python benchmarks/startup.py --repeats 15 --json startup-<host>-DATE.json

Each contender is one whole process, timed from its start to its exit, median of ``--repeats``
(alternating), outputs on a tmpfs (/dev/shm):

- gpupipe: ``gpupipe run ONE -o OUT --thumbnail 256 --quiet`` over a folder holding one
  ImageNet-size JPEG (journal on, fsync on, the default worker processes: what a user gets).
- pillow: a Python one-liner that opens the file, thumbnails it and saves it.
- python: ``python -c pass``, the interpreter's own start.

gpupipe's modules are byte-compiled first (``compileall``), as ``pip install`` leaves them:
where PYTHONDONTWRITEBYTECODE is set (this project's sandboxes), an editable checkout would
otherwise compile its 50 modules from source on every run (+70 ms).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

PILLOW = ("import sys; from PIL import Image; im = Image.open(sys.argv[1]); im.thumbnail((256, 256)); "
          "im.save(sys.argv[2])")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="write the results here (benchmarks/results/ if a bare name)")
    args = parser.parse_args()
    import make_corpus
    photo = sorted(make_corpus.ensure_corpus("imagenet").glob("*.jpg"))[0]
    compileall.compile_dir(str(ROOT / "gpupipe"), quiet=1)
    scratch = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None, prefix="startup-"))
    (scratch / "one").mkdir()
    shutil.copy(photo, scratch / "one" / photo.name)
    commands = {
        "gpupipe": lambda out: [sys.executable, "-m", "gpupipe", "run", str(scratch / "one"), "-o", str(out),
                                "--thumbnail", "256", "--quiet"],
        "pillow": lambda out: [sys.executable, "-c", PILLOW, str(scratch / "one" / photo.name), str(out) + ".jpg"],
        "python": lambda out: [sys.executable, "-c", "pass"],
    }
    walls: dict[str, list[float]] = {name: [] for name in commands}
    try:
        for repeat in range(args.repeats + 1):             # the first round warms the page cache
            for name, command in commands.items():
                out = scratch / f"out-{name}"
                shutil.rmtree(out, ignore_errors=True)
                started = time.perf_counter()
                subprocess.run(command(out), check=True, cwd=ROOT)
                if repeat:
                    walls[name].append(time.perf_counter() - started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results = {name: {"median_s": round(statistics.median(w), 4), "min_s": round(min(w), 4),
                      "max_s": round(max(w), 4)} for name, w in walls.items()}
    print(json.dumps(results, indent=1))
    if args.json:
        import PIL
        import typer
        from results_file import write_result
        write_result(args.json, "start-up: one small file end to end", pillow=PIL.__version__, typer=typer.__version__,
                     input=photo.name, config=vars(args), results=results, runs=walls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
