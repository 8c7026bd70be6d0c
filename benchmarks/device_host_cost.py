"""The GPU path's host cost per input, measured without a GPU, and the ceiling it implies.

    python benchmarks/device_host_cost.py --workers 2 --repeats 3 --json device-host-cost-<host>-DATE.json

W1 (thumbnail 256, JPEG q85) over the ImageNet-size corpus through the local engine, each run
a process of its own, twice:

- cpu: the CPU backend (the ops on the host, one image at a time);
- free device: a stand-in device whose ops cost nothing (an OpenCV nearest-neighbour copy to
  the op's output size) and that batches like the GPU backend (64 images, 96 MP): what the
  host still does per input when a GPU does the ops — read, decode, batch, encode, write, the
  chunk's fsyncs and gpupipe's own bookkeeping.

Reported per input: the workers' CPU, the run's own process's CPU (scan and coordination), and
their sum, the host cost; ``cores / host cost`` is the most inputs a second the GPU path can be
fed on that many cores like these, whatever the GPU (JPEG decode on the host dominates it; with
--decoder nvimgcodec the device takes that part).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = """
import json, sys, shutil, time
sys.path.insert(0, {root!r})
import cv2
import gpupipe
from gpupipe import ops
from gpupipe.backends import BackendChoice, choose_backend
from gpupipe.backends.numpy import NumpyBackend
from gpupipe.engine.options import RunOptions
from gpupipe.engine.processes import ProcessEngine


class FreeDevice(NumpyBackend):
    name, description, max_batch_images, max_batch_pixels = "free-device", "free device (stand-in)", 64, 96 * 2**20

    def apply(self, batch, op):
        out = []
        for image in batch:
            width, height = op.output_size(image.shape[1], image.shape[0])
            small = cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)
            out.append(small.reshape(height, width, image.shape[2]))
        return out


workers, source, out, kind = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
spec = gpupipe.Spec.single([ops.Thumbnail(256)], format="jpeg", quality=85)
choice = (choose_backend("cpu", workers=workers) if kind == "cpu"
          else BackendChoice("free-device", "free device (stand-in)", lambda: FreeDevice(workers)))
started = time.perf_counter()
result = ProcessEngine(spec, choice, RunOptions(workers=workers)).run([source], out)
cpu = result.summary.cpu_seconds_by_stage
print(json.dumps({{"files": result.summary.processed, "wall_s": time.perf_counter() - started,
                  "workers_s": cpu["workers"], "own_s": cpu["scan"] + cpu["coordinate"]}}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write the results here (benchmarks/results/ if a bare name)")
    a = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import make_corpus
    corpus = make_corpus.ensure_corpus("imagenet")
    scratch = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None, prefix="hostcost-"))
    code = CHILD.format(root=str(ROOT))
    runs: dict[str, list[dict]] = {"cpu": [], "free device": []}
    try:
        for repeat in range(a.repeats + 1):              # the first round warms the page cache
            for kind in runs:
                out = scratch / f"{kind.replace(' ', '-')}-{repeat}"
                done = subprocess.run([sys.executable, "-c", code, str(a.workers), str(corpus), str(out),
                                       "cpu" if kind == "cpu" else "free"], capture_output=True, text=True,
                                      check=True)
                if repeat:
                    runs[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)
    table = {}
    for kind, results in runs.items():
        files = results[0]["files"]
        workers_ms = statistics.median(1000 * r["workers_s"] / files for r in results)
        own_ms = statistics.median(1000 * r["own_s"] / files for r in results)
        table[kind] = {"files": files, "img_s": round(files / statistics.median(r["wall_s"] for r in results), 1),
                       "workers_cpu_ms_per_input": round(workers_ms, 4), "own_cpu_ms_per_input": round(own_ms, 4),
                       "host_cost_ms_per_input": round(workers_ms + own_ms, 4),
                       "ceiling_img_s_per_core": round(1000 / (workers_ms + own_ms), 1)}
    print(json.dumps(table, indent=1))
    if a.json:
        from results_file import write_result
        write_result(a.json, "the GPU path's host cost per input (W1, stand-in device)", config=vars(a),
                     results=table, runs=runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
