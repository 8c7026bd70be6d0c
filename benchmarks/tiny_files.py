"""Tiny files: gpupipe's own cost per input, against a plain multiprocessing Pillow pool.

    python benchmarks/tiny_files.py --count 5000 --workers 2 --repeats 3 --json tiny-DATE.json

Inputs: ``--count`` JPEGs of 32×48 (made once in benchmarks/corpora/tinyN from a seeded
pattern; their content does not matter at this size). Each contender is one whole process,
timed from its start to its exit as a user runs it, outputs on a tmpfs (/dev/shm):

- gpupipe: ``gpupipe run IN -o OUT --thumbnail 256 -f jpeg -q 85 -j N`` (journal on,
  fsync on: everything a user gets).
- pillow pool: ``multiprocessing.Pool(N)`` over the files: read, ``Image.open``,
  ``thumbnail((256, 256))``, save JPEG q85 (the same libjpeg-turbo), no fsync, no journal.
- stack floor: the same pool with gpupipe's own codecs (simplejpeg, which loads NumPy) and its
  way of writing (a temporary, linked to its final name), no fsync, no journal, no checks: what
  gpupipe's stack costs before any of gpupipe's own Python.

They alternate, ``--repeats`` times each; reported are medians of wall time, files/s, the ratio
gpupipe ÷ pool (of the medians, and the median of each repeat's own ratio: the contenders of a
repeat run back to back, which this noisy VM favours) and the whole process tree's CPU per file
(user+sys of the process and its children), and where a run's wall time goes: when its first
output appeared (``first_output_s``, from the process's start) and its pace from the first output
to the last (``files_per_s_after_first``), read from the outputs' modification times once the run is
over (the kernel stamps them from a coarse clock, a few ms, when their bytes are written: gpupipe
links its temporaries to their final names at a chunk's end, which leaves the time alone). gpupipe's coordinator CPU per file (the run's own process: scan, admission,
journal, summary — ``cpu_seconds_by_stage``) comes from extra runs through the Python API, made
as the CLI makes its runs (``keep_outcomes=False``), as the CLI's timed runs write no report: over
all the files and over half of them, so that the difference is the cost of an input, without the
run's start (its imports and workers). gpupipe's modules are byte-compiled first, as ``pip
install`` leaves them (see startup.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Both plain contenders: every input through ``one(job)`` (their own), in N processes.
POOL_RUN = textwrap.dedent("""
    import os, sys
    from multiprocessing import Pool

    if __name__ == "__main__":
        src, dst, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
        jobs = []
        for folder, _, names in os.walk(src):
            out = os.path.join(dst, os.path.relpath(folder, src))
            os.makedirs(out, exist_ok=True)
            jobs += [(os.path.join(folder, n), os.path.join(out, n)) for n in names if n.endswith(".jpg")]
        with Pool(workers) as pool:
            for _ in pool.imap_unordered(one, jobs, chunksize=64):
                pass
""")

POOL = textwrap.dedent("""
    import io
    from PIL import Image

    def one(job):
        src, dst = job
        with open(src, "rb") as f:
            data = f.read()
        image = Image.open(io.BytesIO(data))
        image.thumbnail((256, 256), Image.Resampling.LANCZOS)
        image.save(dst, "JPEG", quality=85)
""") + POOL_RUN

FLOOR = textwrap.dedent("""
    import os
    import simplejpeg

    def one(job):
        src, dst = job
        fd = os.open(src, os.O_RDONLY)
        data = os.read(fd, os.fstat(fd).st_size)
        os.close(fd)
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB")
        encoded = simplejpeg.encode_jpeg(pixels, quality=85, colorspace="RGB", colorsubsampling="420")
        tmp = dst + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, encoded)
        os.close(fd)
        os.link(tmp, dst)
        os.unlink(tmp)
""") + POOL_RUN


# gpupipe's own process's CPU (not its workers'), from the summary of a run through the API, made
# as the CLI makes its runs: no list of outcomes kept (the inputs that went well come back as counts).
API_RUN = textwrap.dedent("""
    import json, sys
    import gpupipe
    src, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    result = gpupipe.run(src, out, gpupipe.Spec.single([gpupipe.ops.Thumbnail(256)], format="jpeg", quality=85),
                         backend="cpu", workers=workers, keep_outcomes=False)
    cpu = result.summary.cpu_seconds_by_stage
    own = cpu["scan"] + cpu["coordinate"] if "coordinate" in cpu else cpu["collect"] + cpu.get("scan", 0)
    print(json.dumps({"coordinator_s": own, "cpu_seconds_by_stage": cpu}))
