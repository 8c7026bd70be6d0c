"""Memory test: gpupipe W1 (thumbnail 256 -> JPEG q85) over 1000 camera-size inputs.

    python benchmarks/memory.py [--max-memory 512] [--workers N] [--count 1000]
                                [--contender gpupipe] [--out benchmarks/work/memory.json]

gpupipe runs in a fresh interpreter (``benchmarks/contenders.py``) with
``gpupipe.run(..., workers=N, backend="cpu", progress=False, max_memory=MB * 2**20)``
over the ``camera1000`` corpus (hard links to the 40 camera files, see make_corpus.py),
writing to ``benchmarks/work/memory-<contender>/``.  This process samples the child's
RSS (plus any grandchildren) every ``--sample-ms`` (50) and, at each sample, counts
the finished outputs in the output directory, so it can report:

* peak RSS (max of the samples and the child's own VmHWM),
* RSS when the first 100 outputs were done and when the last 100 were done
  (``count - 100`` and ``count``), and the growth between them (a bounded pipeline
  should show ~0: memory must not grow with the number of files),
* the whole (time, outputs done, RSS) series, in the JSON.

``--contender pillow|pyvips|opencv`` runs the same workload with a peer instead
(no max_memory there; useful as a baseline and to test the harness while gpupipe's
API is not there yet).  When the gpupipe API is not importable the script says so
and exits 0 without measuring anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import contenders as C  # noqa: E402
import make_corpus  # noqa: E402
import run as R  # noqa: E402


def count_outputs(out_dir: Path, ext: str) -> int:
    n = 0
    try:
        with os.scandir(out_dir) as it:
            for e in it:
                # final names only: temporary files are hidden or carry a temp suffix
                if e.name.endswith(ext) and not e.name.startswith(".") and e.is_file():
                    n += 1
    except FileNotFoundError:
        pass
    return n


def rss_when(series: list[tuple[float, int, int]], done: int) -> float | None:
    """RSS (MB) at the first sample where at least ``done`` outputs existed."""
    for _, n, rss in series:
        if n >= done:
            return rss / 2**20
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-memory", type=float, default=512, help="MB (2**20 bytes) given to gpupipe")
    ap.add_argument("--workers", type=int, default=None, help="default: usable CPUs")
    ap.add_argument("--count", type=int, default=make_corpus.DEFAULT_CAMERA1000_COUNT)
    ap.add_argument("--corpus", type=Path, default=None, help="input directory (default: camera1000)")
    ap.add_argument("--contender", default="gpupipe", choices=("gpupipe",) + C.PEERS)
    ap.add_argument("--gpupipe-kw", action="append", default=[], metavar="KEY=VALUE",
                    help="extra gpupipe.run() keyword, e.g. fsync=False; repeatable")
    ap.add_argument("--sample-ms", type=float, default=50.0)
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--out", type=Path, default=R.WORK / "memory.json")
    a = ap.parse_args(argv)
    workers = a.workers or len(os.sched_getaffinity(0))
    max_memory = int(a.max_memory * 2**20)

    R.WORK.mkdir(parents=True, exist_ok=True)
    child_dir = R.WORK / ".child"
    child_dir.mkdir(exist_ok=True)

    if a.contender == "gpupipe":
        pr = R.run_child({"contender": "gpupipe", "workload": "W1", "input_dir": ".", "output_dir": ".",
                          "workers": workers, "probe": True, "result_file": str(child_dir / "probe.json")},
                         0.05, 120, child_dir / "probe.log")
        if pr.get("error") or pr.get("returncode"):
            print(f"gpupipe API not available: {pr.get('error') or pr.get('log_tail')}")
            print("memory test skipped")
            return 0

    corpus = a.corpus or make_corpus.ensure_corpus("camera1000", count=a.count)
    n_inputs = len(C.list_inputs(corpus))
    out_dir = R.WORK / f"memory-{a.contender}"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    os.sync()
    R.warm_page_cache(Path(corpus))

    machine = R.machine_info()
    series: list[tuple[float, int, int]] = []
    last = {"t": -1.0}

    def on_sample(t: float, rss: int) -> None:
        if t - last["t"] >= a.sample_ms / 1000 * 0.9:
            series.append((round(t, 3), count_outputs(out_dir, ".jpg"), rss))
            last["t"] = t

    cfg = {"contender": a.contender, "workload": "W1", "input_dir": str(corpus), "output_dir": str(out_dir),
           "workers": workers, "pool": "thread", "opts": {},
           "max_memory": max_memory if a.contender == "gpupipe" else None,
           "gpupipe_kw": R.parse_kw(a.gpupipe_kw),
           "result_file": str(child_dir / f"memory-{a.contender}.json")}
    print(f"{a.contender} W1 over {corpus} ({n_inputs} files), {workers} workers"
          + (f", max_memory {a.max_memory:g} MB" if a.contender == "gpupipe" else ""), flush=True)
    res = R.run_child(cfg, a.sample_ms / 1000, a.timeout, child_dir / f"memory-{a.contender}.log", on_sample)
    if res.get("error"):
        print(f"ERROR: {res['error']}")
        if res.get("traceback"):
            print(res["traceback"])
        return 1
    series.append((round(res["lifetime_s"], 3), count_outputs(out_dir, ".jpg"), 0))  # final count
    done = series[-1][1]
    k = min(100, max(1, n_inputs // 10))
    rss_first = rss_when(series[:-1], k)
    rss_last_start = rss_when(series[:-1], n_inputs - k)
    rss_last = rss_when(series[:-1], n_inputs)
    if rss_last is None and done >= n_inputs:  # exited before a sample saw the final count:
        rss_last = res.get("rss_end_mb")       # the child's RSS right after its last file
    growth = (rss_last - rss_first) if rss_first is not None and rss_last is not None else None
    summary = {
        "contender": a.contender,
        "inputs": n_inputs,
        "outputs": done,
        "processed": res.get("processed"),
        "failed": res.get("failed"),
        "workers": workers,
        "max_memory_mb": a.max_memory if a.contender == "gpupipe" else None,
        "wall_s": res.get("wall_s"),
        "images_per_s": res["processed"] / res["wall_s"] if res.get("wall_s") else None,
        "rss_start_mb": res.get("rss_start_mb"),
        "peak_rss_mb": res.get("rss_peak_mb"),
        "peak_over_start_mb": (res["rss_peak_mb"] - res["rss_start_mb"]) if res.get("rss_start_mb") else None,
        f"rss_after_first_{k}_mb": rss_first,
        f"rss_at_{n_inputs - k}_done_mb": rss_last_start,
        f"rss_after_last_{k}_mb": rss_last,
        "growth_mb": growth,
        "samples": len(series) - 1,
    }
    print(f"processed {res.get('processed')} / failed {res.get('failed')} / outputs {done} of {n_inputs} "
          f"in {res.get('wall_s', 0):.1f} s ({summary['images_per_s'] or 0:.1f} img/s)")
    if res.get("failed"):
        print(f"FAILED {res['failed']}: {res.get('errors', [])[:3]}")
    print(f"RSS at start of processing {summary['rss_start_mb']} MB, peak {summary['peak_rss_mb']:.0f} MB")

    def fmt(v):
        return "n/a" if v is None else f"{v:.0f} MB"

    print(f"RSS after first {k} files {fmt(rss_first)}; at {n_inputs - k} done {fmt(rss_last_start)}; "
          f"after last {k} {fmt(rss_last)}; growth {fmt(growth)}")
    if a.contender == "gpupipe" and summary["peak_rss_mb"] > a.max_memory:
        print(f"NOTE: peak RSS exceeds --max-memory {a.max_memory:g} MB "
              f"(includes the interpreter and libraries: {summary['rss_start_mb']} MB at start)")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"machine": machine, "summary": summary, "child": res,
                                 "series_t_done_rssbytes": series[:-1]}, indent=1))
    print(f"results: {a.out}")
    return 0 if done >= n_inputs and not res.get("failed") else 1


if __name__ == "__main__":
    sys.exit(main())
