"""Bounded memory, proven: the real CLI over 10 000 small and 1 000 camera-size images.

    python benchmarks/bounded_memory.py [--small 10000] [--camera 1000] [--max-memory 512MB]
                                        [--workers N] [--ops W1|W2|W3|"<gpupipe run op flags>"]
                                        [--json NAME.json]

For each corpus this runs ``python -m gpupipe run CORPUS -o OUT --max-memory X --workers N
--log LOG.jsonl`` (plus the ops) in a subprocess, exactly as a user would, and samples the
RSS of that process and all its descendants with psutil every ``--sample-ms`` (50) ms. At
each sample it also reads the root process's kernel high-water mark (``VmHWM`` in
/proc/PID/status), which catches spikes between samples; the peak is the larger of the two.

Corpora (built once from GPUPIPE_BENCH_PHOTOS by make_corpus.py and cached under the
git-ignored benchmarks/corpora/):

* small:  ``--small`` ImageNet-size JPEGs (~500x375), each a distinct file (``imagenet10000``);
* camera: ``--camera`` 12 MP JPEGs, hard links to the 40 ``camera`` files under distinct
  names (``camera1000``; see make_corpus.py).

Figures per corpus: files, wall time, img/s, peak RSS, the ``--max-memory`` given, and
peak minus a *fixed overhead*: the peak RSS of the same CLI command (same ops, workers,
max-memory) on a one-file input (the first file of the first corpus), i.e. the interpreter,
the imported libraries, thread stacks and one image (median of 3 such runs).

Growth: the CLI's ``--log`` records the time every input finished (its final ``ok`` or
``failed`` line), so each RSS sample is matched with the number of files finished at that
moment. Compared are the RSS samples taken while the first ``W`` files were finishing
(between the 1st and the W-th) and while the last ``W`` were (between the (n-W+1)-th and
the n-th), with ``W = --window`` (default ``min(1000, n // 10)``: the first and last
thousand of 10 000 files; of 1 000 camera files, the first and last hundred). Also given: a
least-squares slope of RSS against files finished after the first window (MB per 1000 files).

Verdicts:

* bounded: peak RSS <= max-memory + fixed overhead (no tolerance);
* no growth: median RSS of the last window - median RSS of the first window <= tolerance,
  ``--growth-tolerance`` (default 16 MiB; see README.md for why).

The full record (configuration, machine, versions, every sample) goes to
benchmarks/work/bounded-memory/results.json and, with ``--json NAME``, to
benchmarks/results/NAME (a path with a directory is used as given).
"""

from __future__ import annotations

import argparse
import bisect
import calendar
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import contenders as C  # stdlib-only at import time
import make_corpus
import run as R

WORK = R.WORK / "bounded-memory"
FINAL_STATES = ("ok", "failed", "skipped", "cancelled")
MiB = 2**20


# ----------------------------------------------------------------- the ops

def ops_args(ops: str) -> tuple[list[str], str]:
    """CLI arguments for ``--ops``: W1/W2/W3 from contenders.gpupipe_spec (via --spec), or raw op flags."""
    if ops.upper() in C.WORKLOADS:
        workload = ops.upper()
        path = C.gpupipe_spec_file(workload, WORK)
        return ["--spec", str(path)], f"{workload} ({C.WORKLOADS[workload]['name']}, contenders.gpupipe_spec)"
    return shlex.split(ops), ops


# ----------------------------------------------------------------- running the CLI

def _vm_hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_cli(args: list[str], log_path: Path, sample_s: float, timeout_s: float) -> dict:
    """Run ``python -m gpupipe ARGS``; sample the tree's RSS; return timings, samples, stderr tail."""
    env = os.environ.copy()
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "gpupipe", *args]
    samples: list[tuple[float, int]] = []     # (time.time(), RSS of the tree in bytes)
    hwm = pss_peak = 0
    killed = False
    t0_wall, t0 = time.time(), time.perf_counter()
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=str(REPO))
        tree = R.ProcessTree(proc.pid)
        while proc.poll() is None:
            now = time.perf_counter()
            total = tree.rss()
            hwm = max(hwm, _vm_hwm(proc.pid))
            pss_peak = max(pss_peak, tree.pss())      # forked workers' shared pages counted once
            if total:
                samples.append((time.time(), total))
            if not killed and now - t0 > timeout_s:
                tree.kill()
                killed = True
            time.sleep(sample_s)
    wall = time.perf_counter() - t0
    peak_sampled = max((r for _, r in samples), default=0)
    return {"command": ["python", "-m", "gpupipe", *args], "returncode": proc.returncode, "timed_out": killed,
            "wall_s": wall, "started": t0_wall, "samples": samples, "peak_sampled": peak_sampled,
            "vm_hwm": hwm, "peak": max(peak_sampled, hwm), "peak_pss": pss_peak,
            "output_tail": log_path.read_text(errors="replace")[-1500:]}


