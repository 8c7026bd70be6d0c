"""Watermarks for the NumPy (CPU) backend: placement, text/image marks, alpha blend.

Blend contract (docs/design.md §4), in float32 on straight (unpremultiplied) colour, with
``a = mark_alpha * opacity / 255``::

    out_colour = base * (1 - a) + mark * a
    out_alpha  = base_alpha + a * (max - base_alpha)        (bases with alpha)

Marks are RGBA uint8; on a 16-bit base their colour is first scaled by 257 (``max`` is
65535 there, 255 on 8-bit bases). For L/LA bases the mark colour is then converted to luma
0.299 R + 0.587 G + 0.114 B (kept in float). A mark reaching past the image is clipped. Rendered text, loaded and scaled marks are cached and returned as
read-only arrays so a caller cannot corrupt the cache.
"""

from __future__ import annotations

import functools
import io
import math
import operator
import os
from typing import TYPE_CHECKING

import numpy as np

from gpupipe import digests, pixels
from gpupipe.backends.numpy import resample
from gpupipe.errors import ProcessingError, UsageError
from gpupipe.sidefiles import read_resource

if TYPE_CHECKING:
    from PIL import ImageFont

POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center", "tile")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_CACHE_SIZE = 32


# --- validation --------------------------------------------------------------

