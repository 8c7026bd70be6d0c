"""How gpupipe's local engine scales with workers on this host:

    python benchmarks/scaling.py --json scaling-<host>-DATE.json [--backend gpu]

W1 (thumbnails, docs/design.md §7) over 2000 ImageNet-size JPEGs, where each file is a few
milliseconds of codec work and the engine's own per-file Python work counts most, at 1, 2,
4, ... workers up to every core: img/s (median of --repeats) and the cores the process kept
busy (its user + system CPU time over the wall time). Work that scales adds cores and
images together; a run bound by the interpreter lock stops gaining images while cores sit
idle. On the H100 host (16 cores) both backends stopped near 550-750 img/s on small images,
W1 and W3 alike (benchmarks/results/gpu-h100-2026-11-23.json): this separates that ceiling
from the codecs. The sweep writes to a tmpfs where there is one, without fsync, so the disk is
not what it measures; a last run at every core writes to disk with an fsync per file, as the
other benchmarks and the CLI's default do, to tell whether the disk's fsync rate is the ceiling.
The workers are processes, whose decode, resize and encode hold no lock the engine shares;
"cores busy" counts the workers' CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gpupipe  # noqa: E402
from gpupipe.engine.host import usable_cores  # noqa: E402
import make_corpus  # noqa: E402
from contenders import gpupipe_spec  # noqa: E402

RESULTS = HERE / "results"
FILES = 2000


def worker_counts(cores: int) -> list[int]:
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return counts + [cores]


class Run(NamedTuple):
    wall: float                          # seconds
    cpu: float                           # CPU seconds of this process and its worker processes
    files: int                           # done, or failed
    engine_cpu: float                    # CPU seconds of this process alone
    engine_cpu_by_stage: dict[str, float]   # those by pipeline stage (RunSummary.cpu_seconds_by_stage)


def one_run(corpus: Path, work: Path, backend: str, workers: int, extra: dict, fsync: bool = False) -> Run:
    out = work / f"out-{backend}-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    before, started = os.times(), time.perf_counter()
    result = gpupipe.run([corpus], out, gpupipe_spec("W1"), backend=backend, workers=workers, journal=False,
                         fsync=fsync, **extra)
    wall, after = time.perf_counter() - started, os.times()
    shutil.rmtree(out, ignore_errors=True)
    cpu = sum(after[:4]) - sum(before[:4])      # user + system, and the workers' once they have exited
    engine = sum(after[:2]) - sum(before[:2])
    return Run(wall, cpu, result.summary.processed + result.summary.failed, engine, result.summary.cpu_seconds_by_stage)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="cpu", help="cpu or gpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", help="comma-separated counts (default 1, 2, 4, ... up to every core)")
    ap.add_argument("--json", metavar="NAME", help="also write benchmarks/results/NAME")
    a = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0))        # the sweep's end; usable_cores() also counts a CPU quota
    counts = [int(n) for n in a.workers.split(",")] if a.workers else worker_counts(cores)
    corpus = make_corpus.ensure_corpus("imagenet", count=FILES)
    base = {"max_memory": 4 * 2**30} if a.backend == "gpu" else {}
    tmpfs = Path("/dev/shm")
    work = Path(tempfile.mkdtemp(prefix="gpupipe-scaling-", dir=tmpfs if tmpfs.is_dir() else None))
    rows = []
    try:
        one_run(corpus, work, a.backend, counts[-1], base)              # warm-up: page cache, kernels
        for workers in counts:
            runs = [one_run(corpus, work, a.backend, workers, base) for _ in range(a.repeats)]
            wall = statistics.median(r.wall for r in runs)
            busy = statistics.median(r.cpu / r.wall for r in runs)
            # With worker processes, the engine's own process (reading, writing, journal) is
            # one interpreter: its CPU per file bounds the img/s any number of workers reaches.
            engine_ms = statistics.median(1000 * r.engine_cpu / r.files for r in runs)
            # Which threads used that CPU: codec threads busy, or one core's worth of Python.
            by_stage = {stage: round(statistics.median(1000 * r.engine_cpu_by_stage.get(stage, 0.0) / r.files
                                                       for r in runs), 3)
                        for stage in runs[0].engine_cpu_by_stage}
            rows.append({"workers": workers, "img_s": runs[0].files / wall, "cores_busy": busy,
                         "engine_process_cpu_ms_per_file": round(engine_ms, 3),
                         "engine_cpu_ms_per_file_by_stage": by_stage,
                         "walls": [round(r.wall, 3) for r in runs]})
            print(f"{a.backend} workers {workers:3}: {rows[-1]['img_s']:7.0f} img/s, "
                  f"{busy:5.2f} of {cores} cores busy, engine process {engine_ms:.2f} ms CPU a file",
                  flush=True)
        # The benchmarks' own setting, on disk with an fsync per file: does the disk's fsync rate,
        # not the engine, set the small-image ceiling?
        disk = Path(tempfile.mkdtemp(prefix="scaling-", dir=HERE / "work" if (HERE / "work").is_dir() else None))
        try:
            runs = [one_run(corpus, disk, a.backend, counts[-1], base, fsync=True) for _ in range(a.repeats)]
        finally:
            shutil.rmtree(disk, ignore_errors=True)
        wall = statistics.median(r.wall for r in runs)
        fsynced = {"workers": counts[-1], "img_s": runs[0].files / wall, "on": str(disk.parent),
                   "walls": [round(r.wall, 3) for r in runs]}
        print(f"{a.backend} workers {counts[-1]:3}, fsync on disk: {fsynced['img_s']:7.0f} img/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"date": date.today().isoformat(), "gpupipe": gpupipe.__version__, "python": sys.version.split()[0],
              "cores": cores, "usable_cores": usable_cores(), "backend": a.backend, "workload": "W1",
              "corpus": corpus.name, "rows": rows, "fsync_on_disk": fsynced}
    if a.json:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / a.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written: benchmarks/results/{a.json}")
    if a.backend != "cpu":
        from gpupipe.backends.cuda.jpeg import exit_before_teardown
        exit_before_teardown(0)               # nvImageCodec's teardown can crash an exiting process
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
