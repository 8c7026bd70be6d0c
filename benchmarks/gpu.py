"""The CUDA backend on this machine's GPU (issue 3's figures), in one command:

    python benchmarks/gpu.py --json gpu-h100-DATE.json

1. Kernels: each op on a batch of 16 12 MP RGB images already on the device: GPU time
   of its launches (CUDA events around 10 back-to-back runs after a warm-up), and the
   wall time of apply() with the host's planning; achieved bandwidth =
   (bytes read + bytes written, at least once each) / time, as a fraction of the
   device's peak (memory clock × bus width × 2). Target: ≥ 60 % for memory-bound kernels.
2. Workloads W1–W3 (docs/design.md §7, definitions from contenders.py) over the benchmark
   corpora: the GPU backend (JPEG codecs on the CPU; and where nvImageCodec is installed,
   with --decoder nvimgcodec, and with --decoder nvimgcodec --gpu-encode) against the CPU backend using every
   core, img/s, median of --repeats. Each run is a process of its own, timed whole as a user
   runs it (interpreter start, imports, the workers' CUDA contexts, the last chunk's fsyncs):
   the run's process must not have opened CUDA, or its GPU work stays in that one process.
   Each row also gets where one run's time went: the stages' seconds summed over inputs, and
   the CPU seconds of the scan, the coordination and the workers. All runs with --max-memory
   4GB. Targets on an H100: W3 ≥ 20× the CPU backend; W1 and W2 limited by decode/encode.
3. With W3 and nvImageCodec: nvJPEG's own ceiling on the camera photos (codec_ceiling): decode
   from host bytes and q90 encode from device arrays, alone, by batch size and thread count;
   and decode with the batch split between the hardware JPEG engines and CUDA (decoder_variants).
   W1 also gets the GPU peers the issues name: benchmarks/torchvision_w1.py (torchvision's
   nvJPEG decode in batches, antialiased resize, nvJPEG encode) and, where DALI is installed,
   benchmarks/dali_w1.py (DALI's reader, mixed decode and resize, nvJPEG encode), each a process
   timed whole; and gpupipe itself with --decoder dali (gpu_dali).
4. With --peers FILE (a benchmarks/run.py result from the same host, same corpora: the peers
   Pillow and OpenCV on every core), each workload's row gets the peers' img/s and every
   configuration's ratio to the fastest of them (add_peers).

Writes device, driver, runtime, CuPy and gpupipe versions and the date with the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_corpus  # noqa: E402
from scratch import Scratch  # noqa: E402

import gpupipe  # noqa: E402
from gpupipe import ops  # noqa: E402

RESULTS = HERE / "results"
# Every run, CPU and GPU, gets --max-memory 4GB: the 512 MB default holds only 5 decoded 12 MP
# photos, which starves 16 encoder threads and the GPU's batches alike.
MAX_MEMORY = 4 * 2**30
CAMERA_GPU_COUNT = 240
# ImageNet-size photos for W1-W3: 500 took the GPU under 0.7 s a run, of which a run's fixed start
# and drain are a good part; users run millions. 2000 distinct files, for every configuration.
IMAGENET_COUNT = 2000
KERNEL_OPS = [ops.Brightness(20), ops.Contrast(1.3), ops.Grayscale(), ops.Flip("horizontal"), ops.Rotate(90),
              ops.Crop(100, 100, 2000, 1500), ops.Sharpen(), ops.GaussianBlur(1.0), ops.GaussianBlur(3.0),
              ops.Resize(1500, 1000, mode="exact"), ops.Thumbnail(256), ops.Watermark(text="© gpupipe", size=64)]


def device_info(cupy) -> dict:
    runtime = cupy.cuda.runtime
    props = runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    peak = 2 * props["memoryClockRate"] * 1e3 * props["memoryBusWidth"] / 8     # bytes/s, double data rate
    from gpupipe.backends import cuda_report
    return {"device": name, "compute": f"{props['major']}.{props['minor']}", "cpu_cores": os.cpu_count(),
            "nvimgcodec": cuda_report().get("nvImageCodec"),
            "memory_gib": props["totalGlobalMem"] / 2**30, "peak_bandwidth_gbs": peak / 1e9,
            "driver": runtime.driverGetVersion(),
            "runtime": runtime.runtimeGetVersion(), "cupy": cupy.__version__}


def kernels(backend, cupy, peak_gbs: float, images: int, repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    host = [rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8) for _ in range(images)]
    batch = backend.upload(host)
    rows = []
    for op in KERNEL_OPS:
        # GPU time of the launches alone (CUDA events), and the wall time of apply() + synchronize,
        # which adds the host's planning and argument uploads.
        seconds = backend.kernel_seconds(batch, op, repeats)
        walls = []
        for _ in range(repeats):
            started = time.perf_counter()
            out = backend.settled(backend.apply(batch, op))      # brightness/contrast launch here
            cupy.cuda.Device().synchronize()
            walls.append(time.perf_counter() - started)
        # bytes the op must read and write at least once: a crop reads only its rectangle
        read = out.buffer.nbytes if isinstance(op, ops.Crop) else batch.buffer.nbytes
        moved = read + out.buffer.nbytes
        rows.append({"op": repr(op), "ms": seconds * 1e3, "apply_ms": statistics.median(walls) * 1e3,
                     "gb_moved": moved / 1e9, "gbs": moved / seconds / 1e9,
                     "fraction_of_peak": moved / seconds / 1e9 / peak_gbs})
        print(f"{repr(op)[:40]:40} {seconds * 1e3:8.3f} ms GPU ({rows[-1]['apply_ms']:7.2f} ms apply) "
              f"{rows[-1]['gbs']:6.0f} GB/s {rows[-1]['fraction_of_peak']:5.0%} of peak", flush=True)
    return rows


def codec_ceiling(cupy, corpus: Path, repeats: int) -> dict:
    """nvJPEG through gpupipe's own decoder and encoder classes, alone: 12 MP photos decoded from
    bytes in host memory and encoded from arrays already on the device, at two batch sizes, from
    one thread and from two threads at once (the backend's concurrency). No file I/O, no kernel,
    no engine: the most img/s the JPEG codecs allow W3 on this device, what "20x" is measured
    against."""
    import threading

    from gpupipe import codecs
    from gpupipe.backends.cuda.jpeg import NvJpegDecoder, NvJpegEncoder
    deferred = [codecs.defer_jpeg(p.read_bytes(), max_pixels=None) for p in sorted(corpus.glob("*.jpg"))]
    items = [d.pixels for d in deferred if d is not None]       # None: a JPEG the device does not take
    decoder, encoder = NvJpegDecoder(cupy), NvJpegEncoder()
    streams = [cupy.cuda.Stream(non_blocking=True) for _ in range(2)]
    decoded = [image for image in decoder.decode(items[:16], streams[0]) if image is not None]
    streams[0].synchronize()
    megapixels = statistics.mean(item.shape[0] * item.shape[1] for item in items) / 1e6

    def decode(chunk, stream):
        decoder.decode(chunk, stream)
        stream.synchronize()

    def encode(chunk, stream):
        encoder.encode(chunk, 90, stream)

    result = {"images": len(items), "megapixels": round(megapixels, 2),
              "decoder_variants": decoder_variants(items, streams[0], repeats, megapixels)}
    for label, work, inputs in (("decode", decode, items), ("encode_q90", encode, decoded * (len(items) // 16 or 1))):
        for batch in (8, 32):
            chunks = [inputs[i:i + batch] for i in range(0, len(inputs), batch)]
            for threads in (1, 2):
                walls = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    workers = [threading.Thread(target=lambda k=k: [work(c, streams[k]) for c in chunks[k::threads]])
                               for k in range(threads)]
                    for worker in workers:
                        worker.start()
                    for worker in workers:
                        worker.join()
                    walls.append(time.perf_counter() - started)
                rate = len(inputs) / statistics.median(walls)
                result[f"{label}_batch{batch}_threads{threads}_img_s"] = round(rate, 1)
                print(f"nvJPEG {label:10} batch {batch:2} threads {threads}: {rate:7.1f} img/s "
                      f"({rate * megapixels:6.0f} MP/s)", flush=True)
    return result


def decoder_variants(items, stream, repeats: int, megapixels: float) -> dict:
    """Decode img/s (batches of 32, one thread) of nvImageCodec decoders set up other ways than
    gpupipe's (the H100's hardware JPEG engines take the whole batch, CUDA only what they refuse):
    the batch split between the engines and CUDA, DALI's way (its hw_decoder_load is 0.65-0.9),
    with nvImageCodec balancing the split itself; CUDA alone; the engines alone; and gpupipe's
    decoder handed the previous batch's Images to decode into (nvImageCodec then resizes them
    instead of allocating). If one beats gpupipe's setting, jpeg.py should take it. Each
    variant's error is kept, not raised."""
    from nvidia import nvimgcodec as nv
    hw, cuda = nv.BackendKind.HW_GPU_ONLY, nv.BackendKind.GPU_ONLY
    adaptive = nv.LoadHintPolicy.ADAPTIVE_MINIMIZE_IDLE_TIME
    split = lambda load: [nv.Backend(hw, load_hint=load, load_hint_policy=adaptive), nv.Backend(cuda)]  # noqa: E731
    variants = {            # name: (the decoder's backends, whether it decodes into the last batch's Images)
        "hw_then_cuda (gpupipe)": (lambda: [nv.Backend(hw), nv.Backend(cuda)], False),
        "hw_then_cuda, images reused": (lambda: [nv.Backend(hw), nv.Backend(cuda)], True),
        "hw_0.75_adaptive+cuda": (lambda: split(0.75), False),
        "hw_0.5_adaptive+cuda": (lambda: split(0.5), False),
        "cuda_only": (lambda: [nv.Backend(cuda)], False),
        "hw_only": (lambda: [nv.Backend(hw)], False),
    }
    params = nv.DecodeParams(apply_exif_orientation=False, color_spec=nv.ColorSpec.SRGB)
    data = [item.data for item in items if item.shape[2] == 3]
    chunks = [data[i:i + 32] for i in range(0, len(data), 32)]
    rows = {}
    for name, (backends, reuse) in variants.items():
        try:
            decoder = nv.Decoder(backends=backends())
            decoder.decode(chunks[0], params=params, cuda_stream=stream.ptr)      # warm-up: set-up, buffers
            stream.synchronize()
            walls, refused = [], 0
            previous: list = []
            for _ in range(repeats):
                started = time.perf_counter()
                for chunk in chunks:
                    # Reusing the last batch's Images saves nvImageCodec an allocation per image.
                    recycled = previous[:len(chunk)]
                    reused = {"images": recycled} if len(recycled) == len(chunk) and None not in recycled else {}
                    images = decoder.decode(chunk, params=params, cuda_stream=stream.ptr, **reused)
                    refused += sum(image is None for image in images)
                    stream.synchronize()
                    previous = images if reuse else []
                walls.append(time.perf_counter() - started)
            rate = len(data) / statistics.median(walls)
            rows[name] = {"img_s": round(rate, 1), "refused": refused // max(1, repeats)}
            print(f"nvJPEG decoder {name:24} {rate:7.1f} img/s ({rate * megapixels:6.0f} MP/s), "
                  f"{rows[name]['refused']} refused", flush=True)
            del decoder
        except Exception as exc:                       # a variant this nvImageCodec cannot make
            rows[name] = {"error": f"{exc.__class__.__name__}: {exc}"}
            print(f"nvJPEG decoder {name:24} failed: {rows[name]['error']}", flush=True)
    return rows


# label -> gpupipe.run options; the nvJPEG ones run where nvImageCodec is installed, the DALI one
# where DALI is.
CONFIGS = {"cpu": {"backend": "cpu"}, "gpu": {"backend": "gpu"},
           "gpu_nvjpeg": {"backend": "gpu", "decoder": "nvimgcodec"},
           "gpu_nvjpeg_codecs": {"backend": "gpu", "decoder": "nvimgcodec", "gpu_encode": True},
           "gpu_dali": {"backend": "gpu", "decoder": "dali"}}


def twins(backend, peak_gbs: float, images: int, repeats: int) -> list[dict]:
    """Kernels that kept a plain twin when a faster version replaced them, timed side by side on
    the same batch: the per-pixel gp_rotate against the shared-memory tiles of gp_rotate_tiled;
    gaussian σ 3's row pass, gp_sep_rows against gp_sep_rows_tiled (flagging included, as the op
    runs it); and a device-to-device copy of the batch (plans.MEMCPY), the practical ceiling of a
    kernel that reads and writes every byte once."""
    from gpupipe.backends.cuda import plans
    rng = np.random.default_rng(1)
    batch = backend.upload([rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8) for _ in range(images)])
    size = batch.buffer.nbytes
    copy = plans._Builder(batch.shapes)
    copy.copy()
    programs = [("memcpy", None, copy.done(), 2 * size)]      # (name, degrees, program, bytes moved)
    for degrees in (90, 270):
        per_pixel = plans._Builder(batch.shapes)
        per_pixel.step("gp_rotate", [(w, h, c) for h, w, c in batch.shapes], np.int32(degrees))
        programs += [("gp_rotate", degrees, per_pixel.done(), 2 * size),
                     ("gp_rotate_tiled", degrees, plans.plan_op(ops.Rotate(degrees), batch.shapes), 2 * size)]
    blur = plans.plan_op(ops.GaussianBlur(3.0), batch.shapes)
    flags, tiled_rows = blur.launches[:2]
    assert tiled_rows.kernel == "gp_sep_rows_tiled", "σ 3's row pass goes through shared memory (plans.ROW_APRON)"
    per_item_rows = dataclasses.replace(tiled_rows, kernel="gp_sep_rows",
                                        work=plans._most_items(batch.shapes, across=plans.ROW_PIXELS))
    for launch in (per_item_rows, tiled_rows):   # bytes in, float32 out
        programs.append((launch.kernel, None, dataclasses.replace(blur, launches=[flags, launch]), 5 * size))
    rows = []
    for name, degrees, program, moved in programs:
        seconds = backend.program_seconds(batch, program, repeats)
        rows.append({"kernel": name, "degrees": degrees, "ms": seconds * 1e3, "gbs": moved / seconds / 1e9,
                     "fraction_of_peak": moved / seconds / 1e9 / peak_gbs})
        print(f"{name:17} {degrees or '':>3} {seconds * 1e3:8.3f} ms GPU {rows[-1]['fraction_of_peak']:5.0%} of peak",
              flush=True)
    return rows