def _int(name: str, value, minimum: int) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise ProcessingError(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or v < minimum:
        raise ProcessingError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return v


def _check_mark(mark: np.ndarray) -> None:
    if not isinstance(mark, np.ndarray) or mark.dtype != np.uint8 or mark.ndim != 3 \
            or mark.shape[2] != 4 or 0 in mark.shape:
        raise ProcessingError("watermark mark must be a non-empty RGBA uint8 array (h, w, 4)")


def _read_only(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


# --- placement ---------------------------------------------------------------

def placements(W: int, H: int, w: int, h: int, position: str = "bottom-right",
               margin: int = 16) -> list[tuple[int, int]]:
    """Top-left (x, y) of every copy of a w x h mark on a W x H image (may lie partly outside)."""
    W, H, w, h = (_int(n, v, 1) for n, v in (("W", W), ("H", H), ("w", w), ("h", h)))
    m = _int("margin", margin, 0)
    right, bottom = W - w - m, H - h - m
    fixed = {
        "top-left": (m, m),
        "top-right": (right, m),
        "bottom-left": (m, bottom),
        "bottom-right": (right, bottom),
        "center": ((W - w) // 2, (H - h) // 2),
    }
    if position in fixed:
        return [fixed[position]]
    if position == "tile":
        return [(x, y) for y in range(m, H, h + m) for x in range(m, W, w + m)]
    raise ProcessingError(f"watermark position must be one of {', '.join(POSITIONS)}; got {position!r}")


def default_text_size(W: int, H: int) -> int:
    """Default text watermark size: 4 % of the shorter side, at least 12 px."""
    return max(12, round(0.04 * min(W, H)))


# --- marks ---------------------------------------------------------------------

def mark_for(op, width: int, height: int) -> np.ndarray:
    """The RGBA mark a Watermark op puts on a width x height image (every backend uses this);
    cached, so images of one size share one mark object."""
    if op.text is not None:
        size = op.size or default_text_size(width, height)
        return render_text(op.text, size, op.color[:3], op.font)
    mark = load_mark(op.image)
    if op.scale is not None:
        mark = scale_mark(mark, max(1, round(width * op.scale)))
    return mark


def _resource(path: str, what: str) -> bytes:
    """The file's bytes, read as every resource is (a regular file, opened non-blocking: a FIFO
    swapped in mid-run cannot hang a worker); a problem fails the input that needed it."""
    try:
        return read_resource(path, what)
    except UsageError as e:
        raise ProcessingError(str(e)) from None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _font(font: str | None, size: int) -> ImageFont.FreeTypeFont:
    from PIL import ImageFont       # FreeType loads for text marks only (4-7 ms of every run's start)
    if font is None:
        return ImageFont.load_default(size=size)
    try:
        return ImageFont.truetype(io.BytesIO(_resource(font, "watermark font")), size)
    except OSError as e:
        raise ProcessingError(f"cannot load font {font!r}: {e}") from None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _render_text(text: str, size: int, color: tuple[int, int, int], font: str | None) -> np.ndarray:
    from PIL import Image, ImageDraw     # Pillow's imaging only for marks: a run without one never loads it
    pil_font = _font(font, size)
    # textbbox (multi-line aware) is the ink box at this origin; drawing at -left,-top
    # puts it at the canvas corner, so no glyph is clipped and no empty border is kept.
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=pil_font)
    if right <= left or bottom <= top:
        raise ProcessingError(f"watermark text {text!r} renders no pixels")
    mask = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, font=pil_font, fill=255)
    out = np.empty((mask.height, mask.width, 4), np.uint8)
    out[..., :3] = color
    out[..., 3] = np.asarray(mask)
    return _read_only(out)


def render_text(text: str, size: int, color=(255, 255, 255), font=None) -> np.ndarray:
    """Text as a tight RGBA mark (constant colour, glyph coverage in alpha); cached, read-only."""
    if not isinstance(text, str) or not text:
        raise ProcessingError("watermark text must be a non-empty string")
    size = _int("text size", size, 1)
    try:
        rgb = tuple(operator.index(c) for c in color)
    except TypeError:
        raise ProcessingError(f"text colour must be 3 integers 0-255, got {color!r}") from None
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ProcessingError(f"text colour must be 3 integers 0-255, got {color!r}")
    return _render_text(text, size, rgb, None if font is None else os.fspath(font))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _load_mark(path: str, mtime_ns: int, size: int) -> np.ndarray:
    from PIL import Image, ImageOps
    try:
        with Image.open(io.BytesIO(_resource(path, "watermark image"))) as im:
            rgba = ImageOps.exif_transpose(im).convert("RGBA")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ProcessingError(f"cannot read watermark image {path!r}: {e}") from None
    return _read_only(np.array(rgba, np.uint8))


def load_mark(path) -> np.ndarray:
    """Any Pillow-readable image as an RGBA mark; cached by path and mtime, read-only."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except OSError as e:
        raise ProcessingError(f"cannot read watermark image {p!r}: {e.strerror}") from None
    return _load_mark(p, st.st_mtime_ns, st.st_size)


class _ArrayKey:
    """Hashable by content, so a mark can key an lru_cache (marks are small: hashing is cheap)."""

    __slots__ = ("array", "_digest")

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self._digest = (array.shape, digests.blake2b(np.ascontiguousarray(array).data, digest_size=16).digest())

    def __hash__(self) -> int:
        return hash(self._digest)

    def __eq__(self, other) -> bool:
        return isinstance(other, _ArrayKey) and self._digest == other._digest


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _scale_mark(key: _ArrayKey, width: int) -> np.ndarray:
    mark = key.array
    h, w = mark.shape[:2]
    height = max(1, round(h * width / w))       # h at the mark's own width: resize then copies it
    # the resize op's own resampling: premultiplied, so transparent pixels lend no colour to the taps
    return _read_only(resample.resize(mark, width, height, "lanczos3"))


def scale_mark(mark: np.ndarray, width: int) -> np.ndarray:
    """Resize an RGBA mark to a width, aspect kept (Lanczos on premultiplied RGBa); cached, read-only."""
    _check_mark(mark)
    return _scale_mark(_ArrayKey(mark), _int("mark width", width, 1))


# --- blending --------------------------------------------------------------------

def _blend(base: np.ndarray, mark: np.ndarray, opacity: np.float32) -> np.ndarray:
    """Blend an RGBA mark region over a same-sized base region (see module docstring)."""
    a = mark[..., 3:].astype(np.float32) * opacity / np.float32(255)  # 255 * 1 / 255 == 1 exactly
    colour = mark[..., :3].astype(np.float32)
    if base.dtype != np.uint8:
        colour *= np.float32(pixels.value_scale(base.dtype))
    top = np.float32(pixels.maximum(base.dtype))
    n = base.shape[2] - (base.shape[2] in (2, 4))  # colour channels of the base
    if n == 1:
        # Left to right, like the CUDA kernel: a BLAS matmul may sum in any order.
        colour = colour[..., 0:1] * _LUMA[0] + colour[..., 1:2] * _LUMA[1] + colour[..., 2:3] * _LUMA[2]
    b = base[..., :n].astype(np.float32)
    out = np.empty(base.shape, base.dtype)
    out[..., :n] = pixels.store(b * (1 - a) + colour * a, base.dtype)
    if n != base.shape[2]:
        ab = base[..., n:].astype(np.float32)
        out[..., n:] = pixels.store(ab + a * (top - ab), base.dtype)
    return out


def watermark(img: np.ndarray, mark: np.ndarray, position: str = "bottom-right",
              margin: int = 16, opacity: float = 0.5) -> np.ndarray:
    """Alpha-blend an RGBA mark onto img at the given position(s); returns a new array."""
    pixels.check(img, "watermark")
    _check_mark(mark)
    try:
        op = float(opacity)
    except (TypeError, ValueError):
        raise ProcessingError(f"opacity must be a number in [0, 1], got {opacity!r}") from None
    if not (math.isfinite(op) and 0 <= op <= 1):
        raise ProcessingError(f"opacity must be in [0, 1], got {opacity!r}")
    H, W = img.shape[:2]
    h, w = mark.shape[:2]
    spots = placements(W, H, w, h, position, margin)  # validates position and margin
    out = np.array(img, order="C")
    if op == 0 or not spots:
        return out
    if position == "tile":
        # One vectorised blend: lay the mark (plus its margin gap) out as a tiled layer.
        m = int(margin)
        cell = np.zeros((h + m, w + m, 4), np.uint8)
        cell[:h, :w] = mark
        reps = (-(-(H - m) // (h + m)), -(-(W - m) // (w + m)), 1)
        layer = np.tile(cell, reps)[: H - m, : W - m]
        out[m:, m:] = _blend(out[m:, m:], layer, np.float32(op))
        return out
    (x, y), = spots
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x0 < x1 and y0 < y1:
        out[y0:y1, x0:x1] = _blend(out[y0:y1, x0:x1], mark[y0 - y:y1 - y, x0 - x:x1 - x], np.float32(op))
    return out
