"""JPEG on the GPU: nvJPEG through NVIDIA nvImageCodec (``pip install gpupipe[nvimgcodec]``).

Decode. The engine only checks a JPEG's header on the CPU (``codecs.defer_jpeg``: size limit,
orientation, that it is a kind nvJPEG decodes) and hands the compressed bytes over; the
pixels are made on the device (the H100's hardware JPEG engines where nvImageCodec can use
them, CUDA otherwise), oriented there, and never cross PCIe as pixels. Grey JPEGs give L,
YCbCr ones RGB, upright, exactly the shapes ``codecs.decode`` gives.

The pixels are nvJPEG's, not libjpeg-turbo's: its IDCT rounds differently, a level here and
there (on an H100: max |Δ| 1 on baseline photos, 3 on a progressive one; tests/backends/cuda/test_gpu.py).
A file nvJPEG refuses is decoded on the host instead, which gives it the CPU path's result
or error. But nvJPEG does not notice corrupt entropy-coded data (random bytes where the
scan should be decode to a noise image without an error), where libjpeg-turbo's strict mode
fails the file: that is why GPU decode is opt-in (``--decoder nvimgcodec``), never the default.

Encode. L and RGB results written as JPEG are encoded on the device (the settings of
``codecs.encode``: the quality, 4:2:0 chroma for colour, baseline, standard Huffman tables) and
only the files cross PCIe, a tenth of the pixels' bytes. The files are nvJPEG's, not
libjpeg-turbo's: other bytes, the same quality setting. Opt-in (``--gpu-encode``) for that
reason: a run's output bytes should not depend on the machine unless asked.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:        # light to import: every CLI process exits through exit_before_teardown
    from ...codecs import DeferredJpeg


def nvimgcodec_unavailable_reason() -> str | None:
    """Why nvImageCodec cannot decode here, or None when it can."""
    try:
        from nvidia import nvimgcodec  # noqa: F401
    except Exception as exc:              # ImportError, or a library it links missing
        return f"nvImageCodec is not installed ({exc.__class__.__name__}: {exc})"
    return None


class NvJpegDecoder:
    """Batched JPEG decode into CuPy arrays on a given CUDA stream."""

    def __init__(self, cupy) -> None:
        from nvidia import nvimgcodec as nv
        self.cp = cupy
        self.params = {channels: nv.DecodeParams(apply_exif_orientation=False, color_spec=spec)
                       for channels, spec in ((1, nv.ColorSpec.GRAY), (3, nv.ColorSpec.SRGB))}
        _decoders.give_back(_decoders.borrow())   # fail here, at the backend's start, if it cannot run

    def close(self) -> None:
        """Nothing to free per backend: the decoders stay in the process's pool for the next run."""

    def decode(self, items: Sequence[DeferredJpeg], stream) -> list:
        """Upright C-contiguous uint8 HWC CuPy arrays in ``items``' order, ready on ``stream``;
        None for an item nvJPEG could not decode or gave another shape than its header said."""
        from ...codecs.orientation import _orient
        out: list = [None] * len(items)
        for channels, params in self.params.items():
            group = [i for i, item in enumerate(items) if item.shape[2] == channels]
            if not group:
                continue
            with _decoders.lend() as decoder:
                images = decoder.decode([items[i].data for i in group], params=params, cuda_stream=stream.ptr)
            for i, image in zip(group, images):
                if image is None:
                    continue
                pixels = self.cp.asarray(image)
                if pixels.ndim == 2:
                    pixels = pixels[:, :, None]
                pixels = _orient(pixels, items[i].orientation, xp=self.cp)
                if pixels.shape == items[i].shape:
                    out[i] = pixels
        return out