def add_peers(rows: list[dict], peers: dict) -> None:
    """Put each peer's img/s from a run.py result (``peers``) into the row of the same workload and
    corpus, and each configuration's ratio to the fastest peer that made every output."""
    measured = {(r["workload"], r["corpus"]["name"]): r["summary"] for r in peers["results"]}
    for row in rows:
        summary = measured.get((row["workload"], row.get("cpu_corpus", row["corpus"])))   # the same files
        if summary is None:
            continue
        valid = {name: s["images_per_s"] for name, s in summary.items() if name != "gpupipe" and s.get("valid")}
        row["peers_img_s"] = valid
        row["peers_workers"] = peers["config"]["workers"]
        if not valid:
            continue
        row["fastest_peer"] = fastest = max(valid, key=valid.get)
        for key in [k for k in row if k.endswith("_img_s") and k != "peers_img_s"]:
            row[key.replace("_img_s", "_over_fastest_peer")] = row[key] / valid[fastest]


def attach_peers(result: dict, peers_file: Path) -> None:
    """add_peers on a whole result, noting where the peers' figures came from, and print the ratios."""
    peers = json.loads(peers_file.read_text())
    add_peers(result.get("workloads", []), peers)
    result["peers"] = {"source": peers_file.name, "versions": peers.get("machine", {}).get("versions")}
    for row in result.get("workloads", []):
        if "fastest_peer" in row:
            print(f"{row['workload']} {row['corpus']}: fastest peer {row['fastest_peer']} "
                  f"{row['peers_img_s'][row['fastest_peer']]:.0f} img/s; " + ", ".join(
                      f"{k.removesuffix('_over_fastest_peer')} {v:.1f}x" for k, v in row.items()
                      if k.endswith("_over_fastest_peer")), flush=True)


