"""Journal at scale: how fast a journal of a million inputs answers "what is left to do".

    python benchmarks/journal_scale.py [--rows 1000000] [--failed 0.01] [--repeats 5]
                                       [--sample 2000] [--reuse] [--json NAME.json]

Builds ``benchmarks/work/journal-scale/journal.sqlite`` (git-ignored) with ``--rows`` inputs
through the journal's own code: ``Journal(path, spec_hash)`` creates the schema (tables and
indexes as gpupipe makes them) and every row goes in through ``Journal.record(FileOutcome)``,
exactly as the engine records a finished input. The only change is the commit batch: the
module's ``COMMIT_EVERY`` / ``COMMIT_SECONDS`` are raised while building so a million
records commit in a few big transactions instead of ~4000 small ones (same statements,
same schema; restored afterwards). Inputs are recorded in path order, as a scan of
sorted directories finishes them. ``--failed`` of them (default 1 %) are failures spread
over seven error classes; every other input has one output.

Then it times, as medians of ``--repeats``:

1. the "what is left" report: ``gpupipe.journal.report()`` -- what ``gpupipe report`` runs
   (counts by state, failures by error class with the first examples, output count and
   bytes, last runs) -- as one call, and each SQL statement it issues on its own (captured
   with ``sqlite3``'s trace callback, so they are always report()'s current queries) with
   its ``EXPLAIN QUERY PLAN``; also ``python -m gpupipe report --json`` end to end against
   ``python -m gpupipe report --help`` (the CLI's start-up alone);
2. ``Journal.decide(path, size, mtime)`` -- what a re-run asks for every input it finds --
   per call, for ``--sample`` done inputs (their outputs exist: the sample's outputs are
   real empty files), failed inputs and new inputs, on a second ``Journal`` opened on the
   file as a re-run would; and the extrapolated cost of deciding every input of a re-run;
3. the size of the journal file (and bytes per input).

``--reuse`` skips the build when the file already holds ``--rows`` inputs.
The record goes to benchmarks/work/journal-scale/results.json and, with ``--json NAME``,
to benchmarks/results/NAME (a path with a directory is used as given).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import gpupipe
import gpupipe.journal as J
import run as R  # noqa: E402  (the harness: result writing)
from gpupipe.engine.results import FAILED, OK, FileOutcome

WORK = HERE / "work" / "journal-scale"
SPEC_HASH = "journal-scale-01"
SEED = 20240601
ERROR_CLASSES = {"corrupt": "JPEG data is invalid: bad Huffman table",
                 "truncated": "image data ends early (file is 41 % of its declared size)",
                 "not_an_image": "bytes match no image format we know",
                 "empty": "the file is empty (0 bytes)",
                 "unsupported": "HEIF images are not supported by this build",
                 "too_large": "declares 200000000 pixels, above --max-pixels 178956970",
                 "unreadable": "[Errno 13] Permission denied"}


def input_path(i: int) -> str:
    return f"/data/photos/batch{i // 10000:03d}/roll{i // 1000 % 10}/IMG_{i:07d}.jpg"


def output_path(out_root: Path, i: int) -> str:
    return f"{out_root}/batch{i // 10000:03d}/roll{i // 1000 % 10}/IMG_{i:07d}.jpg"


def input_stat(i: int) -> tuple[int, float]:
    return 2_000_000 + (i * 7919) % 4_000_000, 1_700_000_000.0 + i * 0.25


def failed_rows(n: int, fraction: float) -> set[int]:
    rng = random.Random(f"{SEED}:failed")
    return set(rng.sample(range(n), round(n * fraction)))


# ----------------------------------------------------------------- build

def build(path: Path, n: int, failed: set[int], out_root: Path) -> dict:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    classes = list(ERROR_CLASSES)
    saved = J.COMMIT_EVERY, J.COMMIT_SECONDS
    J.COMMIT_EVERY, J.COMMIT_SECONDS = 100_000, 1e9
    t0 = time.perf_counter()
    journal = J.Journal(path, SPEC_HASH)
    try:
        for i in range(n):
            size, mtime = input_stat(i)
            if i in failed:
                cls = classes[i % len(classes)]
                outcome = FileOutcome(path=input_path(i), status=FAILED, error_class=cls, message=ERROR_CLASSES[cls],
                                      size=size, mtime=mtime)
            else:
                outcome = FileOutcome(path=input_path(i), status=OK, outputs=[output_path(out_root, i)],
                                      size=size, mtime=mtime, output_sizes=[8_000 + i % 20_000],
                                      output_checksums=[f"{i * 2654435761 % 2**64:016x}" * 4])
            journal.record(outcome)
            if i and i % 200_000 == 0:
                print(f"  {i} recorded ({i / (time.perf_counter() - t0):.0f}/s)", flush=True)
        journal.close({"processed": n - len(failed), "failed": len(failed), "skipped": 0})
    finally:
        J.COMMIT_EVERY, J.COMMIT_SECONDS = saved
    seconds = time.perf_counter() - t0
    return {"rows": n, "seconds": seconds, "records_per_s": n / seconds,
            "commit_every_while_building": 100_000}


def rows_in(path: Path) -> int:
    if not path.exists():
        return -1
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM inputs").fetchone()[0]
    except sqlite3.Error:
        return -1
    finally:
        db.close()


def file_sizes(path: Path) -> dict:
    sizes = {s or "main": os.path.getsize(str(path) + s) for s in ("", "-wal", "-shm")
             if os.path.exists(str(path) + s)}
    return {f"{k}_bytes": v for k, v in sizes.items()}


# ----------------------------------------------------------------- timing helpers

def timed(fn, repeats: int) -> tuple[float, list[float]]:
    """Seconds of a first call, and of ``repeats`` calls after it (for the median)."""
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times[0], times[1:]


def timed_n(fn, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls."""
    return [timed(fn, 0)[0] for _ in range(repeats)]


