"""Side-by-side throughput benchmark: gpupipe against Pillow, pyvips and OpenCV.

    python benchmarks/run.py [--workloads W1,W2,W3] [--corpus imagenet,camera] [--workers N]
                             [--repeats R] [--contenders gpupipe,pillow,pyvips,opencv]
                             [--out results.json]

Every (workload, corpus, repeat, contender) runs in its own fresh process at the same
worker count, writing to a fresh ``benchmarks/work/<contender>/`` (``scratch.py``).  By
default (``--clock process``) each is timed as a user runs it, as a whole process from the
start of its interpreter to its exit: gpupipe as ``gpupipe run --spec`` (journal and fsync
on), each peer as its script (``benchmarks/contenders.py``).  ``--clock in-run`` times each
child from just before it lists the input directory to just after the last output is
written instead (interpreter start-up and imports excluded; gpupipe through its API, which
``--gpupipe-kw`` can change).  This process samples the child's RSS (plus any
grandchildren) every ``--sample-ms`` (20) with psutil, and the child reports its own
kernel high-water mark (VmHWM); peak RSS is the larger of the two (see README.md for
why not ``ru_maxrss``).  Every output is then checked: present, decodable, right
format and size.  The median of R repeats is reported, the contender order reversed
on every other repeat.  See README.md for what each contender does and fairness notes.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import contenders as C  # noqa: E402  (stdlib-only at import time)
import make_corpus  # noqa: E402
from scratch import Scratch  # noqa: E402

WORK = HERE / "work"
DEFAULT_OUT = WORK / "results.json"


# ----------------------------------------------------------------- machine info

def machine_info() -> dict:
    import psutil

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    code = r"""
import json, sys
v = {}
def tryv(name, f):
    try: v[name] = f()
    except Exception as e: v[name] = "unavailable: %s" % type(e).__name__
import PIL, PIL.features as F
tryv("Pillow", lambda: PIL.__version__)
tryv("Pillow libjpeg-turbo", lambda: F.version("libjpeg_turbo"))
tryv("Pillow libwebp", lambda: F.version("webp"))
tryv("Pillow freetype2", lambda: F.version("freetype2"))
tryv("numpy", lambda: __import__("numpy").__version__)
tryv("opencv", lambda: __import__("cv2").__version__)
tryv("pyvips", lambda: __import__("pyvips").__version__)
tryv("libvips", lambda: "%d.%d.%d" % tuple(__import__("pyvips").version(i) for i in range(3)))
tryv("simplejpeg", lambda: __import__("simplejpeg").__version__)
tryv("psutil", lambda: __import__("psutil").__version__)
def gp():
    import gpupipe
    return getattr(gpupipe, "__version__", None) or __import__("importlib.metadata").metadata.version("gpupipe")
