"""A chunk's fsync round: what making a chunk's outputs durable costs per file, with the chunk's
write-back of its filesystem (``writer.ChunkWrites``: one ``syncfs``, then each file's fsync) and
without it (each file fsynced alone), both forced at every chunk size: the figures behind
``WRITE_BACK_FROM``, the least a chunk writes back.

    python benchmarks/fsync_round.py --folder benchmarks/work --files 256,16,1 --json fsync-round-<host>-DATE.json

Each round stages ``--files`` outputs of ``--size`` bytes in a fresh folder below ``--folder``
through gpupipe's own ``ChunkWrites`` and times its ``finish`` (sync, place, sync the folder);
``os.sync`` runs between rounds so each starts with nothing unwritten. Medians of ``--repeats``.
Point ``--folder`` at the disk to measure: on a tmpfs there is nothing to write back.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gpupipe.engine import writer


def one_round(folder: str, files: int, size: int, write_back: bool) -> float:
    """Seconds per file of one chunk's finish."""
    root = tempfile.mkdtemp(dir=folder, prefix="fsync-round-")
    try:
        os.sync()
        chunk = writer.ChunkWrites(root, fsync=True)
        for i in range(files):
            chunk.stage(i, f"{i}.bin", os.urandom(size), replace=False)
        least = writer.WRITE_BACK_FROM
        writer.WRITE_BACK_FROM = 1 if write_back else sys.maxsize     # forced either way, whatever the chunk's size
        try:
            started = time.perf_counter()
            assert chunk.finish() == {}
            took = time.perf_counter() - started
        finally:
            writer.WRITE_BACK_FROM = least
        if write_back:
            assert chunk.written_back, "not written back: the machine holds much unwritten, or no syncfs"
        return took / files
    finally:
        shutil.rmtree(root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="benchmarks/work")
    parser.add_argument("--files", default="256,16,1", help="files in a chunk, comma-separated")
    parser.add_argument("--size", type=int, default=10_000, help="bytes a file")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="results file name in benchmarks/results/ (or a path)")
    args = parser.parse_args()
    writer.allow_writes()
    Path(args.folder).mkdir(parents=True, exist_ok=True)
    results = {}
    for files in (int(n) for n in args.files.split(",")):
        row = {}
        for write_back in (False, True):
            times = [one_round(args.folder, files, args.size, write_back) for _ in range(args.repeats)]
            row["write_back" if write_back else "fsync_each"] = {"ms_per_file": 1e3 * statistics.median(times),
                                                                 "all_ms": [round(1e3 * t, 4) for t in times]}
        results[str(files)] = row
        print(f"{files:5d} files of {args.size} bytes: fsync each {row['fsync_each']['ms_per_file']:.3f} ms a file, "
              f"written back first {row['write_back']['ms_per_file']:.3f}")
    if args.json:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results_file import write_result
        print("results:", write_result(args.json, "fsync_round", config=vars(args), results=results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