def workloads(corpora: dict[str, Path], repeats: int, gpu_corpora: dict[str, Path],
              names: tuple[str, ...] = ("W1", "W2", "W3"), labels: tuple[str, ...] = tuple(CONFIGS)) -> list[dict]:
    from gpupipe.backends.cuda.jpeg import nvimgcodec_unavailable_reason
    from gpupipe.codecs.dali import dali_unavailable_reason
    nvjpeg, dali = nvimgcodec_unavailable_reason() is None, dali_unavailable_reason() is None
    # The CPU backend always runs: every GPU figure is a ratio to it.
    configs = {label: options for label, options in CONFIGS.items()
               if (label == "cpu" or label in labels) and (nvjpeg or "nvjpeg" not in label)
               and (dali or "dali" not in label)}
    rows = []
    work = Path(tempfile.mkdtemp(prefix="gpupipe-gpu-bench-"))
    scratch = Scratch(work)                    # emptied with work, after the timing
    try:
        for workload in names:
            for corpus_name, corpus in corpora.items():
                row = {"workload": workload, "corpus": corpus_name}
                gpu_source = gpu_corpora.get(corpus_name, corpus)
                row["cpu_corpus"], row["gpu_corpus"] = corpus.name, gpu_source.name
                line = f"{workload} {corpus_name}:"
                for label, options in configs.items():
                    walls, runs = [], []
                    for repeat in range(repeats + 1):                 # the first is a warm-up
                        out = scratch.fresh(work / f"{workload}-{corpus_name}-{label}")
                        source = gpu_source if label != "cpu" else corpus
                        wall, run = run_in_a_process(workload, source, out, options)
                        if repeat:
                            walls.append(wall)
                            runs.append(run)
                    files = runs[0]["processed"] + runs[0]["failed"]
                    row[f"{label}_img_s"] = files / statistics.median(walls)
                    row[f"{label}_backend"] = runs[0]["backend"]
                    # Where the time went, in the median run: the stages' seconds summed over inputs.
                    middle = sorted(zip(walls, range(len(runs))))[len(runs) // 2][1]
                    row[f"{label}_breakdown_s"] = runs[middle]["breakdown"]
                    if label != "cpu":
                        row[f"{label}_over_cpu"] = row[f"{label}_img_s"] / row["cpu_img_s"]
                    line += f" {label} {row[f'{label}_img_s']:.0f} img/s"
                    line += f" ({row[f'{label}_over_cpu']:.1f}x)," if label != "cpu" else ","
                if workload == "W1":          # the GPU peers: straightforward torchvision and DALI scripts
                    line += script_peer("torchvision", row, gpu_source, work / "torchvision", repeats, scratch)
                    if dali:
                        line += script_peer("dali", row, gpu_source, work / "dali", repeats, scratch)
                rows.append(row)
                print(line, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def script_peer(peer: str, row: dict, source: Path, out: Path, repeats: int, scratch: Scratch) -> str:
    """W1 by benchmarks/<peer>_w1.py — torchvision (nvJPEG decode in batches, antialiased resize,
    nvJPEG encode, all through torchvision) or dali (DALI's reader, mixed decode and resize,
    nvJPEG encode through nvImageCodec) — a process of its own timed whole, median of repeats
    after a warm-up; each GPU configuration's ratio to it. Where the script fails, says so."""
    walls = []
    for repeat in range(repeats + 1):
        scratch.fresh(out)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(HERE / f"{peer}_w1.py"), str(source), str(out)],
                              capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            row[f"{peer}_error"] = done.stderr[-1500:]
            return f" {peer} failed,"
        if repeat:
            walls.append(time.perf_counter() - started)
    told = json.loads(done.stdout.strip().splitlines()[-1])
    row[f"{peer}_img_s"] = told["images"] / statistics.median(walls)
    row[peer] = told.get("torch") or told.get("dali")
    for key in [k for k in row if k.endswith("_img_s") and k.startswith("gpu")]:
        row[key.replace("_img_s", f"_over_{peer}")] = row[key] / row[f"{peer}_img_s"]
    return f" {peer} {row[f'{peer}_img_s']:.0f} img/s,"


ONE_RUN = """
import collections, json, sys
sys.path.insert(0, {here!r})
import gpupipe
from contenders import gpupipe_spec
result = gpupipe.run([{source!r}], {out!r}, gpupipe_spec({workload!r}), journal=False, max_memory={memory},
                     **json.loads({options!r}))
stages = collections.Counter()
for outcome in result.outcomes:
    stages.update(outcome.seconds)
summary = result.summary
print(json.dumps({{"processed": summary.processed, "failed": summary.failed, "backend": summary.backend,
                  "breakdown": {{**{{k: round(v, 3) for k, v in stages.items()}}, "wall": round(summary.wall_seconds, 3),
                                "cpu_by_stage_s": {{k: round(v, 3) for k, v in summary.cpu_seconds_by_stage.items()}}}}}}))
"""


def run_in_a_process(workload: str, source: Path, out: Path, options: dict) -> tuple[float, dict]:
    """One gpupipe run in a fresh Python process (no CUDA opened before it, as the CLI's): the
    process's whole wall time, and what the run said about itself."""
    code = ONE_RUN.format(here=str(HERE), source=str(source), out=str(out), workload=workload, memory=MAX_MEMORY,
                          options=json.dumps(options))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"the {options} run of {workload} failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kernel-images", type=int, default=16)
    ap.add_argument("--skip-workloads", action="store_true")
    ap.add_argument("--skip-kernels", action="store_true")
    ap.add_argument("--workloads", default="W1,W2,W3", help="comma-separated, e.g. W3")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated of {', '.join(CONFIGS)} "
                    "(cpu always runs: the ratios need it)")
    ap.add_argument("--peers", type=Path, metavar="FILE", help="a benchmarks/run.py result of the peers on "
                    "this host and corpora: adds their img/s and each configuration's ratio to the fastest")
    ap.add_argument("--merge-peers", nargs=2, type=Path, metavar=("RESULT", "PEERS"), help="no GPU work: add "
                    "a peers file from the same host to an earlier result of this benchmark, in place")
    ap.add_argument("--json", metavar="NAME", help="also write benchmarks/results/NAME")
    a = ap.parse_args(argv)
    if a.merge_peers:                      # the peers ran in another device call than the workloads
        target, peers_file = a.merge_peers
        result = json.loads(target.read_text())
        attach_peers(result, peers_file)
        target.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    import cupy

    from gpupipe.backends.cuda.backend import CupyBackend
    info = device_info(cupy)
    print(json.dumps(info), flush=True)
    result = {"date": date.today().isoformat(), "gpupipe": gpupipe.__version__, **info}

    def save() -> None:
        """Written after each part, so a call cut short by its time limit still brings back the
        parts that finished."""
        if a.json:
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / a.json).write_text(json.dumps(result, indent=2) + "\n")

    if not a.skip_kernels:
        backend = CupyBackend()
        result["kernels"] = kernels(backend, cupy, info["peak_bandwidth_gbs"], a.kernel_images, 10)
        result["twins"] = twins(backend, info["peak_bandwidth_gbs"], a.kernel_images, 10)
        backend.close()
        save()
    if not a.skip_workloads:
        corpora = {"imagenet": make_corpus.ensure_corpus("imagenet", count=IMAGENET_COUNT, jobs=os.cpu_count() or 1),
                   "camera": make_corpus.ensure_corpus("camera")}
        # The GPU does 40 camera photos in well under a second: too short for a steady state, so
        # its camera figures come from 240 names hard-linked to the same 40 files (same bytes,
        # same work per image); the CPU backend takes 3-4 s over the 40 and reads them there.
        gpu_corpora = {"camera": make_corpus.ensure_corpus("camera1000", count=CAMERA_GPU_COUNT)}
        result["max_memory"] = MAX_MEMORY
        from gpupipe.backends.cuda.jpeg import nvimgcodec_unavailable_reason
        nvjpeg = nvimgcodec_unavailable_reason() is None
        if nvjpeg and "W3" in a.workloads:
            result["nvjpeg_ceiling"] = codec_ceiling(cupy, gpu_corpora["camera"], a.repeats)
            save()
        result["workloads"] = workloads(corpora, a.repeats, gpu_corpora, tuple(a.workloads.split(",")),
                                        tuple(a.configs.split(",")))
        if a.peers is not None and a.peers.is_file():
            attach_peers(result, a.peers)
        save()
    if a.json:
        print(f"written: benchmarks/results/{a.json}")
    return 0


if __name__ == "__main__":
    status = main()
    from gpupipe.backends.cuda.jpeg import exit_before_teardown
    exit_before_teardown(status)              # nvImageCodec's teardown can crash an exiting process
    raise SystemExit(status)