tryv("gpupipe", gp)
print(json.dumps(v))
"""
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env=_child_env()).stdout
        versions = json.loads(out.strip().splitlines()[-1])
    except Exception as e:  # noqa: BLE001
        versions = {"error": repr(e)}
    vm = psutil.virtual_memory()
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(vm.total / 2**30, 1),
        "python": sys.version.split()[0],
        "python_impl": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_at_start": list(os.getloadavg()),
    }


def _child_env() -> dict:
    env = os.environ.copy()
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # library thread pools are set explicitly per contender; keep BLAS-style pools from
    # oversubscribing the cores behind our back
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


# ----------------------------------------------------------------- corpus info

def corpus_info(path: Path) -> dict:
    from PIL import Image

    files = C.list_inputs(path)
    dims = {}
    for p in files:
        with Image.open(p) as im:
            w, h = im.size
            o = im.getexif().get(0x0112, 1)
        if o in (5, 6, 7, 8):
            w, h = h, w
        dims[p.stem] = (w, h)
    return {
        "name": path.name,
        "path": str(path),
        "files": [p.name for p in files],
        "dims": dims,
        "n": len(files),
        "megapixels": sum(w * h for w, h in dims.values()) / 1e6,
        "bytes": sum(p.stat().st_size for p in files),
    }


def warm_page_cache(path: Path) -> None:
    for p in sorted(path.iterdir()):
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(1 << 20):
                    pass


# ----------------------------------------------------------------- running one child

class ProcessTree:
    """RSS of a process and all its descendants (a local Ray cluster, pool workers).

    The children are re-listed at most every 0.2 s (a /proc walk), not at every sample."""

    def __init__(self, pid: int) -> None:
        import psutil
        self._error = psutil.Error
        self.root = psutil.Process(pid)
        self.tracked = {pid: self.root}
        self._last_scan = 0.0

    def rss(self) -> int:
        now = time.perf_counter()
        if now - self._last_scan >= 0.2:
            try:
                for c in self.root.children(recursive=True):
                    self.tracked.setdefault(c.pid, c)
            except self._error:
                pass
            self._last_scan = now
        total = 0
        for p in list(self.tracked.values()):
            try:
                total += p.memory_info().rss
            except self._error:
                self.tracked.pop(p.pid, None)
        return total

    def pss(self) -> int:
        """Proportional set size of the tree (Linux): pages shared between its processes (forked
        workers share their parent's) counted once, split between their sharers, where the sum
        of RSS counts them in every process. 0 where /proc/PID/smaps_rollup is not there."""
        total = 0
        for pid in list(self.tracked):
            try:
                with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
                    for line in rollup:
                        if line.startswith(b"Pss:"):
                            total += int(line.split()[1]) * 1024
                            break
            except (OSError, ValueError, IndexError):
                continue
        return total

    def kill(self) -> None:
        for p in list(self.tracked.values()):
            try:
                p.kill()
            except self._error:
                pass


def write_results(record: dict, work_file: Path, name: Path | None) -> list[Path]:
    """``record`` as JSON in ``work_file`` and, when asked, in benchmarks/results/NAME (or at a path)."""
    targets = [work_file]
    if name is not None:
        targets.append(name if name.parent != Path(".") else HERE / "results" / name)
    for t in targets:
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text(json.dumps(record, indent=1))
    print("results: " + ", ".join(str(t) for t in targets))
    return targets


def _run_sampled(cmd: list[str], log_path: Path, sample_s: float, timeout_s: float, on_sample=None,
                 stdout_path: Path | None = None) -> dict:
    """Run ``cmd``, sampling the RSS of its process tree until it exits; its whole lifetime, from
    the start of the interpreter to its exit, is ``lifetime_s``. Its stderr (and stdout, unless
    ``stdout_path`` takes it) goes to ``log_path``."""
    t_start = time.perf_counter()
    with open(log_path, "wb") as logf, open(stdout_path or os.devnull, "wb") as outf:
        # stdout to a file of its own where asked (a summary to read), else into the log with stderr
        proc = subprocess.Popen(cmd, env=_child_env(), cwd=str(REPO), stdout=outf if stdout_path else logf,
                                stderr=logf if stdout_path else subprocess.STDOUT)
        tree = ProcessTree(proc.pid)
        peak_sampled = 0
        samples = 0
        killed = False
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            total = tree.rss()
            peak_sampled = max(peak_sampled, total)
            samples += 1
            if on_sample is not None:
                on_sample(now - t_start, total)
            if not killed and timeout_s and now - t_start > timeout_s:
                tree.kill()
                killed = True
            time.sleep(sample_s)
        proc.returncode = os.waitstatus_to_exitcode(status)
    run = {"returncode": proc.returncode, "lifetime_s": time.perf_counter() - t_start,
           "rss_peak_sampled_mb": peak_sampled / 2**20, "rss_samples": samples,
           "cpu_s_total_incl_startup": ru.ru_utime + ru.ru_stime}
    if killed:
        run["timed_out"] = True
    return run


def run_child(cfg: dict, sample_s: float, timeout_s: float, log_path: Path, on_sample=None) -> dict:
    """Start one contender child (``contenders.py``), sample its RSS until it exits, return its report.

    ``on_sample(elapsed_s, rss_bytes)`` is called after every sample (memory.py uses it)."""
    result_file = Path(cfg["result_file"])
    result_file.unlink(missing_ok=True)
    run = _run_sampled([sys.executable, str(HERE / "contenders.py"), json.dumps(cfg)], log_path, sample_s,
                       timeout_s, on_sample)
    try:
        res = json.loads(result_file.read_text())
    except (OSError, ValueError):
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        res = {"error": f"child exited {run['returncode']} without a result"
                        + (" (timeout)" if run.get("timed_out") else ""), "log_tail": tail}
    # Not ru_maxrss: wait4()/RUSAGE_CHILDREN report a high-water mark that includes the
    # pre-exec copy of *this* process (Linux folds the old mm's peak in at exec), so every
    # contender would show at least the harness's own RSS.  The child's VmHWM is its own
    # exact peak (one process); the sampled sum covers process trees.
    res.update(run, rss_peak_mb=max(run["rss_peak_sampled_mb"], res.get("vm_hwm_mb") or 0.0))
    return res


def run_contender(cfg: dict, corpus: dict, a, log_path: Path) -> dict:
    """One timed run of ``cfg["contender"]``. With ``--clock process`` its ``wall_s`` is the whole
    process's lifetime (the child's own clock kept as ``in_run_wall_s``) and its megapixels the
    corpus's, for the inputs it processed."""
    sample_s = a.sample_ms / 1000
    if a.clock == "in-run":
        return run_child(cfg, sample_s, a.timeout, log_path)
    if cfg["contender"] == "gpupipe":
        res = run_gpupipe_cli(cfg, sample_s, a.timeout, log_path)
    else:
        res = run_child(cfg, sample_s, a.timeout, log_path)
        res["in_run_wall_s"] = res.get("wall_s")
    if not res.get("error"):
        res["in_run_cpu_s"] = res.get("cpu_s")
        res["wall_s"], res["cpu_s"] = res["lifetime_s"], res["cpu_s_total_incl_startup"]
        res["megapixels"] = corpus["megapixels"] * res["processed"] / corpus["n"]
    return res


