"""Local engine vs Ray engine on W1 (docs/design.md §7), at equal worker counts, on this machine.

    python benchmarks/engines.py --workers 1,2 --repeats 3 --json engines-cpu-2core-DATE.json

For each worker count N, one fresh child process per engine, pinned to N cores (the
local engine runs several threads per worker and would otherwise use more cores than
Ray's N single-threaded tasks; Ray's own processes inherit the pinning), runs the same W1 spec
(thumbnail 256, JPEG q85) over the same corpus ``--repeats`` times, journal off,
into a fresh folder each time:

- local: ``gpupipe.run(engine="local", workers=N)``.
- ray (warm): a local Ray cluster of N CPUs is started once in the child, then
  ``gpupipe.run(engine="ray", workers=N)`` joins it, as a run with ``--ray-address``
  on a running cluster would. Each run still sets up its own tasks (the run's settings put
  in Ray's object store, the first chunks handed out), which is counted.

Each child first makes one warm-up run (page cache; Ray's worker processes), reported
apart from the measured repeats.
- ray (cold): one ``gpupipe run --engine ray`` CLI process, cluster start included.

Reported: median images/s, Ray's overhead against the local engine at the same N
(1 − ray/local; the target is ≤ 20 %), and throughput against N for each engine.
Outputs of the two engines are compared byte for byte once.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_corpus  # noqa: E402

RESULTS = HERE / "results"

CHILD = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    os.sched_setaffinity(0, range({workers}))      # N workers get N cores, whatever their threads (Ray inherits it)
    sys.path.insert(0, {here!r})
    import gpupipe
    from contenders import gpupipe_spec
    engine, workers, repeats, corpus, work = {engine!r}, {workers}, {repeats}, {corpus!r}, Path({work!r})
    if engine == "ray":
        import ray
        started = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, object_store_memory=1 << 30)
        print(json.dumps({{"cluster_start_s": time.perf_counter() - started}}), flush=True)
    spec = gpupipe_spec("W1")
    for repeat in range(-1, repeats):        # -1: a warm-up (page cache, Ray's worker processes), reported apart
        # a folder of its own each: nothing deleted between timed runs (benchmarks/scratch.py says why)
        out = work / f"{{engine}}-{{workers}}-{{'warm-up' if repeat < 0 else repeat}}"
        started = time.perf_counter()
        result = gpupipe.run([corpus], out, spec, backend="cpu", workers=workers, engine=engine, journal=False)
        wall = time.perf_counter() - started
        print(json.dumps({{"warmup_s" if repeat < 0 else "wall_s": wall, "processed": result.summary.processed,
                           "failed": result.summary.failed}}), flush=True)
""")


def run_child(engine: str, workers: int, repeats: int, corpus: Path, work: Path) -> dict:
    code = CHILD.format(here=str(HERE), engine=engine, workers=workers, repeats=repeats, corpus=str(corpus),
                        work=str(work))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{engine} with {workers} workers failed:\n{done.stderr[-3000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    runs = [line for line in lines if "wall_s" in line]
    files = runs[0]["processed"] + runs[0]["failed"]
    walls = [r["wall_s"] for r in runs]
    result = {"engine": engine, "workers": workers, "files": files, "walls_s": walls,
              "median_wall_s": statistics.median(walls), "images_per_s": files / statistics.median(walls)}
    result.update(next((line for line in lines if "cluster_start_s" in line), {}))
    result["warmup_s"] = next(line["warmup_s"] for line in lines if "warmup_s" in line)
    return result


def cold_cli(workers: int, corpus: Path, work: Path) -> dict:
    out = work / f"cold-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "gpupipe", "run", str(corpus), "-o", str(out), "--engine", "ray",
               "--workers", str(workers), "--thumbnail", "256", "-f", "jpeg", "-q", "85", "--no-journal", "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"cold CLI run failed:\n{done.stderr[-3000:]}")
    return {"workers": workers, "wall_s": wall}


def same_outputs(a: Path, b: Path) -> bool:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return files(a) == files(b)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2", help="comma list of worker counts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--count", type=int, default=make_corpus.DEFAULT_IMAGENET_COUNT,
                    help="ImageNet-size inputs in the corpus")
    ap.add_argument("--json", metavar="NAME", help="also write benchmarks/results/NAME")
    a = ap.parse_args(argv)
    counts = [int(w) for w in a.workers.split(",")]
    corpus = make_corpus.ensure_corpus("imagenet", count=a.count)
    work = Path(tempfile.mkdtemp(prefix="gpupipe-engines-"))
    rows, cold = [], []
    try:
        for workers in counts:
            for engine in ("local", "ray"):
                rows.append(run_child(engine, workers, a.repeats, corpus, work))
                print(f"{engine:>5} × {workers}: {rows[-1]['images_per_s']:.1f} img/s "
                      f"(walls {', '.join(f'{w:.2f}' for w in rows[-1]['walls_s'])} s)", flush=True)
            cold.append(cold_cli(workers, corpus, work))
        identical = same_outputs(work / f"local-{counts[0]}-0", work / f"ray-{counts[0]}-0")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by = {(r["engine"], r["workers"]): r for r in rows}
    print(f"\nW1 over {rows[0]['files']} ImageNet-size JPEGs, median of {a.repeats}; outputs identical: {identical}")
    print(f"{'workers':>7} {'local img/s':>12} {'ray img/s':>10} {'ray overhead':>13} {'ray cold CLI wall':>18}")
    for workers, c in zip(counts, cold):
        local, ray = by[("local", workers)], by[("ray", workers)]
        overhead = 1 - ray["images_per_s"] / local["images_per_s"]
        print(f"{workers:>7} {local['images_per_s']:>12.1f} {ray['images_per_s']:>10.1f} {overhead:>12.0%} "
              f"{c['wall_s']:>16.1f} s")
    result = {"date": date.today().isoformat(), "host": platform.node(), "python": platform.python_version(),
              "cpus": __import__("os").cpu_count(), "versions": _versions(), "corpus": str(corpus),
              "repeats": a.repeats, "runs": rows, "cold_cli": cold, "outputs_identical": identical}
    if a.json:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / a.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written: benchmarks/results/{a.json}")
    return 0 if identical else 1


def _versions() -> dict:
    from importlib.metadata import version
    return {name: version(name) for name in ("gpupipe", "ray", "numpy", "pillow")}


if __name__ == "__main__":
    raise SystemExit(main())
