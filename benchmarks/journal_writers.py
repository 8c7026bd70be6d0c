"""Journal writers: how many inputs a second one journal records while N worker processes commit
their chunks to it at once, as the local engine's workers do.

    python benchmarks/journal_writers.py --writers 1,2,8,32 --json journal-writers-<host>-DATE.json

Each writer is a process with its own ``journal.ChunkRecorder`` (what a worker gets), committing
chunks of 256 finished inputs (each with one output) in one transaction each, ``--inputs`` in all
between the writers, into a journal on ``--folder`` (default /dev/shm, so the disk does not set
the pace). Reported per writer count: inputs recorded a second, and a commit's median and worst
wait (from asking to record a chunk to its commit). ``--no-turns`` makes the writers skip
``CommitTurns`` and leaves them to SQLite's own busy waits, as before it existed.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gpupipe import journal  # noqa: E402
from gpupipe.engine.results import FileOutcome  # noqa: E402

CHUNK = 256


def _writer(path: str, index: int, chunks: int, turns: bool, results) -> None:
    rec = journal.ChunkRecorder(Path(path), "bench", forget_earlier=False, reserve=Path(path + ".reserve"))
    if not turns:
        rec.turns.taken = contextlib.nullcontext
    waits = []
    started = time.perf_counter()
    for chunk in range(chunks):
        outcomes = [FileOutcome(path=f"/in/w{index}/c{chunk}/f{i:04d}.jpg", status="ok", relative=f"f{i:04d}.jpg",
                                bytes_in=1465, size=1465, mtime=1.7e9, outputs=[f"/out/w{index}/c{chunk}/f{i:04d}.jpg"],
                                output_sizes=[2000], output_checksums=["0" * 32]) for i in range(CHUNK)]
        asked = time.perf_counter()
        rec.record(outcomes)
        waits.append(time.perf_counter() - asked)
    results.put((time.perf_counter() - started, waits))


def run(writers: int, inputs: int, folder: str, turns: bool) -> dict:
    work = Path(tempfile.mkdtemp(dir=folder, prefix="gpupipe-journal-writers-"))
    try:
        path = work / "journal.sqlite"
        journal.Journal(path, "bench").close()          # the schema, as a run makes it
        chunks = max(1, inputs // CHUNK // writers)
        fork = multiprocessing.get_context("fork")
        results = fork.Queue()
        processes = [fork.Process(target=_writer, args=(str(path), w, chunks, turns, results)) for w in range(writers)]
        started = time.perf_counter()
        for p in processes:
            p.start()
        done = [results.get() for _ in processes]
        for p in processes:
            p.join()
        wall = time.perf_counter() - started
        waits = [w for _, ws in done for w in ws]
        return {"writers": writers, "inputs": writers * chunks * CHUNK, "wall_s": round(wall, 3),
                "inputs_per_s": round(writers * chunks * CHUNK / wall), "commit_wait_median_ms": round(1e3 * statistics.median(waits), 2),
                "commit_wait_worst_ms": round(1e3 * max(waits), 2)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", default="1,2,8,32")
    parser.add_argument("--inputs", type=int, default=16384, help="inputs recorded in all, per writer count")
    parser.add_argument("--folder", default="/dev/shm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-turns", action="store_true", help="writers wait as SQLite makes them (no CommitTurns)")
    parser.add_argument("--json", help="write the results here (benchmarks/results/ if a bare name)")
    args = parser.parse_args()
    rows = []
    for writers in (int(w) for w in args.writers.split(",")):
        runs = [run(writers, args.inputs, args.folder, not args.no_turns) for _ in range(args.repeats)]
        median = sorted(runs, key=lambda r: r["inputs_per_s"])[len(runs) // 2]
        rows.append({**median, "runs": runs})
        print(f"{writers:3d} writers: {median['inputs_per_s']:8d} inputs/s recorded; a commit's wait: median "
              f"{median['commit_wait_median_ms']:.1f} ms, worst {median['commit_wait_worst_ms']:.1f} ms")
    if args.json:
        from results_file import write_result
        print("results:", write_result(args.json, "journal writers", config=vars(args), results=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
