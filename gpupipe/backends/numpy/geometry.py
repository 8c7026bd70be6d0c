"""Geometry ops for the NumPy backend: crop, center_crop, rotate, flip, pad.

All are pure pixel moves on HWC arrays of either depth (no resampling), so the CUDA
backend must match them exactly. Each returns a new C-contiguous array; slicing
alone would return a view that aliases the input.
"""

from __future__ import annotations

import numpy as np

from gpupipe import pixels
from gpupipe.errors import ProcessingError

from .color import luma

__all__ = ["center_crop", "crop", "flip", "pad", "rotate"]


def _int(value, what: str) -> int:
    """The value as an int; ProcessingError for bools, floats and the like."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ProcessingError(f"{what} must be an integer, got {value!r}")
    return int(value)


def crop(img: np.ndarray, x: int, y: int, width: int, height: int) -> np.ndarray:
    """The width x height rectangle whose top-left corner is (x, y); it must lie inside the image."""
    pixels.check(img, "crop")
    x, y = _int(x, "crop x"), _int(y, "crop y")
    width, height = _int(width, "crop width"), _int(height, "crop height")
    img_h, img_w = img.shape[:2]
    if width < 1 or height < 1:
        raise ProcessingError(f"crop size must be at least 1x1, got {width}x{height}")
    if x < 0 or y < 0 or x + width > img_w or y + height > img_h:
        raise ProcessingError(
            f"crop {width}x{height} at ({x}, {y}) lies outside the {img_w}x{img_h} image"
        )
    return img[y:y + height, x:x + width].copy()


def center_crop(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """The centred width x height rectangle, offset ((W - w) // 2, (H - h) // 2)."""
    pixels.check(img, "center_crop")
    width, height = _int(width, "center_crop width"), _int(height, "center_crop height")
    img_h, img_w = img.shape[:2]
    if width > img_w or height > img_h:
        raise ProcessingError(f"center_crop {width}x{height} does not fit in the {img_w}x{img_h} image")
    return crop(img, (img_w - width) // 2, (img_h - height) // 2, width, height)


def rotate(img: np.ndarray, degrees: int) -> np.ndarray:
    """Rotate clockwise by 90, 180 or 270 degrees (90 and 270 swap width and height)."""
    pixels.check(img, "rotate")
    if isinstance(degrees, bool) or degrees not in (90, 180, 270):
        raise ProcessingError(f"rotate takes 90, 180 or 270 degrees, got {degrees!r}")
    # np.rot90 turns counter-clockwise for positive k in the (row, column) plane.
    turns = {90: -1, 180: 2, 270: 1}[int(degrees)]
    return np.ascontiguousarray(np.rot90(img, turns, axes=(0, 1)))


def flip(img: np.ndarray, direction: str) -> np.ndarray:
    """Mirror left-right ("horizontal") or top-bottom ("vertical")."""
    pixels.check(img, "flip")
    if direction == "horizontal":
        return np.ascontiguousarray(img[:, ::-1])
    if direction == "vertical":
        return np.ascontiguousarray(img[::-1])
    raise ProcessingError(f"flip takes horizontal or vertical, got {direction!r}")


def fill_value(background, channels: int, dtype=np.uint8) -> np.ndarray:
    """Per-channel fill of an (r, g, b, a) background (0-255, scaled by the depth) in an image with
    ``channels`` channels of ``dtype``."""
    try:
        values = tuple(background)
    except TypeError:
        values = ()
    if len(values) != 4 or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= 255 for v in values
    ):
        raise ProcessingError(f"pad background must be (r, g, b, a) integers 0-255, got {background!r}")
    r, g, b, a = (int(v) * pixels.value_scale(dtype) for v in values)
    # Grey images take the background's luma, computed as grayscale() would at this depth.
    grey = int(luma(np.array([[[r, g, b]]], dtype))[0, 0, 0])
    colour = {1: [grey], 2: [grey, a], 3: [r, g, b], 4: [r, g, b, a]}[channels]
    return np.array(colour, dtype)


def pad(img: np.ndarray, width: int, height: int, left: int, top: int, background) -> np.ndarray:
    """Place img at (left, top) on a width x height canvas filled with the (r, g, b, a) background."""
    pixels.check(img, "pad")
    width, height = _int(width, "pad width"), _int(height, "pad height")
    left, top = _int(left, "pad left"), _int(top, "pad top")
    img_h, img_w, channels = img.shape
    if left < 0 or top < 0 or left + img_w > width or top + img_h > height:
        raise ProcessingError(
            f"a {img_w}x{img_h} image at ({left}, {top}) does not fit on a {width}x{height} canvas"
        )
    canvas = np.empty((height, width, channels), img.dtype)
    canvas[...] = fill_value(background, channels, img.dtype)
    canvas[top:top + img_h, left:left + img_w] = img
    return canvas
