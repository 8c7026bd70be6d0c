"""Instructions, not seconds: what a run's start and each tiny input cost, counted by valgrind.

    python benchmarks/instructions.py --count 1000 --json instructions-DATE.json

Wall time on a shared VM moves 10-30 % between runs; the instructions a process executes do not
(valgrind's callgrind counts them, with PYTHONHASHSEED fixed). Each contender does the work of
tiny_files.py (thumbnail 256, JPEG q85) over N and then 2N of its tiny JPEGs, with one worker
process, under callgrind; reported per contender, in millions of instructions:

- ``per_input_worker``, ``per_input_own``: (the 2N run − the N run) ÷ N, in its worker and in the
  run's own process (gpupipe's: scan, admission, journal decisions, counts);
- ``start_own``: the run's own process less N inputs' worth of its per-input cost: the
  interpreter, the imports, the command line and the run's setup, up to the fork.

Contenders: gpupipe's command line (journal and fsync on, as a user runs it), and tiny_files.py's
Pillow pool and stack floor (simplejpeg and a linked temporary in a plain pool). Counts are not
time (a system call or a cache miss costs more than its count), so read them next to
tiny_files.py's timings: they say exactly how much work a change to gpupipe's own code removed.
Needs valgrind; takes about a minute for N = 1000.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_files  # noqa: E402  (its corpus and its two plain contenders)

ROOT = tiny_files.ROOT


def commands(src: Path, out: Path) -> dict[str, list[str]]:
    scripts = {}
    for name, source in (("pillow pool", tiny_files.POOL), ("stack floor", tiny_files.FLOOR)):
        script = out.parent / f"{name.replace(' ', '_')}.py"
        script.write_text(source)
        scripts[name] = [sys.executable, str(script), str(src), str(out), "1"]
    return {"gpupipe": [sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(out), "--thumbnail", "256",
                        "-f", "jpeg", "-q", "85", "-j", "1", "--backend", "cpu", "--quiet"], **scripts}


def counted(command: list[str], work: Path) -> tuple[int, int]:
    """(the run's own process, its worker): instructions each executed. A forked worker's count
    starts from its parent's at the fork, which the difference between two runs cancels."""
    traces = Path(tempfile.mkdtemp(dir=work))
    env = {**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={traces}/cg.%p", *command],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed under valgrind:\n{done.stderr[-3000:]}")
    totals = {}
    for trace in traces.iterdir():
        found = re.search(r"^summary: (\d+)", trace.read_text(errors="replace"), re.M)
        totals[int(trace.name.split(".")[1])] = int(found[1])
    shutil.rmtree(traces)
    if len(totals) != 2:
        raise SystemExit(f"{command[:4]}: expected the run's process and one worker, found {len(totals)} processes")
    own, worker = (totals[pid] for pid in sorted(totals))      # the worker was forked after its parent started
    return own, worker


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="N: the runs take N and 2N inputs")
    parser.add_argument("--json", help="write the results here (benchmarks/results/ if a bare name)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    corpus = tiny_files.make_corpus(2 * args.count)
    import compileall
    compileall.compile_dir(ROOT / "gpupipe", quiet=1)          # as pip install leaves them

    work = Path(tempfile.mkdtemp(prefix="gpupipe-instructions-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        names = sorted(p.name for p in corpus.glob("*.jpg"))
        inputs = {}
        for size in (args.count, 2 * args.count):
            inputs[size] = work / f"in{size}"
            inputs[size].mkdir()
            for name in names[:size]:
                shutil.copyfile(corpus / name, inputs[size] / name)
        results = {}
        for contender in ("gpupipe", "pillow pool", "stack floor"):
            runs = {}
            for size in (args.count, 2 * args.count):
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                runs[size] = counted(commands(inputs[size], out)[contender], work)
            (own_n, worker_n), (own_2n, worker_2n) = runs[args.count], runs[2 * args.count]
            per_own, per_worker = (own_2n - own_n) / args.count, (worker_2n - worker_n) / args.count
            results[contender] = {"start_own_M": round((own_n - args.count * per_own) / 1e6, 1),
                                  "per_input_own_M": round(per_own / 1e6, 4),
                                  "per_input_worker_M": round(per_worker / 1e6, 4)}
            print(f"{contender:12s} start {results[contender]['start_own_M']:7.1f} M   per input: own process "
                  f"{per_own / 1e3:6.1f} k, worker {per_worker / 1e3:6.1f} k instructions", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        path = Path(args.json) if os.sep in args.json else ROOT / "benchmarks" / "results" / args.json
        valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
        path.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.node(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "valgrind": valgrind, "git": _commit(), "count": args.count,
            "command": f"benchmarks/instructions.py --count {args.count}", "results": results}, indent=1) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
