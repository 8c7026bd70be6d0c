"""CupyBackend: batches packed in device memory, one launch per kernel per batch.

A batch is one device buffer with the HWC images of one depth (uint8 or uint16) back to
back plus their shapes (``DeviceBatch``; the engine hands a mixed batch over a depth at a time). ``apply`` asks ``plans.plan_op`` what to launch and runs
it on this thread's CUDA stream. Each of the engine's worker processes has its own
backend (its own CUDA context), so one worker's batch uploads or downloads while
another's computes. Host staging buffers are pinned, per thread, and grow to the
largest batch seen.

Device errors become ``DeviceOutOfMemory`` (the engine splits the batch and
retries) or ``DeviceFailure`` (the engine retries, then hands the run to the CPU
backend); both are the device's fault, never an image's.
"""

from __future__ import annotations

import collections
import logging
import contextlib
import importlib.resources
import time
import re
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ... import ops
from ...codecs import DeferredJpeg, EncodedImage, decode_deferred_on_host
from ...errors import DeviceFailure, DeviceOutOfMemory, SystemFailure, UndecodableImages
from ...records import dataclass
from ..base import Backend
from ...codecs.dali import DaliDecoder, dali_unavailable_reason
from .jpeg import NvJpegDecoder, NvJpegEncoder, nvimgcodec_unavailable_reason
from .plans import MEMCPY, Buf, Program, Shape, colour_table, compose_tables, offsets, plan_op, plan_table

log = logging.getLogger("gpupipe")