def run_gpupipe_cli(cfg: dict, sample_s: float, timeout_s: float, log_path: Path) -> dict:
    """``gpupipe run`` on ``cfg``'s workload as a user runs it (the spec as a ``--spec`` file,
    journal and fsync on, ``--quiet``), the whole process timed; its summary read from
    ``--output-format json``."""
    spec = C.gpupipe_spec_file(cfg["workload"], WORK / ".child")
    cmd = [sys.executable, "-m", "gpupipe", "run", cfg["input_dir"], "-o", cfg["output_dir"], "--spec", str(spec),
           "--workers", str(cfg["workers"]), "--quiet", "--output-format", "json"]
    stdout = log_path.with_suffix(".summary.json")
    run = _run_sampled(cmd, log_path, sample_s, timeout_s, stdout_path=stdout)
    res = {"contender": "gpupipe", "workload": cfg["workload"], "workers": cfg["workers"], "pool": "gpupipe CLI"}
    try:
        summary = json.loads(stdout.read_text())["summary"]
    except (OSError, ValueError, KeyError):
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        res.update(run, error=f"gpupipe exited {run['returncode']} without a summary", log_tail=tail)
        return res
    res.update(run, processed=summary["processed"], failed=summary["failed"], rss_peak_mb=run["rss_peak_sampled_mb"],
               gpupipe={k: summary[k] for k in ("backend", "processed", "failed", "skipped", "discovered",
                                                 "outputs_written", "wall_seconds", "failures_by_class",
                                                 "failure_examples", "stop_reason", "cpu_seconds_by_stage")},
               errors=[m for msgs in summary["failure_examples"].values() for m in msgs][:5])
    return res