""")


def make_corpus(count: int) -> Path:
    folder = HERE / "corpora" / f"tiny{count}"
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    import numpy as np
    from PIL import Image
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    base = np.linspace(0, 255, 32 * 48 * 3).reshape(32, 48, 3)
    for i in range(count):
        pixels = np.clip(base + rng.normal(0, 24, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"tiny{i:06d}.jpg", quality=90)
    return folder


def timed(command: list[str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started_at = time.time()                     # the outputs' mtimes are on this clock
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "stdout": done.stdout, "started_at": started_at}


def pace(out: Path, started_at: float, count: int) -> dict:
    """When the first output appeared, and the files per second from it to the last."""
    stamps = sorted(p.stat().st_mtime for p in out.rglob("*.jpg"))
    if len(stamps) != count:
        raise SystemExit(f"{out} holds {len(stamps)} outputs of {count}")
    first, last = stamps[0] - started_at, stamps[-1] - started_at
    return {"first_output_s": first, "files_per_s_after_first": (count - 1) / max(last - first, 1e-6)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results here (benchmarks/results/ if a bare name)")
    parser.add_argument("--gpupipe-args", default="", help="extra arguments for gpupipe run")
    args = parser.parse_args()

    corpus = make_corpus(args.count)
    import compileall
    compileall.compile_dir(str(ROOT / "gpupipe"), quiet=1)
    scratch = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None, prefix="tiny-"))
    scripts = {"pillow pool": scratch / "pool.py", "stack floor": scratch / "floor.py"}
    scripts["pillow pool"].write_text(POOL)
    scripts["stack floor"].write_text(FLOOR)
    runs: dict[str, list[dict]] = {"gpupipe": [], "pillow pool": [], "stack floor": []}
    try:
        for repeat in range(args.repeats):
            for name in runs:
                out = scratch / f"out-{name.replace(' ', '-')}"
                shutil.rmtree(out, ignore_errors=True)
                if name == "gpupipe":
                    command = [sys.executable, "-m", "gpupipe", "run", str(corpus), "-o", str(out), "--thumbnail",
                               "256", "-f", "jpeg", "-q", "85", "-j", str(args.workers), "--backend", "cpu",
                               "--quiet", *args.gpupipe_args.split()]
                else:
                    command = [sys.executable, str(scripts[name]), str(corpus), str(out), str(args.workers)]
                result = timed(command)
                result.update(pace(out, result.pop("started_at"), args.count))
                del result["stdout"]
                runs[name].append(result)
                print(f"{name:12s} repeat {repeat}: {result['wall_s']:.3f} s, {args.count / result['wall_s']:,.0f} "
                      f"files/s, CPU {1000 * result['cpu_s'] / args.count:.3f} ms/file; first output at "
                      f"{result['first_output_s']:.3f} s, then {result['files_per_s_after_first']:,.0f} files/s",
                      flush=True)
        half = scratch / "half"
        half.mkdir()
        for name in sorted(p.name for p in corpus.glob("*.jpg"))[:args.count // 2]:
            shutil.copyfile(corpus / name, half / name)
        coordinator: dict[Path, list[dict]] = {corpus: [], half: []}
        for repeat in range(args.repeats):
            for inputs, results in coordinator.items():
                out = scratch / "out-api"
                shutil.rmtree(out, ignore_errors=True)
                done = subprocess.run([sys.executable, "-c", API_RUN, str(inputs), str(out), str(args.workers)],
                                      capture_output=True, text=True, check=True)
                results.append(json.loads(done.stdout.splitlines()[-1]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    table = {}
    for name, results in runs.items():
        wall = statistics.median(r["wall_s"] for r in results)
        row = {"wall_s": round(wall, 3), "files_per_s": round(args.count / wall, 1),
               "cpu_ms_per_file": round(1000 * statistics.median(r["cpu_s"] for r in results) / args.count, 4),
               "first_output_s": round(statistics.median(r["first_output_s"] for r in results), 3),
               "files_per_s_after_first": round(statistics.median(r["files_per_s_after_first"] for r in results), 1)}
        table[name] = row
    own_all, own_half = (statistics.median(c["coordinator_s"] for c in results) for results in coordinator.values())
    per_input = (own_all - own_half) / (args.count - args.count // 2)
    table["gpupipe"]["coordinator_cpu_ms_per_file"] = round(1000 * per_input, 4)
    table["gpupipe"]["coordinator_cpu_start_s"] = round(own_all - args.count * per_input, 4)
    table["gpupipe"]["cpu_seconds_by_stage"] = coordinator[corpus][0]["cpu_seconds_by_stage"]
    ratio = table["gpupipe"]["files_per_s"] / table["pillow pool"]["files_per_s"]
    paired = statistics.median(pool["wall_s"] / ours["wall_s"]
                               for ours, pool in zip(runs["gpupipe"], runs["pillow pool"]))
    floor = table["stack floor"]["files_per_s"] / table["pillow pool"]["files_per_s"]
    # Start-up apart: the pace once outputs flow, and how much later gpupipe's first one came.
    after_first = statistics.median(ours["files_per_s_after_first"] / pool["files_per_s_after_first"]
                                    for ours, pool in zip(runs["gpupipe"], runs["pillow pool"]))
    later = statistics.median(ours["first_output_s"] - pool["first_output_s"]
                              for ours, pool in zip(runs["gpupipe"], runs["pillow pool"]))
    print(json.dumps(table, indent=1))
    print(f"gpupipe / pillow pool: {ratio:.2f}x (median of the repeats' own ratios: {paired:.2f}x); "
          f"stack floor / pillow pool: {floor:.2f}x")
    print(f"once outputs flow: gpupipe / pillow pool {after_first:.2f}x; gpupipe's first output "
          f"{1000 * later:.0f} ms later")
    if args.json:
        import PIL
        from results_file import write_result
        write_result(args.json, "tiny files", pillow=PIL.__version__, config=vars(args), results=table,
                     ratio_gpupipe_over_pool=round(ratio, 3), ratio_gpupipe_over_pool_paired=round(paired, 3),
                     ratio_floor_over_pool=round(floor, 3), ratio_after_first_output_paired=round(after_first, 3),
                     first_output_later_s_paired=round(later, 3), runs=runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