class NvJpegEncoder:
    """Batched JPEG encode of CuPy arrays (L or RGB, HWC uint8) into file bytes."""

    def __init__(self) -> None:
        from nvidia import nvimgcodec as nv
        self.nv = nv
        self.subsampling = {1: nv.ChromaSubsampling.CSS_GRAY, 3: nv.ChromaSubsampling.CSS_420}
        self.jpeg = nv.JpegEncodeParams(progressive=False, optimized_huffman=False)
        _encoders.give_back(_encoders.borrow())   # fail at the backend's start, not mid-run

    def encode(self, images: Sequence, quality: int, stream) -> list[bytes | None]:
        """JPEG files of ``images`` (C-contiguous CuPy arrays, HWC, C 1 or 3) once ``stream``'s work
        on them is done; None for one nvJPEG could not encode."""
        out: list[bytes | None] = [None] * len(images)
        for channels, subsampling in self.subsampling.items():
            group = [i for i, image in enumerate(images) if image.shape[2] == channels]
            if not group:
                continue
            params = self.nv.EncodeParams(quality_type=self.nv.QualityType.QUALITY, quality_value=float(quality),
                                          chroma_subsampling=subsampling, jpeg_encode_params=self.jpeg)
            wrapped = self.nv.as_images([images[i] for i in group], cuda_stream=stream.ptr)
            with _encoders.lend() as encoder:
                streams = encoder.encode(wrapped, "jpeg", params=params, cuda_stream=stream.ptr)
            for i, code_stream in zip(group, streams):
                if code_stream is not None:
                    out[i] = bytes(memoryview(code_stream)[:code_stream.size])
        return out

    def close(self) -> None:
        """Nothing to free per backend: the encoders stay in the process's pool."""


class _Pool:
    """Idle nvImageCodec decoders (or encoders), shared by every backend of the process.

    Making one costs about a second (the hardware decoder's set-up, measured as a fixed ~2 s per
    run on an H100 when each run made its own), so they outlive runs; one serves one thread at
    a time (two threads sharing a decoder crashed the process)."""

    def __init__(self, make) -> None:
        self._make = make
        self._idle: queue.SimpleQueue = queue.SimpleQueue()

    def borrow(self):
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        made = self._make()
        with _made_lock:
            if not _made:
                atexit.register(_release_all)    # registered after CuPy's import: runs before its exit hooks
            _made.append(made)
        return made

    def give_back(self, made) -> None:
        self._idle.put(made)

    @contextlib.contextmanager
    def lend(self):
        made = self.borrow()
        try:
            yield made
        finally:
            self.give_back(made)

    def clear(self) -> None:
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break


def _make_decoder():
    from nvidia import nvimgcodec as nv
    # The GPU alone (hardware engine first, then CUDA): a CPU decode is the engine's job, and
    # nvImageCodec's own CPU fallback would hide a refused file from us.
    return nv.Decoder(backends=[nv.Backend(nv.BackendKind.HW_GPU_ONLY), nv.Backend(nv.BackendKind.GPU_ONLY)])


def _make_encoder():
    from nvidia import nvimgcodec as nv
    # The GPU alone, for the same reason: a refusal comes back as None and the host encodes it.
    return nv.Encoder(backends=[nv.Backend(nv.BackendKind.GPU_ONLY)])


_decoders, _encoders = _Pool(_make_decoder), _Pool(_make_encoder)
_made: list = []
_made_lock = threading.Lock()


def _release_all() -> None:
    """Free the decoders and encoders while CUDA is still up: left to interpreter teardown, they
    crashed it."""
    with _made_lock:
        _made.clear()
    _decoders.clear()
    _encoders.clear()


def exit_before_teardown(status: int) -> None:
    """When nvImageCodec is loaded, end the process now with ``status``, output flushed.

    nvImageCodec 0.9 sometimes crashes (segfault) or hangs in its own teardown at interpreter
    exit, after all the work is done and written (seen on an H100, in test and CLI processes,
    with every decoder already freed). Processes that loaded it end through here, so their exit
    status is the work's. A no-op, returning, when it was never loaded."""
    import os
    import sys
    if "nvidia.nvimgcodec" not in sys.modules:
        return
    _release_all()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