# ----------------------------------------------------------------- verification

def verify(out_dir: Path, corpus: dict, workload: str, threads: int) -> dict:
    from PIL import Image

    want_fmt = C.WORKLOADS[workload]["format"]
    outs: dict[str, Path] = {}
    for p in out_dir.rglob("*"):
        if p.is_file() and p.suffix.lower() in C.IMAGE_EXTS:
            outs.setdefault(p.stem, p)

    def expected(w: int, h: int) -> tuple[int, int]:
        if workload == "W1":
            return C.fit_size(w, h, C.THUMB_BOX, C.THUMB_BOX)
        if workload == "W2":
            return C.fit_size(w, h, C.WEB_BOX, C.WEB_BOX)
        return w, h

    def check(stem: str):
        p = outs.get(stem)
        if p is None:
            return stem, "missing", None
        try:
            with Image.open(p) as im:
                fmt = im.format
                im.load()
                size = im.size
        except Exception as e:  # noqa: BLE001
            return stem, f"undecodable: {type(e).__name__}: {e}", None
        if fmt != want_fmt:
            return stem, f"format {fmt} != {want_fmt}", size
        ew, eh = expected(*corpus["dims"][stem])
        if abs(size[0] - ew) > 1 or abs(size[1] - eh) > 1:
            return stem, f"size {size[0]}x{size[1]} != expected {ew}x{eh}", size
        return stem, "ok", size

    with ThreadPoolExecutor(max(1, threads)) as ex:
        checks = list(ex.map(check, corpus["dims"].keys()))
    problems = [f"{s}: {msg}" for s, msg, _ in checks if msg != "ok"]
    decoded = sum(1 for _, msg, _ in checks if msg == "ok" or msg.startswith(("format", "size")))
    return {
        "outputs_found": len(outs),
        "outputs_decoded": decoded,
        "outputs_ok": sum(1 for _, msg, _ in checks if msg == "ok"),
        "expected": corpus["n"],
        "problems": problems[:10],
        "n_problems": len(problems),
        "output_bytes": sum(p.stat().st_size for p in outs.values()),
    }


# ----------------------------------------------------------------- summary / printing

def summarise(runs: list[dict], corpus: dict) -> dict:
    good = [r for r in runs if not r.get("error") and r.get("wall_s")]
    if not good:
        return {"error": (runs[0].get("error") if runs else "no runs")}
    ips = [r["processed"] / r["wall_s"] for r in good]
    mps = [r["megapixels"] / r["wall_s"] for r in good]
    return {
        "repeats": len(good),
        "wall_s": statistics.median(r["wall_s"] for r in good),
        "images_per_s": statistics.median(ips),
        "mp_per_s": statistics.median(mps),
        "images_per_s_all": ips,
        "peak_rss_mb": statistics.median(r["rss_peak_mb"] for r in good),
        "peak_rss_mb_max": max(r["rss_peak_mb"] for r in good),
        "rss_start_mb": statistics.median(r.get("rss_start_mb", 0) for r in good),
        "cpu_per_wall": statistics.median(r["cpu_s"] / r["wall_s"] for r in good),
        "processed": min(r["processed"] for r in good),
        "failed": max(r["failed"] for r in good),
        "outputs_ok": min(r["verify"]["outputs_ok"] for r in good),
        "expected": corpus["n"],
        "spread_pct": (100 * (max(ips) - min(ips)) / statistics.median(ips))
        if len(ips) > 1 and statistics.median(ips) > 0 else 0.0,
        # valid: every repeat processed every input and every output checked out
        "valid": len(good) == len(runs) and all(
            r["failed"] == 0 and r["verify"]["outputs_ok"] == corpus["n"] for r in good),
    }