def report_statements(path: Path) -> list[str]:
    """The SQL statements report() issues, with their parameters, in order (via a trace callback)."""
    seen: list[str] = []
    real_connect = sqlite3.connect

    def connect(*args, **kw):
        db = real_connect(*args, **kw)
        db.set_trace_callback(seen.append)
        return db

    sqlite3.connect = connect
    try:
        J.report(path)
    finally:
        sqlite3.connect = real_connect
    return seen


def time_statement(path: Path, sql: str, repeats: int) -> dict:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        plan = "; ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql))
        first, rest = timed(lambda: db.execute(sql).fetchall(), repeats)
        rows = len(db.execute(sql).fetchall())
    finally:
        db.close()
    return {"sql": sql, "plan": plan, "rows": rows, "first_s": first, "median_s": statistics.median(rest)}


def time_decide(journal: J.Journal, sample: list[tuple[str, int, float]], repeats: int, expect_skip: bool,
                outputs: list[str] | None = None) -> dict:
    """Per-call µs of decide() over the sample: the first pass (fresh SQLite cache) and the median of the rest."""
    decisions = []

    def first_pass():
        decisions.extend(journal.decide(p, s, m) for p, s, m in sample)

    def one_pass():
        for p, s, m in sample:
            journal.decide(p, s, m)

    first, _ = timed(first_pass, 0)
    rest = timed_n(one_pass, repeats)
    res = {"calls": len(sample), "first_pass_us": first / len(sample) * 1e6,
           "median_us": statistics.median(rest) / len(sample) * 1e6,
           "unexpected_decisions": sum(1 for d in decisions if d.skip != expect_skip),
           "reason": decisions[0].reason if decisions else None}
    if outputs:                                   # the part that is not SQLite: decide() stats each output
        ex = timed_n(lambda: [os.path.exists(o) for o in outputs], repeats)
        res["of_which_output_exists_us"] = statistics.median(ex) / len(sample) * 1e6
    return res


def time_cli(args: list[str], repeats: int) -> float:
    env = os.environ.copy()
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "gpupipe", *args], capture_output=True, env=env, cwd=str(REPO),
                           check=False)
        times.append(time.perf_counter() - t)
        if p.returncode != 0:
            raise SystemExit(f"gpupipe {' '.join(args)} failed ({p.returncode}): {p.stderr.decode()[-500:]}")
    return statistics.median(times)


