"""The backend interface: what the engine asks of an array library.

The engine hands a backend *batches* — lists of HWC uint8 host images of any
sizes — and walks the op chain on them: ``upload`` once, ``apply`` per op,
``download`` the leaves. A NumPy batch is just the list; a CuPy batch is one
packed device buffer with per-image descriptors, so each op is one kernel launch
per batch. Ops arrive already checked against every image's size (the engine
runs ``Op.output_size`` first), so ``apply`` never meets an op that cannot apply.

Backends declare how they like to be fed (``max_batch_images``,
``max_batch_pixels``): the engine's workers gather a batch that size from their
chunk (the CPU: one image; a GPU: dozens), which is all it needs to know.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Sequence

from ..ops import Op

if TYPE_CHECKING:                       # the run's own process chooses a backend without NumPy
    import numpy as np

    from ..codecs import EncodedImage

Batch = Any   # backend-specific: list of arrays (numpy), packed device buffer (cupy)


class Backend(ABC):
    name: str = "?"
    max_batch_images: int = 1
    max_batch_pixels: int = 64 * 2**20
    # True when ``upload`` takes ``codecs.DeferredJpeg`` items and decodes them itself (nvJPEG, DALI);
    # the engine then leaves those JPEGs undecoded. Other backends never receive one.
    decodes_jpeg: bool = False
    # What decodes the JPEGs the engine decodes on the host: "turbo" (libjpeg-turbo, Pillow for the
    # kinds it lacks) or "pillow" (--decoder pillow).
    host_decoder: str = "turbo"
    # True when ``encode_jpeg`` makes JPEG files where the pixels are (nvJPEG): the engine then
    # downloads only the results that must be encoded on the host.
    encodes_jpeg: bool = False

    @abstractmethod
    def upload(self, images: Sequence[np.ndarray]) -> Batch:
        """Take host images (HWC uint8) into the backend's own memory."""

    @abstractmethod
    def apply(self, batch: Batch, op: Op) -> Batch:
        """Run one op on every image of the batch, returning a new batch (inputs untouched)."""

    @abstractmethod
    def download(self, batch: Batch) -> list[np.ndarray]:
        """Host copies of the batch's images, in order."""

    def encode_jpeg(self, batch: Batch, positions: Sequence[int], quality: int) -> list[EncodedImage | None]:
        """JPEG files (``quality``, 4:2:0 as ``codecs.encode``) of the images at ``positions``, made
        where they are; None for each one left to the host (alpha images, refusals). Asked only
        when ``encodes_jpeg``; this default leaves every image to the host."""
        return [None] * len(positions)

    def subset(self, batch: Batch, indices: Sequence[int]) -> Batch:
        """The images at ``indices`` (some variants cannot apply to every image)."""
        return [batch[i] for i in indices]

    def device_memory(self) -> dict[str, int] | None:
        """Device memory in use and its cap, in bytes, for metrics; None on the host."""
        return None

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Release device memory, streams and pools."""