def ratios(summary: dict[str, dict], runs: dict[str, list[dict]]) -> dict:
    g = summary.get("gpupipe")
    if not g or "images_per_s" not in g:
        return {}
    if not g["valid"]:
        return {"invalid": "gpupipe did not produce every output correctly; no ratios"}
    peers = {k: v for k, v in summary.items() if k != "gpupipe" and v.get("valid")}
    out = {f"gpupipe/{k}": g["images_per_s"] / v["images_per_s"] for k, v in peers.items()}
    if peers:
        fastest = max(peers, key=lambda k: peers[k]["images_per_s"])
        out["fastest_peer"] = fastest
        out["gpupipe/fastest_peer"] = g["images_per_s"] / peers[fastest]["images_per_s"]
        # Each repeat runs every contender back to back: its own ratio (gpupipe against the
        # fastest peer of that repeat) moves less with this kind of VM's swings than the medians'.
        by_repeat = []
        for ours in runs["gpupipe"]:
            theirs = [r["processed"] / r["wall_s"] for k in peers for r in runs[k]
                      if r.get("repeat") == ours.get("repeat") and not r.get("error") and r.get("wall_s")]
            if theirs and not ours.get("error") and ours.get("wall_s"):
                by_repeat.append(ours["processed"] / ours["wall_s"] / max(theirs))
        if by_repeat:
            out["gpupipe/fastest_peer_by_repeat"] = by_repeat
            out["gpupipe/fastest_peer_paired"] = statistics.median(by_repeat)
    return out


def print_table(workload: str, corpus: dict, workers: int, repeats: int, summary: dict, rat: dict,
                skipped: dict) -> None:
    w = C.WORKLOADS[workload]["name"]
    print(f"\n== {workload} {w} | {corpus['name']}: {corpus['n']} images, {corpus['megapixels']:.1f} MP, "
          f"{corpus['bytes'] / 2**20:.1f} MiB | {workers} workers | median of {repeats} ==")
    print(f"{'contender':<20}{'images/s':>10}{'MP/s':>9}{'peak RSS MB':>13}{'CPU/wall':>10}{'spread':>8}  outputs")
    for name, s in summary.items():
        if "images_per_s" not in s:
            print(f"{name:<20}  FAILED: {s.get('error')}")
            continue
        status = "ok" if s["valid"] else "INVALID"
        print(f"{name:<20}{s['images_per_s']:>10.1f}{s['mp_per_s']:>9.1f}{s['peak_rss_mb']:>13.0f}"
              f"{s['cpu_per_wall']:>10.2f}{s['spread_pct']:>7.0f}%  {s['outputs_ok']}/{s['expected']} {status}")
    for name, why in skipped.items():
        print(f"{name:<20}  skipped: {why}")
    if rat.get("invalid"):
        print(f"gpupipe / peer: n/a ({rat['invalid']})")
    elif rat:
        parts = [f"{k.split('/')[1]} {v:.2f}x" for k, v in rat.items() if k.startswith("gpupipe/")
                 and not k.startswith("gpupipe/fastest_peer")]
        print("gpupipe / peer (images/s): " + ", ".join(parts) +
              f"; / fastest peer ({rat['fastest_peer']}) {rat['gpupipe/fastest_peer']:.2f}x")
        if "gpupipe/fastest_peer_paired" in rat:
            print("gpupipe / the fastest peer of each repeat: " +
                  ", ".join(f"{v:.2f}x" for v in rat["gpupipe/fastest_peer_by_repeat"]) +
                  f"; median {rat['gpupipe/fastest_peer_paired']:.2f}x")


def parse_kw(items: list[str]) -> dict:
    import ast

    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep:
            raise SystemExit(f"--gpupipe-kw {it!r}: expected KEY=VALUE")
        try:
            out[k.strip()] = ast.literal_eval(v.strip())
        except (ValueError, SyntaxError):
            out[k.strip()] = v.strip()
    return out


