"""Colour ops for the NumPy backend: grayscale, brightness, contrast.

Contract (docs/design.md §4): arithmetic in float32, results stored with
round-half-to-even and clamping to the image's depth (``pixels.store``). Values given on
the 0-255 scale (brightness, contrast's midpoint 128) are scaled by 257 on 16-bit images
(``pixels.value_scale``). Colour ops touch colour channels only; alpha (the last channel
of LA/RGBA) is carried through unchanged.
"""

from __future__ import annotations

import math

import numpy as np

from gpupipe import pixels
from gpupipe.errors import ProcessingError

__all__ = ["brightness", "brightness_table", "contrast", "contrast_table", "grayscale", "luma"]

# ITU-R BT.601 luma weights, as float32 so every backend multiplies the same numbers.
LUMA_WEIGHTS = (np.float32(0.299), np.float32(0.587), np.float32(0.114))


def _number(value, what: str) -> float:
    """A finite real number, else ProcessingError."""
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not real or not math.isfinite(value):
        raise ProcessingError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 1) luma of the first three channels, at their depth: 0.299 R + 0.587 G + 0.114 B in float32."""
    wr, wg, wb = LUMA_WEIGHTS
    # Channel by channel, left to right, so the float32 rounding is fixed (a
    # CUDA kernel computes the same expression) and no (H, W, 3) float copy is made.
    y = rgb[..., 0:1].astype(np.float32) * wr
    y += rgb[..., 1:2].astype(np.float32) * wg
    y += rgb[..., 2:3].astype(np.float32) * wb
    return pixels.store(y, rgb.dtype)


def grayscale(img: np.ndarray) -> np.ndarray:
    """RGB -> L (1 channel), RGBA -> LA (alpha kept); L and LA come back as copies."""
    pixels.check(img, "grayscale")
    channels = img.shape[2]
    if channels <= 2:
        return img.copy()
    y = luma(img)
    if channels == 3:
        return y
    return np.concatenate([y, img[..., 3:4]], axis=2)


def _per_value(img: np.ndarray, op) -> np.ndarray:
    """``op`` on every value of ``img`` seen as one plane of rows (OpenCV's calls take at most 4
    channels), then the alpha put back untouched: what colour-only per-value ops share."""
    out = op(np.ascontiguousarray(img).reshape(img.shape[0], -1)).reshape(img.shape)
    if img.shape[2] in (2, 4):
        out[..., -1] = img[..., -1]
    return out


def _apply_to_colour(img: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map colour channels through a table of every value of the image's depth, alpha untouched."""
    if img.dtype == np.uint8:
        # cv2.LUT is a SIMD table lookup, ~10x numpy's fancy indexing on a 12 MP photo. Imported
        # here: a run whose ops need no OpenCV never loads it (filters.py).
        import cv2
        return _per_value(img, lambda flat: cv2.LUT(flat, lut))
    return _per_value(img, lambda flat: lut[flat])      # cv2.LUT takes 8-bit indices only


def _table(fn, dtype) -> np.ndarray:
    """Lookup table of a float32 per-value function on every value of the depth, stored by the contract."""
    # These ops are functions of one value, so evaluating the float32 formula on all 256 (or
    # 65536) values gives bit-identical results to evaluating it per pixel, at the cost of one gather.
    return pixels.store(fn(np.arange(pixels.maximum(dtype) + 1, dtype=np.float32)), dtype)


def _brightness_offset(value: float, dtype) -> np.float32:
    """What brightness adds at the depth: value on the 0-255 scale, scaled by the depth, in float32."""
    return np.float32(value) * np.float32(pixels.value_scale(dtype))


def brightness_table(value: float, dtype) -> np.ndarray:
    """x + value on every value of the depth (value on the 0-255 scale, scaled by the depth)."""
    offset = _brightness_offset(value, dtype)
    return _table(lambda x: x + offset, dtype)


def contrast_table(factor: float, dtype) -> np.ndarray:
    """(x - 128) * factor + 128 on every value of the depth (128 scaled by the depth)."""
    f, middle = np.float32(factor), np.float32(128) * np.float32(pixels.value_scale(dtype))
    return _table(lambda x: (x - middle) * f + middle, dtype)


def brightness(img: np.ndarray, value: float) -> np.ndarray:
    """Add value (in [-255, 255], scaled by the depth) to the colour channels, clamped."""
    pixels.check(img, "brightness")
    value = _number(value, "brightness value")
    if not -255 <= value <= 255:
        raise ProcessingError(f"brightness value must be in [-255, 255], got {value}")
    offset = _brightness_offset(value, img.dtype)
    if offset.is_integer() and img.size > 4:     # OpenCV's binding takes up to 4 values for a scalar
        return _add_to_colour(img, int(offset))
    return _apply_to_colour(img, brightness_table(value, img.dtype))


def _add_to_colour(img: np.ndarray, offset: int) -> np.ndarray:
    """A whole offset added to the colour channels, clamped, alpha untouched: the bytes of its table
    (x + offset is whole, nothing to round), in one saturating add instead of a lookup per value
    (a 12 MP photo: 10.5 -> 2.7 ms)."""
    import cv2
    return _per_value(img, lambda flat: cv2.add(flat, float(offset)))    # one channel: to every value


def contrast(img: np.ndarray, factor: float) -> np.ndarray:
    """(x - 128) * factor + 128 on the colour channels (128 scaled by the depth), clamped; factor >= 0."""
    pixels.check(img, "contrast")
    factor = _number(factor, "contrast factor")
    if factor < 0:
        raise ProcessingError(f"contrast factor must be >= 0, got {factor}")
    return _apply_to_colour(img, contrast_table(factor, img.dtype))
