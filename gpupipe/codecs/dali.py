"""JPEG decode through NVIDIA DALI (``pip install gpupipe[dali]``, ``--decoder dali``).

The engine reads each file and checks its JPEG header as it does for every decoder
(``defer_jpeg``: size limit, orientation, an 8-bit grey or YCbCr JPEG decoded at full size);
the bytes then go to DALI a batch at a time: an external source feeding ``fn.decoders.image``,
on the GPU ("mixed": the GPU backend, CuPy arrays) or on the CPU (NumPy arrays). Grey JPEGs give
L, YCbCr ones RGB, and the EXIF orientation is applied here, once (``adjust_orientation`` off), so
the shapes and modes are ``codecs.decode``'s. On the CPU DALI's pixels are libjpeg-turbo's, equal
to the default decoder's (tests/codecs/test_dali.py).

A batch DALI cannot decode fails as a whole, and leaves its pipeline unusable: the pipeline is
built again and the batch split in halves until the file that fails is alone; that file is then
decoded on the host (``DeferredJpeg.decode_on_host``), which fails it with its class (truncated,
corrupt) or, where the host can decode it, gives its pixels. Like nvJPEG, DALI decodes JPEGs whose
entropy-coded data is corrupt into noise (libjpeg-turbo's warnings on stderr) where the default
decoder's strict mode fails them: one reason it is opt-in.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .decoding import DeferredJpeg
from .orientation import _orient

MAX_BATCH = 64                        # images per DALI run (its pipelines have a fixed largest batch)


def dali_unavailable_reason() -> str | None:
    """Why DALI cannot decode here, or None when it is installed. Found, not imported: the run's own
    process forks its workers, and DALI's libraries (threads, CUDA) stay out of it; a worker that
    then cannot start DALI says why."""
    import importlib.util
    try:
        found = importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):
        found = False
    return None if found else "NVIDIA DALI is not installed: pip install 'gpupipe[dali]'"


def dali_version() -> str | None:
    """The installed DALI's version (from its package metadata, without importing it)."""
    from importlib.metadata import PackageNotFoundError, version
    for dist in ("nvidia-dali-cuda120", "nvidia-dali-cuda130", "nvidia-dali-cuda110"):
        try:
            return version(dist)
        except PackageNotFoundError:
            pass
    return None


class DaliDecoder:
    """Batched JPEG decode with DALI on ``device`` "cpu" (NumPy arrays) or "mixed" (CuPy arrays on
    GPU ``device_id``); ``decode`` gives each item's upright pixels, or None where DALI failed."""

    def __init__(self, device: str = "cpu", cupy: Any = None, device_id: int | None = None) -> None:
        self.device, self.cp = device, cupy
        self.device_id = device_id if device == "mixed" else None
        self._pipelines: dict[int, Any] = {}
        self._pipeline(3)                 # fail here, when the backend starts, if DALI cannot run

    def close(self) -> None:
        self._pipelines.clear()

    def _pipeline(self, channels: int):
        """The built pipeline for JPEGs of 1 (grey) or 3 channels, made when first needed."""
        pipe = self._pipelines.get(channels)
        if pipe is None:
            from nvidia.dali import fn, pipeline_def, types

            @pipeline_def(batch_size=MAX_BATCH, num_threads=1, device_id=self.device_id, exec_async=False,
                          exec_pipelined=False, prefetch_queue_depth=1)
            def jpegs():
                data = fn.external_source(name="jpegs", dtype=types.UINT8, ndim=1)
                return fn.decoders.image(data, device=self.device, adjust_orientation=False,
                                         output_type=types.GRAY if channels == 1 else types.RGB)

            pipe = self._pipelines[channels] = jpegs()
            pipe.build()
        return pipe

    def decode(self, items: Sequence[DeferredJpeg], stream: Any = None) -> list:
        """Upright C-contiguous uint8 HWC arrays in ``items``' order (CuPy arrays on the GPU, ready
        when this returns); None for an item DALI could not decode or gave another shape than its
        header said (the caller decodes those on the host)."""
        out: list = [None] * len(items)
        for channels in (1, 3):
            group = [i for i, item in enumerate(items) if item.shape[2] == channels]
            for start in range(0, len(group), MAX_BATCH):
                part = group[start:start + MAX_BATCH]
                for i, pixels in zip(part, self._isolating([items[i] for i in part], channels)):
                    if pixels is not None:
                        pixels = _orient(pixels, items[i].orientation, xp=self.cp if self.device == "mixed" else np)
                        out[i] = pixels if pixels.shape == items[i].shape else None
        return out

    def _isolating(self, items: list[DeferredJpeg], channels: int) -> list:
        """Each item's pixels; a failed batch is split until each failure is alone (None)."""
        try:
            return self._run(items, channels)
        except RuntimeError:                   # DALI's "Critical error in pipeline": the pipeline is spent
            self._pipelines.pop(channels, None)
            if len(items) == 1:
                return [None]
            half = len(items) // 2
            return self._isolating(items[:half], channels) + self._isolating(items[half:], channels)

    def _run(self, items: list[DeferredJpeg], channels: int) -> list:
        pipe = self._pipeline(channels)
        pipe.feed_input("jpegs", [np.frombuffer(item.data, np.uint8) for item in items])
        decoded, = pipe.run()
        if self.device == "mixed":
            self.cp.cuda.runtime.deviceSynchronize()        # DALI's stream is not CuPy's: its work is done
            # DALI reuses its output buffers on the next run: each image gets its own copy
            return [self._grey_axis(self.cp.array(decoded.at(k), copy=True)) for k in range(len(items))]
        return [self._grey_axis(np.array(decoded.at(k))) for k in range(len(items))]

    @staticmethod
    def _grey_axis(pixels):
        return pixels if pixels.ndim == 3 else pixels[:, :, None]