# ----------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="W1,W2,W3")
    ap.add_argument("--corpus", default="imagenet,camera",
                    help="comma list of imagenet, camera, camera1000, or paths to image directories")
    ap.add_argument("--workers", type=int, default=None, help="default: usable CPUs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--contenders", default="gpupipe,pillow,pyvips,opencv",
                    help=f"comma list of {', '.join(C.CONTENDERS)}")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    ap.add_argument("--imagenet-count", type=int, default=make_corpus.DEFAULT_IMAGENET_COUNT)
    ap.add_argument("--camera-count", type=int, default=None)
    ap.add_argument("--grain", type=float, default=0.0, help="camera corpus sensor-noise sigma (make_corpus)")
    ap.add_argument("--peer-pool", choices=("thread", "process"), default="thread",
                    help="peers' worker pool (default thread: all three libraries release the GIL)")
    ap.add_argument("--opencv-reduce-margin", type=float, default=2.0,
                    help="W1 OpenCV: use IMREAD_REDUCED_COLOR_k only while the reduced image stays >= "
                         "margin x the thumbnail (2 = the rule Pillow, libvips and gpupipe use)")
    ap.add_argument("--gpupipe-kw", action="append", default=[], metavar="KEY=VALUE",
                    help="extra gpupipe.run() keyword (Python literal value), e.g. fsync=False; repeatable")
    ap.add_argument("--clock", choices=("process", "in-run"), default="process",
                    help="process: every contender timed as a whole process, as a user runs it (gpupipe "
                         "through its CLI; start-up, imports and exit included); in-run: each child's own "
                         "clock, from listing its inputs to its last output (gpupipe through its API)")
    ap.add_argument("--sample-ms", type=float, default=20.0)
    ap.add_argument("--timeout", type=float, default=3600.0, help="per child, seconds")
    ap.add_argument("--cooldown", type=float, default=1.0, help="pause between runs, seconds")
    ap.add_argument("--no-warm", action="store_true", help="don't pre-read the corpus into the page cache")
    a = ap.parse_args(argv)

    workloads = [w.strip().upper() for w in a.workloads.split(",") if w.strip()]
    for w in workloads:
        if w not in C.WORKLOADS:
            ap.error(f"unknown workload {w}")
    contenders = [c.strip() for c in a.contenders.split(",") if c.strip()]
    for c in contenders:
        if c not in C.CONTENDERS:
            ap.error(f"unknown contender {c}")
    workers = a.workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())

    machine = machine_info()
    print(f"machine: {machine['cpu_model']} | {machine['usable_cpus']} usable CPUs | "
          f"Python {machine['python']} | load avg {machine['loadavg_at_start'][0]:.2f}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()))
    if machine["loadavg_at_start"][0] > 0.25 * machine["usable_cpus"]:
        print(f"WARNING: load average {machine['loadavg_at_start'][0]:.2f} — the machine is not quiet; "
              "numbers will be noisy")

    # corpora
    corpora = []
    counts = {"imagenet": a.imagenet_count, "camera": a.camera_count}
    for name in [c.strip() for c in a.corpus.split(",") if c.strip()]:
        if name in ("imagenet", "camera", "camera1000"):
            path = make_corpus.ensure_corpus(name, count=counts.get(name), grain=a.grain)
        else:
            path = Path(name)
            if not path.is_dir():
                ap.error(f"corpus {name}: not a directory")
        corpora.append(corpus_info(path))

    WORK.mkdir(parents=True, exist_ok=True)
    results_dir = WORK / ".child"
    results_dir.mkdir(exist_ok=True)

    skipped: dict[str, str] = {}
    if "gpupipe" in contenders:
        pr = run_child({"contender": "gpupipe", "workload": "W1", "input_dir": ".", "output_dir": ".",
                        "workers": workers, "probe": True, "result_file": str(results_dir / "probe.json")},
                       a.sample_ms / 1000, 120, results_dir / "probe.log")
        if pr.get("error") or pr.get("returncode"):
            why = f"gpupipe API not available: {pr.get('error') or pr.get('log_tail')}"
            print(why)
            skipped["gpupipe"] = why
            contenders = [c for c in contenders if c != "gpupipe"]
    if not contenders:
        print("nothing to run")
        return 1

    opts = {"opencv_reduce_margin": a.opencv_reduce_margin}
    gpupipe_kw = parse_kw(a.gpupipe_kw)
    if gpupipe_kw and a.clock == "process":
        ap.error("--gpupipe-kw sets gpupipe.run() keywords: it needs --clock in-run (gpupipe through its API)")
    out = {"machine": machine,
           "config": {"workloads": workloads, "corpora": [c["name"] for c in corpora], "workers": workers,
                      "repeats": a.repeats, "contenders": contenders, "skipped": skipped,
                      "peer_pool": a.peer_pool, "opencv_reduce_margin": a.opencv_reduce_margin,
                      "gpupipe_kw": gpupipe_kw,
                      "clock": a.clock, "sample_ms": a.sample_ms, "page_cache": "cold" if a.no_warm else "warm"},
           "results": []}

    scratch = Scratch(WORK)
    try:
        for workload in workloads:
            for corpus in corpora:
                if not a.no_warm:
                    warm_page_cache(Path(corpus["path"]))
                runs: dict[str, list] = {c: [] for c in contenders}
                for r in range(a.repeats):
                    order = contenders if r % 2 == 0 else contenders[::-1]
                    for c in order:
                        out_dir = scratch.fresh(WORK / c)    # nobody pays for deletions (scratch.py)
                        os.sync()  # nor for the previous contender's write-back
                        time.sleep(a.cooldown)
                        cfg = {"contender": c, "workload": workload, "input_dir": corpus["path"],
                               "output_dir": str(out_dir), "workers": workers, "pool": a.peer_pool,
                               "opts": opts, "gpupipe_kw": gpupipe_kw, "result_file": str(results_dir / f"{c}.json"),
                               "whole_process": a.clock == "process"}
                        load = os.getloadavg()[0]
                        res = run_contender(cfg, corpus, a, results_dir / f"{c}.log")
                        res["loadavg_before"] = load
                        res["repeat"] = r
                        if not res.get("error"):
                            res["verify"] = verify(out_dir, corpus, workload, workers)
                        runs[c].append(res)
                        if res.get("error"):
                            msg = f"  {workload}/{corpus['name']} r{r} {c}: ERROR {res['error']}"
                        else:
                            v = res["verify"]
                            msg = (f"  {workload}/{corpus['name']} r{r} {c:<18} {res['wall_s']:7.2f} s "
                                   f"{res['processed'] / res['wall_s']:8.1f} img/s  peak {res['rss_peak_mb']:6.0f} MB  "
                                   f"outputs {v['outputs_ok']}/{v['expected']}")
                            if res.get("failed"):
                                msg += f"  FAILED {res['failed']}: {res.get('errors')[:2]}"
                            if v["n_problems"]:
                                msg += f"  problems: {v['problems'][:3]}"
                        print(msg, flush=True)
                summary = {c: summarise(runs[c], corpus) for c in contenders}
                rat = ratios(summary, runs)
                print_table(workload, corpus, workers, a.repeats, summary, rat, skipped)
                out["results"].append({
                    "workload": workload, "workload_name": C.WORKLOADS[workload]["name"],
                    "corpus": {k: v for k, v in corpus.items() if k not in ("dims", "files")},
                    "summary": summary, "ratios": rat, "runs": runs,
                })
                a.out.parent.mkdir(parents=True, exist_ok=True)
                a.out.write_text(json.dumps(out, indent=1))  # after every table: partial results survive
    finally:
        scratch.empty()   # with an interrupted run's leftovers
    out["machine"]["loadavg_at_end"] = list(os.getloadavg())
    a.out.write_text(json.dumps(out, indent=1))
    print(f"\nresults: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