THREADS_PER_BLOCK = 256
MAX_GRID_Y = 65535
_KERNEL_RE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(')


@dataclass
class DeviceBatch:
    """A batch of images on the device, back to back in one buffer, with the work still owed to it."""

    buffer: object                       # cupy.ndarray of the images' depth, 1-D: the images back to back
    shapes: list[Shape]
    # Host arrays uploaded asynchronously for the launches that made this batch (descriptors,
    # tables, taps): kept alive until the batch is downloaded or dropped, after its stream is done.
    keep: tuple = ()
    # Brightness/contrast ops applied but not launched yet, composed into one 256-entry table:
    # a run of them costs one pass, made when the next other op (or a download) needs the pixels.
    pending_table: np.ndarray | None = None

    @property
    def dtype(self) -> np.dtype:
        return self.buffer.dtype


def kernel_sources() -> Path:
    """The directory of kernels/*.cu as installed (the wheel ships them as gpupipe.kernels), or
    the checkout's kernels/ when gpupipe runs from a source tree on PYTHONPATH."""
    try:
        directory = Path(str(importlib.resources.files("gpupipe.kernels")))
    except ModuleNotFoundError:
        directory = Path(__file__).resolve().parents[3] / "kernels"
    if not (directory / "gpupipe.cuh").is_file():
        raise SystemFailure(f"the CUDA kernel sources are missing from {directory} (a broken install?)")
    return directory


def load_kernels(cupy) -> dict[str, object]:
    """Compile every kernel now (CuPy caches the binaries on disk): a missing or broken kernel
    is an error when the backend starts, not in the middle of a run."""
    directory = kernel_sources()
    kernels = {}
    for cu in sorted(directory.glob("*.cu")):
        source = cu.read_text()
        module = cupy.RawModule(code=source, options=("-std=c++17", f"-I{directory}"))
        try:
            for name in _KERNEL_RE.findall(source):
                kernels[name] = module.get_function(name)
        except Exception as exc:             # cupy.cuda.compiler.CompileException, NVRTC missing, ...
            raise SystemFailure(f"cannot compile {cu.name} for the GPU: {exc}") from exc
    return kernels


def pixels_per_thread() -> int:
    """GP_PIXELS_PER_THREAD of kernels/gpupipe.cuh: how many pixels one thread takes, which sizes grids."""
    match = re.search(r"#define\s+GP_PIXELS_PER_THREAD\s+(\d+)", (kernel_sources() / "gpupipe.cuh").read_text())
    if match is None:
        raise SystemFailure("kernels/gpupipe.cuh does not define GP_PIXELS_PER_THREAD (a broken install?)")
    return int(match.group(1))


class CupyBackend(Backend):
    name = "gpu"
    max_batch_images = 64
    max_batch_pixels = 96 * 2**20        # ~300 MB of RGB per batch: launches amortised, memory bounded

    def __init__(self, workers: int = 1, memory_limit: int | None = None, device: int = 0,
                 profile: bool = False, decoder: str = "auto", jpeg_encode: bool = False) -> None:
        import cupy
        # profile: each call waits for its stream and adds its seconds to ``timings`` (upload,
        # kernels, download): a stage breakdown for benchmarks, at the cost of the overlap.
        self.profile, self.timings = profile, collections.Counter()
        self.cp = cupy
        try:
            self.device = cupy.cuda.Device(device)
            self.device.use()
            self.pool = cupy.get_default_memory_pool()
            if memory_limit:
                self.pool.set_limit(size=int(memory_limit))
            self.kernels = load_kernels(cupy)
            self.pixels_per_thread = pixels_per_thread()
            properties = cupy.cuda.runtime.getDeviceProperties(device)
        except SystemFailure:
            raise
        except Exception as exc:
            raise SystemFailure(f"CUDA device {device} is not usable: {exc.__class__.__name__}: {exc}") from exc
        self.device_name = properties["name"].decode() if isinstance(properties["name"], bytes) else properties["name"]
        self.host_decoder = "pillow" if decoder == "pillow" else "turbo"
        self.jpeg = self.jpeg_encoder = None
        if decoder == "dali":
            self.jpeg = self._device_codec("--decoder dali", "decode", self._dali, dali_unavailable_reason())
        elif decoder == "nvimgcodec":
            self.jpeg = self._device_codec("--decoder nvimgcodec", "decode", lambda: NvJpegDecoder(self.cp),
                                           nvimgcodec_unavailable_reason())
        self.decodes_jpeg = self.jpeg is not None
        if jpeg_encode:
            self.jpeg_encoder = self._device_codec("--gpu-encode", "encode", NvJpegEncoder,
                                                   nvimgcodec_unavailable_reason())
        self.encodes_jpeg = self.jpeg_encoder is not None
        self._local = threading.local()

    def _device_codec(self, flag: str, job: str, make, problem: str | None):
        """The JPEG decoder or encoder ``flag`` asked for on the device (nvJPEG through nvImageCodec,
        DALI) when it is installed (``problem`` None) and starts, else None with a warning saying
        why: the CPU does that job."""
        if problem is None:
            try:
                return make()
            except Exception as exc:             # installed but broken (no libnvjpeg, ...): say so, go on
                problem = f"GPU JPEG {job} unavailable ({exc.__class__.__name__}: {exc})"
        log.warning("%s: %s; JPEGs are %sd on the CPU", flag, problem, job)
        return None

    def _dali(self):
        return DaliDecoder("mixed", self.cp, self.device.id)

    # ------------------------------------------------------------------ Backend

    def upload(self, images: Sequence[np.ndarray | DeferredJpeg]) -> DeviceBatch:
        """Host arrays go up in one DMA from pinned staging; deferred JPEGs are decoded on the
        device (nvJPEG) straight into their place. A JPEG nvJPEG refuses is decoded on the host
        and goes up with the arrays; one the host cannot decode either raises UndecodableImages."""
        shapes = [tuple(int(n) for n in img.shape) for img in images]
        starts = offsets(shapes)
        total = int(starts[-1])
        dtype = np.dtype(getattr(images[0], "dtype", np.uint8)) if images else np.dtype(np.uint8)
        if any(np.dtype(getattr(img, "dtype", np.uint8)) != dtype for img in images):
            raise ValueError("a device batch holds images of one depth (engine.process splits mixed ones)")
        with self._device_errors("upload"), self._stream() as stream:
            on_device = self._decode_jpegs(images, stream)
            buffer = self.cp.empty(max(total, 1), dtype)
            if len(on_device) < len(images):   # pack the host images in pinned memory: one DMA for them all
                staging = self._staging(total * dtype.itemsize).view(dtype)
                for i, img in enumerate(images):
                    if i not in on_device:
                        host = img.decode_on_host() if isinstance(img, DeferredJpeg) else img
                        staging[starts[i]:starts[i + 1]].reshape(host.shape)[...] = host
                buffer[:total].set(staging[:total], stream=stream)
                self._local.staging_busy = stream.record()     # the staging buffer is reused after this
            for i, pixels in on_device.items():            # device to device, after the DMA (same stream)
                buffer[int(starts[i]):int(starts[i + 1])] = pixels.ravel()
            return DeviceBatch(buffer[:total], shapes)

    def _decode_jpegs(self, images, stream) -> dict[int, object]:
        """Position -> device pixels of the deferred JPEGs nvJPEG decoded. The others get their
        host pixels now (decode_on_host); those that fail there too raise UndecodableImages."""
        deferred = [i for i, img in enumerate(images) if isinstance(img, DeferredJpeg) and img.host_pixels is None]
        if not deferred:
            return {}
        started = time.perf_counter() if self.profile else 0.0
        decoded = self.jpeg.decode([images[i] for i in deferred], stream) if self.jpeg else [None] * len(deferred)
        on_device = {i: pixels for i, pixels in zip(deferred, decoded) if pixels is not None}
        failed = decode_deferred_on_host(images, [i for i in deferred if i not in on_device])
        if failed:
            raise UndecodableImages(failed)
        if self.profile:
            stream.synchronize()
            self.timings["decode (GPU)"] += time.perf_counter() - started
        return on_device

    def apply(self, batch: DeviceBatch, op: ops.Op) -> DeviceBatch:
        table = colour_table(op, batch.dtype)
        if table is not None:                  # fused with its pointwise neighbours: no launch yet
            return DeviceBatch(batch.buffer, batch.shapes, batch.keep, compose_tables(batch.pending_table, table))
        batch = self.settled(batch)
        program = plan_op(op, batch.shapes, batch.dtype)
        with self._device_errors("kernels"), self._stream() as stream:
            return DeviceBatch(self._run(program, batch.buffer, stream), program.out_shapes, (batch.keep, program))

    def settled(self, batch: DeviceBatch) -> DeviceBatch:
        """The batch with its pending colour table applied (one gp_lut launch), if it has one.

        Settled in place: a batch may be read several times (JPEGs encoded, then the rest
        downloaded or subset for the children), and its table must be launched once. Batches
        made from it before keep their own buffer and composed table, so they are unaffected."""
        if batch.pending_table is None:
            return batch
        program = plan_table(batch.pending_table, batch.shapes)
        with self._device_errors("kernels"), self._stream() as stream:
            buffer = self._run(program, batch.buffer, stream)
        batch.buffer, batch.keep, batch.pending_table = buffer, (batch.keep, program), None
        return batch

    def download(self, batch: DeviceBatch) -> list[np.ndarray]:
        """The images as views of one pinned host block per batch, filled by one DMA: no host copy
        (a 12 MP image took 5 ms to copy out of a shared staging buffer). The block goes back to
        CuPy's pinned pool when the last view is freed, after its image was encoded."""
        batch = self.settled(batch)
        starts = offsets(batch.shapes)
        total = int(starts[-1])
        with self._device_errors("download"), self._stream() as stream:
            import cupyx
            block = cupyx.empty_pinned(max(total, 1), batch.dtype)
            batch.buffer.get(stream=stream, out=block[:total])
            stream.synchronize()
            return [block[starts[i]:starts[i + 1]].reshape(shape) for i, shape in enumerate(batch.shapes)]

    def encode_jpeg(self, batch: DeviceBatch, positions: Sequence[int], quality: int) -> list[EncodedImage | None]:
        """nvJPEG files of the L and RGB images at ``positions``; None for the others (alpha: the
        host flattens them first) and for any nvJPEG refuses. If the encoder itself breaks, this
        backend stops encoding, saying so, and the host encodes from then on."""
        out: list[EncodedImage | None] = [None] * len(positions)
        if self.jpeg_encoder is None:
            return out
        batch = self.settled(batch)
        starts = offsets(batch.shapes)
        # nvJPEG takes 8-bit pixels: 16-bit results go to the host, which rounds them first
        wanted = [k for k, i in enumerate(positions) if batch.shapes[i][2] in (1, 3) and batch.dtype == np.uint8]
        if not wanted:
            return out
        with self._device_errors("encode (GPU)"), self._stream() as stream:
            views = [batch.buffer[int(starts[positions[k]]):int(starts[positions[k] + 1])]
                     .reshape(batch.shapes[positions[k]]) for k in wanted]
            try:
                files = self.jpeg_encoder.encode(views, quality, stream)
            except (self.cp.cuda.runtime.CUDARuntimeError, self.cp.cuda.driver.CUDADriverError):
                raise                                   # the device's fault: _device_errors decides
            except Exception as exc:
                log.warning("GPU JPEG encode failed (%s: %s); JPEGs are encoded on the CPU from now on",
                            exc.__class__.__name__, exc)
                self.jpeg_encoder, self.encodes_jpeg = None, False
                return out
        for k, data in zip(wanted, files):
            if data is not None:
                out[k] = EncodedImage(data, "jpeg", batch.shapes[positions[k]][2])
        return out

    def subset(self, batch: DeviceBatch, indices: Sequence[int]) -> DeviceBatch:
        batch = self.settled(batch)
        starts = offsets(batch.shapes)
        with self._device_errors("kernels"), self._stream():
            parts = [batch.buffer[int(starts[i]):int(starts[i + 1])] for i in indices]
            return DeviceBatch(self.cp.concatenate(parts), [batch.shapes[i] for i in indices], batch.keep)

    def device_memory(self) -> dict[str, int] | None:
        limit = self.pool.get_limit() or self.cp.cuda.runtime.memGetInfo()[1]
        return {"used": int(self.pool.used_bytes()), "limit": int(limit)}

    def describe(self) -> str:
        dali = isinstance(self.jpeg, DaliDecoder)
        codecs = [job for job, codec in (("decode", None if dali else self.jpeg), ("encode", self.jpeg_encoder))
                  if codec is not None]
        dali = ", DALI decode" if dali else ""
        return f"gpu (CuPy, {self.device_name}{', nvJPEG ' + ' and '.join(codecs) if codecs else ''}{dali})"

    def close(self) -> None:
        with contextlib.suppress(Exception):       # a lost device may fail here too: nothing left to save
            self.device.synchronize()
            for codec in (self.jpeg, self.jpeg_encoder):
                if codec is not None:
                    codec.close()
            self.pool.free_all_blocks()
            self.cp.get_default_pinned_memory_pool().free_all_blocks()

    def kernel_seconds(self, batch: DeviceBatch, op: ops.Op, repeats: int = 10) -> float:
        """GPU time of ``op``'s launches on ``batch`` (planned and uploaded once, then run ``repeats``
        times back to back between two CUDA events), per run: the kernels alone, without the host's
        planning, for the benchmarks' bandwidth figures."""
        batch = self.settled(batch)
        table = colour_table(op, batch.dtype)
        program = plan_table(table, batch.shapes) if table is not None else plan_op(op, batch.shapes, batch.dtype)
        return self.program_seconds(batch, program, repeats)

    def program_seconds(self, batch: DeviceBatch, program: Program, repeats: int = 10) -> float:
        """GPU time of ``program``'s launches on ``batch``, per run (see kernel_seconds)."""
        with self._device_errors("kernels"), self._stream() as stream:
            self._run(program, batch.buffer, stream)            # warm-up: first launch, allocations
            start = stream.record()
            for _ in range(repeats):
                self._run(program, batch.buffer, stream)
            end = stream.record()
            end.synchronize()
            return self.cp.cuda.get_elapsed_time(start, end) / 1e3 / repeats

    # ------------------------------------------------------------------ running programs

    def _run(self, program: Program, src, stream):
        cp = self.cp
        buffers = {"src": src}
        for name, (elements, dtype) in program.buffers.items():
            buffers[name] = (cp.zeros if name in program.zeroed else cp.empty)(elements, dtype)
        for launch in program.launches:
            if launch.kernel == MEMCPY:           # device to device, by the copy engine
                source, target = (buffers[arg.name] for arg in launch.args)
                target.data.copy_from_device_async(source.data, source.nbytes, self.cp.cuda.get_current_stream())
                continue
            args = []
            for arg in launch.args:
                if isinstance(arg, Buf):
                    args.append(buffers[arg.name])
                elif isinstance(arg, np.ndarray):      # descriptors (structured: sent as bytes), tables, taps, marks
                    host = np.ascontiguousarray(arg)
                    args.append(cp.asarray(host.view(np.uint8) if host.dtype.names else host))
                else:
                    args.append(arg)                   # np.int32 / np.float32 scalars: typed as the kernel expects
            n_images = len(program.out_shapes)
            per_block = THREADS_PER_BLOCK * self.pixels_per_thread
            grid = (max(1, min(-(-launch.work // per_block), 2**31 - 1)), max(1, min(n_images, MAX_GRID_Y)))
            self.kernels[launch.kernel](grid, (THREADS_PER_BLOCK,), tuple(args))     # on the current stream
        return buffers[program.result]

    def _stream(self):
        """This thread's non-blocking stream, made current for CuPy's own operations too."""
        stream = getattr(self._local, "stream", None)
        if stream is None:
            self.device.use()
            stream = self._local.stream = self.cp.cuda.Stream(non_blocking=True)
        return stream

    def _staging(self, elements: int) -> np.ndarray:
        """This thread's pinned host buffer, at least ``elements`` bytes, free to overwrite."""
        busy = getattr(self._local, "staging_busy", None)
        if busy is not None:
            busy.synchronize()                 # the last upload from it has left for the device
            self._local.staging_busy = None
        staging = getattr(self._local, "staging", None)
        if staging is None or staging.size < elements:
            import cupyx
            size = -(-max(elements, 1 << 20) // 16) * 16     # whole 16-byte words: viewed as uint16 too
            staging = self._local.staging = cupyx.empty_pinned(size, np.uint8)
        return staging

    @contextlib.contextmanager
    def _device_errors(self, stage: str = ""):
        cp = self.cp
        started = time.perf_counter() if self.profile else 0.0
        try:
            yield
            if self.profile:
                self._stream().synchronize()
                self.timings[stage] += time.perf_counter() - started
        except cp.cuda.memory.OutOfMemoryError as exc:
            self.pool.free_all_blocks()
            raise DeviceOutOfMemory(f"out of GPU memory: {exc}") from exc
        except (cp.cuda.runtime.CUDARuntimeError, cp.cuda.driver.CUDADriverError) as exc:
            raise DeviceFailure(f"CUDA error: {exc}") from exc