def _epoch(iso: str) -> float:
    """The StateLog's '2026-11-22T21:01:24.123456Z' -> seconds since the epoch."""
    whole, frac = iso.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + frac)


def read_state_log(path: Path) -> dict:
    """Finish times (sorted) and counts by final state from a --log JSON-lines file."""
    finished: list[float] = []
    counts: dict[str, int] = {}
    first_event = None
    errors: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue                          # a torn last line of a killed run
            if first_event is None:
                first_event = _epoch(event["t"])
            state = event.get("state")
            if state in FINAL_STATES:
                finished.append(_epoch(event["t"]))
                counts[state] = counts.get(state, 0) + 1
                if state == "failed" and len(errors) < 5:
                    errors.append(f"{event.get('path')}: {event.get('error_class')}: {event.get('message')}")
    finished.sort()
    return {"finished": finished, "counts": counts, "first_event": first_event, "errors": errors}


def count_outputs(out_dir: Path) -> int:
    return sum(1 for p in out_dir.rglob("*") if p.is_file() and ".gpupipe" not in p.parts
               and not p.name.startswith("."))


def cli_args(corpus: Path, out_dir: Path, log: Path, a, op_args: list[str]) -> list[str]:
    return ["run", str(corpus), "-o", str(out_dir), "--max-memory", a.max_memory, "--workers", str(a.workers),
            "--backend", a.backend, "--log", str(log), *op_args]


# ----------------------------------------------------------------- analysis

def window_stats(series: list[tuple[float, int, int]], lo: int, hi: int) -> dict | None:
    """RSS (MiB) of the samples taken after the lo-th file finished and before the hi-th did."""
    rss = [r / MiB for _, done, r in series if lo <= done < hi]
    if not rss:
        return None
    return {"files": [lo, hi], "samples": len(rss), "median_mb": statistics.median(rss), "max_mb": max(rss),
            "min_mb": min(rss)}