# ----------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="inputs in the journal (default 1000000)")
    ap.add_argument("--failed", type=float, default=0.01, help="fraction of failed inputs (default 0.01)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats after a first, untimed-for-median call")
    ap.add_argument("--sample", type=int, default=2000, help="paths per decide() pass")
    ap.add_argument("--cli-repeats", type=int, default=3, help="runs of `python -m gpupipe report` (0: skip)")
    ap.add_argument("--reuse", action="store_true", help="keep an existing journal of --rows inputs")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT",
                    help="also write the results here (a bare name goes to benchmarks/results/)")
    a = ap.parse_args(argv)
    n = a.rows
    WORK.mkdir(parents=True, exist_ok=True)
    path, out_root = WORK / "journal.sqlite", WORK / "out"
    failed = failed_rows(n, a.failed)

    if a.reuse and rows_in(path) == n:
        print(f"reusing {path} ({n} inputs)")
        built = {"reused": True}
    else:
        print(f"building {path}: {n} inputs ({len(failed)} failed) through Journal.record() ...", flush=True)
        built = build(path, n, failed, out_root)
        print(f"built in {built['seconds']:.1f} s ({built['records_per_s']:.0f} records/s)")
    sizes = file_sizes(path)

    # decide() samples: done inputs (their outputs made real), failed inputs, new inputs
    rng = random.Random(f"{SEED}:sample")
    ok_rows = [i for i in rng.sample(range(n), min(n, a.sample + len(failed))) if i not in failed][:a.sample]
    failed_sample = rng.sample(sorted(failed), min(a.sample, len(failed)))
    start = rng.randrange(max(1, n - 2 * a.sample))
    scan_rows = [i for i in range(start, min(n, start + 2 * a.sample)) if i not in failed][:a.sample]
    for i in ok_rows + scan_rows:
        p = Path(output_path(out_root, i))
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()

    def sample(rows):
        return [(input_path(i), *input_stat(i)) for i in rows]

    # 1. the report
    first, rest = timed(lambda: J.report(path), a.repeats)
    rep = J.report(path)
    report_res = {"first_s": first, "median_s": statistics.median(rest), "all_s": rest,
                  "inputs": rep["inputs"], "failure_classes": len(rep["failures"]), "outputs": rep["outputs"]}
    statements = [time_statement(path, sql, a.repeats) for sql in report_statements(path)]
    cli = {}
    if a.cli_repeats:
        cli["report_json_s"] = time_cli(["report", str(WORK), "--journal", str(path), "--json"], a.cli_repeats)
        cli["report_help_s"] = time_cli(["report", "--help"], a.cli_repeats)

    # 2. decide(), on a second Journal as a re-run opens it
    journal = J.Journal(path, SPEC_HASH)
    try:
        decide = {"done, random order": time_decide(journal, sample(ok_rows), a.repeats, True,
                                                    [output_path(out_root, i) for i in ok_rows]),
                  "done, in path order": time_decide(journal, sample(scan_rows), a.repeats, True,
                                                     [output_path(out_root, i) for i in scan_rows]),
                  "failed, random order": time_decide(journal, sample(failed_sample), a.repeats, True),
                  "new": time_decide(journal, sample(range(n + 1, n + 1 + a.sample)), a.repeats, False)}
    finally:
        journal.close()
    # a re-run scans directories in order: "done, in path order" is the realistic figure for the done inputs
    rescan_s = (decide["done, in path order"]["median_us"] * (n - len(failed))
                + decide["failed, random order"]["median_us"] * len(failed)) * 1e-6

    # 3. print
    print(f"\n== journal of {n} inputs ({len(failed)} failed, {rep['outputs']} outputs) | SQLite "
          f"{sqlite3.sqlite_version} | median of {a.repeats} ==")
    mb = sizes["main_bytes"] / 1e6
    print(f"file: {mb:.1f} MB ({sizes['main_bytes'] / n:.0f} bytes per input)"
          + (f", WAL {sizes['-wal_bytes'] / 1e6:.1f} MB" if "-wal_bytes" in sizes else ""))
    print(f"{'what':<58}{'median':>12}{'first':>12}   (decide: per call)")
    print(f"{'report() -- what `gpupipe report` computes':<58}{report_res['median_s'] * 1e3:>9.1f} ms"
          f"{report_res['first_s'] * 1e3:>9.1f} ms")
    groups: dict[str, list[dict]] = {}          # one line per query; the per-class example query repeats
    for s in statements:
        groups.setdefault(re.sub(r"'[^']*'|\b\d+\b", "?", s["sql"]), []).append(s)
    for key, group in groups.items():
        short = " ".join(key.split())
        times = f" x{len(group)}" if len(group) > 1 else ""
        short = short if len(short) + len(times) <= 54 else short[:51 - len(times)] + "..."
        print(f"  {short + times:<56}{sum(s['median_s'] for s in group) * 1e3:>9.1f} ms"
              f"{sum(s['first_s'] for s in group) * 1e3:>9.1f} ms")
        print(f"      plan: {group[0]['plan']}")
    if cli:
        print(f"{'python -m gpupipe report --json (process, end to end)':<58}{cli['report_json_s'] * 1e3:>9.0f} ms")
        print(f"{'python -m gpupipe report --help (start-up alone)':<58}{cli['report_help_s'] * 1e3:>9.0f} ms")
    for kind, d in decide.items():
        label = f"decide(), {kind} ({d['calls']} calls)"
        print(f"{label:<58}{d['median_us']:>9.1f} us{d['first_pass_us']:>9.1f} us"
              + (f"  UNEXPECTED: {d['unexpected_decisions']}" if d["unexpected_decisions"] else ""))
        if "of_which_output_exists_us" in d:
            print(f"      of which os.path.exists() of the output: {d['of_which_output_exists_us']:.1f} us")
    print(f"a re-run deciding all {n} inputs in path order: ~{rescan_s:.1f} s in decide() "
          "(done in path order and failed medians x their counts)")
    slow = [s for s in statements if s["median_s"] >= 0.5] + ([report_res] if report_res["median_s"] >= 0.5 else [])
    print("VERDICT report well under a second (< 0.5 s): " + ("FAIL" if slow else "PASS"))

    record = {
        "benchmark": "journal_scale",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
                    "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version,
                    "gpupipe": getattr(gpupipe, "__version__", None), "loadavg": list(os.getloadavg())},
        "config": {"rows": n, "failed_fraction": a.failed, "repeats": a.repeats, "sample": a.sample,
                   "fill": "Journal.record() with COMMIT_EVERY raised to 100000 while building"},
        "build": built, "file": sizes, "report": report_res, "report_statements": statements, "cli": cli,
        "decide": decide, "rescan_decide_s": rescan_s,
    }
    R.write_results(record, WORK / "results.json", a.json)
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
