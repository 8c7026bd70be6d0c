"""The pixel contract: what an image is between decode and encode.

An image is a C-contiguous HWC NumPy array of ``uint8`` or ``uint16`` with 1 (L), 2 (LA),
3 (RGB) or 4 (RGBA) channels; alpha, where there is one, is the last channel. 16-bit PNG and
TIFF inputs (and 16-bit DICOM, RAW, HEIF) stay 16-bit through every op and are written 16-bit
where the output format holds it; ``to_8bit`` reduces them, rounding, where it does not.

Op parameters that are pixel values (brightness, a convolution's offset, unsharp's threshold,
a pad background, a watermark's colour) are given on the 0-255 scale whatever the depth, and
scaled by ``value_scale`` (257 = 65535 / 255) on 16-bit images: the same spec gives the same
picture at either depth.
"""

from __future__ import annotations

import numpy as np

from .errors import ProcessingError

DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
CHANNELS = (1, 2, 3, 4)
MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def check(img, what: str) -> None:
    """ProcessingError unless ``img`` follows the contract (``what`` names the op for the message)."""
    if not isinstance(img, np.ndarray) or img.dtype not in DTYPES or img.ndim != 3 \
            or img.shape[2] not in CHANNELS or img.shape[0] < 1 or img.shape[1] < 1:
        got = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ProcessingError(f"{what} needs a non-empty uint8 or uint16 HWC array with 1, 2, 3 or 4 channels, "
                              f"got {got}")


def maximum(dtype) -> int:
    """The largest value of a depth: 255 or 65535."""
    return 65535 if np.dtype(dtype) == np.uint16 else 255


def value_scale(dtype) -> int:
    """What a value given on the 0-255 scale is multiplied by at this depth: 1 or 257."""
    return 257 if np.dtype(dtype) == np.uint16 else 1


def store(x: np.ndarray, dtype) -> np.ndarray:
    """float -> ``dtype`` with round-half-to-even and clamping: ``clip(rint(x), 0, max)``."""
    return np.clip(np.rint(x), 0, maximum(dtype)).astype(dtype)


def to_8bit(a: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 as ``round(v * 255 / 65535)``, exactly: v / 257 never lands on .5 (257 is
    odd), so ``(v + 128) // 257`` is the rounded value. uint8 comes back as it is."""
    if a.dtype == np.uint8:
        return a
    return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)


def to_16bit(a: np.ndarray) -> np.ndarray:
    """uint8 -> uint16 as ``v * 257`` (0 -> 0, 255 -> 65535); uint16 comes back as it is."""
    if a.dtype == np.uint16:
        return a
    return a.astype(np.uint16) * np.uint16(257)