def slope_per_1000(series: list[tuple[float, int, int]], after: int) -> float | None:
    pts = [(done, r / MiB) for _, done, r in series if done >= after]
    if len(pts) < 3 or pts[-1][0] == pts[0][0]:
        return None
    mx = statistics.fmean(x for x, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return 1000 * sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else None


def measure_corpus(name: str, corpus: Path, a, op_args: list[str], overhead_mb: float, max_memory_mb: float) -> dict:
    out_dir, log = WORK / f"out-{name}", WORK / f"{name}.jsonl"
    shutil.rmtree(out_dir, ignore_errors=True)     # a fresh output: no journal to skip anything
    n_inputs = len(C.list_inputs(corpus))
    os.sync()
    R.warm_page_cache(corpus)
    print(f"\n== {name}: {corpus} ({n_inputs} files) ==", flush=True)
    run = run_cli(cli_args(corpus, out_dir, log, a, op_args), WORK / f"{name}.out", a.sample_ms / 1000, a.timeout)
    states = read_state_log(log) if log.exists() else {"finished": [], "counts": {}, "first_event": None,
                                                           "errors": []}
    finished = states["finished"]
    series = [(round(t - run["started"], 3), bisect.bisect_right(finished, t), r) for t, r in run["samples"]]
    n = len(finished)
    k = a.window or max(1, min(1000, n_inputs // 10))
    first, last = window_stats(series, 1, k), window_stats(series, n_inputs - k + 1, n_inputs)
    # (samples before the 1st file finished are start-up: imports, scan, the pipeline filling)
    growth = (last["median_mb"] - first["median_mb"]) if first and last else None
    growth_max = (last["max_mb"] - first["max_mb"]) if first and last else None
    run_s = (finished[-1] - states["first_event"]) if finished and states["first_event"] else None
    ok = states["counts"].get("ok", 0)
    peak_mb = run["peak"] / MiB
    res = {
        "corpus": name, "path": str(corpus), "inputs": n_inputs, "finished": n, "states": states["counts"],
        "outputs_on_disk": count_outputs(out_dir), "returncode": run["returncode"], "timed_out": run["timed_out"],
        "first_errors": states["errors"],
        "wall_s": run["wall_s"], "run_s": run_s, "images_per_s": ok / run_s if run_s else None,
        "peak_rss_mb": peak_mb, "peak_rss_sampled_mb": run["peak_sampled"] / MiB, "vm_hwm_mb": run["vm_hwm"] / MiB,
        "peak_pss_mb": run["peak_pss"] / MiB,
        "max_memory_mb": max_memory_mb, "overhead_mb": overhead_mb, "peak_minus_overhead_mb": peak_mb - overhead_mb,
        "window": k, "first_window": first, "last_window": last, "growth_median_mb": growth,
        "growth_max_mb": growth_max, "slope_mb_per_1000_after_first_window": slope_per_1000(series, k),
        "growth_tolerance_mb": a.growth_tolerance,
        "bounded": peak_mb <= max_memory_mb + overhead_mb,
        "no_growth": growth is not None and growth <= a.growth_tolerance,
        "command": run["command"], "output_tail": run["output_tail"][-600:],
        "series_t_done_rssbytes": series,
    }
    res["complete"] = ok == n_inputs and res["outputs_on_disk"] >= n_inputs and run["returncode"] == 0
    print_corpus(res)
    return res


def _mb(v) -> str:
    return "n/a" if v is None else f"{v:.0f} MB"


def print_corpus(r: dict) -> None:
    st = ", ".join(f"{k} {v}" for k, v in sorted(r["states"].items())) or "nothing finished"
    print(f"files {r['inputs']}: {st}; {r['outputs_on_disk']} outputs on disk; exit {r['returncode']}"
          + (" (TIMED OUT)" if r["timed_out"] else ""))
    if r["first_errors"]:
        print("  first failures: " + "; ".join(r["first_errors"][:3]))
    if not r["complete"]:
        print("  INCOMPLETE: not every input was processed; CLI output tail:\n" + r["output_tail"])
    rate = f"{r['images_per_s']:.1f} img/s" if r["images_per_s"] else "n/a"
    print(f"wall {r['wall_s']:.1f} s incl. start-up ({r['run_s'] or 0:.1f} s first to last log event), {rate}")
    print(f"peak PSS of the tree {r['peak_pss_mb']:.0f} MB (shared pages counted once)")
    print(f"peak RSS {r['peak_rss_mb']:.0f} MB (sampled {r['peak_rss_sampled_mb']:.0f}, VmHWM "
          f"{r['vm_hwm_mb']:.0f}); --max-memory {r['max_memory_mb']:.0f} MB; fixed overhead "
          f"{r['overhead_mb']:.0f} MB; peak - overhead {r['peak_minus_overhead_mb']:.0f} MB")
    f, last, k = r["first_window"], r["last_window"], r["window"]
    if f and last:
        print(f"RSS while files 1-{k} finished: median {f['median_mb']:.0f}, max {f['max_mb']:.0f} MB "
              f"({f['samples']} samples); files {last['files'][0]}-{last['files'][1]}: median "
              f"{last['median_mb']:.0f}, max {last['max_mb']:.0f} MB ({last['samples']} samples)")
        slope = r["slope_mb_per_1000_after_first_window"]
        print(f"growth first -> last {k}: median {r['growth_median_mb']:+.1f} MB, max {r['growth_max_mb']:+.1f} MB; "
              f"slope after the first window {'n/a' if slope is None else f'{slope:+.2f} MB per 1000 files'}")
    else:
        print(f"growth: n/a (too few samples in a window of {k} files; use a larger corpus or --window)")
    print(f"VERDICT bounded (peak <= max-memory + overhead = {r['max_memory_mb'] + r['overhead_mb']:.0f} MB): "
          f"{'PASS' if r['bounded'] else 'FAIL'}")
    print(f"VERDICT no growth (median growth <= {r['growth_tolerance_mb']:g} MB): "
          + ("PASS" if r["no_growth"] else "n/a" if r["growth_median_mb"] is None else "FAIL"))


# ----------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=10000, help="small (ImageNet-size) images; 0 skips")
    ap.add_argument("--camera", type=int, default=1000, help="camera-size (12 MP) images; 0 skips")
    ap.add_argument("--max-memory", default="512MB", help="passed to gpupipe run as given (default 512MB)")
    ap.add_argument("--workers", type=int, default=None, help="default: usable CPUs")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--ops", default="W1", help="W1 (default: thumbnail 256, JPEG q85), W2 or W3 as defined in "
                    "contenders.gpupipe_spec, or gpupipe run op flags, e.g. --ops='--thumbnail 256 --format webp'")
    ap.add_argument("--window", type=int, default=None, help="files in each growth window "
                    "(default min(1000, files // 10))")
    ap.add_argument("--growth-tolerance", type=float, default=16.0, help="MB (default 16)")
    ap.add_argument("--sample-ms", type=float, default=50.0)
    ap.add_argument("--overhead-runs", type=int, default=3)
    ap.add_argument("--build-jobs", type=int, default=None, help="threads building a corpus (default: usable CPUs)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="per CLI run, seconds")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT",
                    help="also write the results here (a bare name goes to benchmarks/results/)")
    a = ap.parse_args(argv)
    cpus = len(os.sched_getaffinity(0))
    a.workers = a.workers or cpus
    jobs = a.build_jobs or cpus

    corpora = []
    if a.small:
        corpora.append(("small", make_corpus.ensure_corpus("imagenet", count=a.small, jobs=jobs)))
    if a.camera:
        corpora.append(("camera", make_corpus.ensure_corpus("camera1000", count=a.camera, jobs=jobs)))
    if not corpora:
        ap.error("nothing to do: --small 0 and --camera 0")
    op_args, ops_desc = ops_args(a.ops)
    WORK.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    if load_start[0] > 0.5 * cpus:
        print(f"WARNING: load average {load_start[0]:.1f} on {cpus} CPUs: the machine is busy; "
              "timings will be noisy", file=sys.stderr)

    # Fixed overhead: the same command over one small input (interpreter, imports, threads, one image).
    tiny = WORK / "tiny-in"
    shutil.rmtree(tiny, ignore_errors=True)
    tiny.mkdir(parents=True)
    first_input = C.list_inputs(corpora[0][1])[0]
    try:
        os.link(first_input, tiny / first_input.name)
    except OSError:
        shutil.copyfile(first_input, tiny / first_input.name)
    print(f"gpupipe CLI, ops {ops_desc}, --max-memory {a.max_memory}, {a.workers} workers", flush=True)
    overhead_runs = []
    for _ in range(a.overhead_runs):
        out = WORK / "out-tiny"
        shutil.rmtree(out, ignore_errors=True)
        r = run_cli(cli_args(tiny, out, WORK / "tiny.jsonl", a, op_args), WORK / "tiny.out", a.sample_ms / 1000, 300)
        if r["returncode"] != 0:
            print("the one-file run failed:\n" + r["output_tail"])
            return 2
        overhead_runs.append(r["peak"] / MiB)
    overhead_mb = statistics.median(overhead_runs)
    print(f"fixed overhead (peak RSS of the same command on one small file, median of {len(overhead_runs)}): "
          f"{overhead_mb:.0f} MB  (runs: {', '.join(f'{x:.0f}' for x in overhead_runs)})")

    # imported only now: keeps the harness small while it samples
    from gpupipe.options import parse_size

    max_memory_mb = parse_size(a.max_memory) / MiB
    results = [measure_corpus(name, path, a, op_args, overhead_mb, max_memory_mb) for name, path in corpora]

    print("\n== summary ==")
    print(f"{'corpus':<8}{'files':>7}{'wall s':>8}{'img/s':>8}{'peak MB':>9}{'max-mem':>9}{'overhd':>8}"
          f"{'pk-ovh':>8}{'growth':>8}  bounded  no-growth")
    for r in results:
        g = r["growth_median_mb"]
        print(f"{r['corpus']:<8}{r['inputs']:>7}{r['wall_s']:>8.1f}{r['images_per_s'] or 0:>8.1f}"
              f"{r['peak_rss_mb']:>9.0f}{r['max_memory_mb']:>9.0f}{r['overhead_mb']:>8.0f}"
              f"{r['peak_minus_overhead_mb']:>8.0f}{'n/a' if g is None else f'{g:+.1f}':>8}  "
              f"{'PASS' if r['bounded'] else 'FAIL':<9}{'PASS' if r['no_growth'] else 'FAIL' if g is not None else 'n/a'}")

    machine = R.machine_info()
    machine["loadavg_at_start"] = list(load_start)
    machine["loadavg_at_end"] = list(os.getloadavg())
    record = {
        "benchmark": "bounded_memory",
        "date": machine["date"],
        "config": {"small": a.small, "camera": a.camera, "max_memory": a.max_memory, "max_memory_mb": max_memory_mb,
                   "workers": a.workers, "backend": a.backend, "ops": a.ops, "ops_described": ops_desc,
                   "cli_op_args": op_args, "window": a.window, "growth_tolerance_mb": a.growth_tolerance,
                   "sample_ms": a.sample_ms},
        "machine": machine,
        "overhead": {"runs_peak_mb": overhead_runs, "median_mb": overhead_mb, "input": str(first_input)},
        "corpora": results,
    }
    R.write_results(record, WORK / "results.json", a.json)
    good = all(r["complete"] and r["bounded"] and r["no_growth"] for r in results)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
