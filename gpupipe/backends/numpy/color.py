"""Colour ops for the NumPy backend: grayscale, brightness, contrast, (un)premultiply.

Contract (docs/design.md §4): arithmetic in float32, results stored with
round-half-to-even and clamping, ``np.clip(np.rint(x), 0, 255).astype(np.uint8)``.
Colour ops touch colour channels only; alpha (the last channel of LA/RGBA) is
carried through unchanged.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from gpupipe.errors import ProcessingError

__all__ = ["brightness", "contrast", "grayscale", "luma", "premultiply", "unpremultiply"]

# ITU-R BT.601 luma weights, as float32 so every backend multiplies the same numbers.
LUMA_WEIGHTS = (np.float32(0.299), np.float32(0.587), np.float32(0.114))


def _check_image(img: np.ndarray, op: str, dtype=np.uint8) -> None:
    """Raise ProcessingError unless img is an HWC array of dtype with 1-4 channels."""
    if not isinstance(img, np.ndarray) or img.dtype != dtype or img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4):
        raise ProcessingError(f"{op} needs a {np.dtype(dtype).name} HWC array with 1, 2, 3 or 4 channels")


def _store(x: np.ndarray) -> np.ndarray:
    """float32 -> uint8 with round-half-to-even and clamping (the contract's store)."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _number(value, what: str) -> float:
    """A finite real number, else ProcessingError."""
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not real or not math.isfinite(value):
        raise ProcessingError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 1) luma of the first three channels: 0.299 R + 0.587 G + 0.114 B in float32."""
    wr, wg, wb = LUMA_WEIGHTS
    # Channel by channel, left to right, so the float32 rounding is fixed (a
    # CUDA kernel computes the same expression) and no (H, W, 3) float copy is made.
    y = rgb[..., 0:1].astype(np.float32) * wr
    y += rgb[..., 1:2].astype(np.float32) * wg
    y += rgb[..., 2:3].astype(np.float32) * wb
    return _store(y)


def grayscale(img: np.ndarray) -> np.ndarray:
    """RGB -> L (1 channel), RGBA -> LA (alpha kept); L and LA come back as copies."""
    _check_image(img, "grayscale")
    channels = img.shape[2]
    if channels <= 2:
        return img.copy()
    y = luma(img)
    if channels == 3:
        return y
    return np.concatenate([y, img[..., 3:4]], axis=2)


def _apply_to_colour(img: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map colour channels through a 256-entry uint8 table, alpha untouched."""
    # cv2.LUT is a SIMD table lookup, ~10x numpy's fancy indexing on a 12 MP photo.
    flat = np.ascontiguousarray(img).reshape(img.shape[0], -1)
    out = cv2.LUT(flat, lut).reshape(img.shape)
    if img.shape[2] in (2, 4):
        out[..., -1] = img[..., -1]
    return out


def _table(fn) -> np.ndarray:
    """256-entry uint8 lookup table of a float32 per-value function, stored by the contract."""
    # These ops are functions of one uint8 value, so evaluating the float32
    # formula on all 256 values gives bit-identical results to evaluating it per
    # pixel, at the cost of one gather.
    return _store(fn(np.arange(256, dtype=np.float32)))


def brightness(img: np.ndarray, value: float) -> np.ndarray:
    """Add value (in [-255, 255]) to the colour channels, clamped to 0..255."""
    _check_image(img, "brightness")
    value = _number(value, "brightness value")
    if not -255 <= value <= 255:
        raise ProcessingError(f"brightness value must be in [-255, 255], got {value}")
    offset = np.float32(value)
    return _apply_to_colour(img, _table(lambda x: x + offset))


def contrast(img: np.ndarray, factor: float) -> np.ndarray:
    """(x - 128) * factor + 128 on the colour channels, clamped; factor >= 0."""
    _check_image(img, "contrast")
    factor = _number(factor, "contrast factor")
    if factor < 0:
        raise ProcessingError(f"contrast factor must be >= 0, got {factor}")
    f = np.float32(factor)
    return _apply_to_colour(img, _table(lambda x: (x - np.float32(128)) * f + np.float32(128)))


def premultiply(img: np.ndarray) -> np.ndarray:
    """uint8 HWC -> float32 HWC with colour * alpha / 255 (alpha kept); 1 or 3 channels just convert."""
    _check_image(img, "premultiply")
    out = img.astype(np.float32)
    if img.shape[2] in (2, 4):
        # colour * alpha is exact in float32 (<= 65025); one rounding in the division.
        out[..., :-1] *= out[..., -1:]
        out[..., :-1] /= np.float32(255)
    return out


def unpremultiply(img: np.ndarray) -> np.ndarray:
    """float32 HWC -> uint8: colour * 255 / alpha where alpha > 0, else 0; stored by the contract."""
    _check_image(img, "unpremultiply", np.float32)
    out = img.copy()
    if img.shape[2] in (2, 4):
        colour, alpha = out[..., :-1], img[..., -1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            # Fully transparent pixels have no colour to recover: 0.
            colour[...] = np.where(alpha > 0, colour * np.float32(255) / alpha, np.float32(0))
    return _store(out)
