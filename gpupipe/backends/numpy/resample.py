"""Resize for the NumPy backend: Pillow's resampling, bit-exactly.

Decision: ``resize`` *is* Pillow's ``Image.resize`` algorithm (Resample.c), so the
CPU backend, the reference below and the CUDA kernel all produce the same bytes. The algorithm, per axis:

* separable, pixel centres aligned: output pixel ``i`` is centred on input
  coordinate ``(i + 0.5) * scale`` with ``scale = in_size / out_size``;
* antialiased when shrinking: the filter's support is multiplied by
  ``max(scale, 1)`` and its argument divided by the same factor;
* the float64 weights of each output pixel are normalised to sum 1, then turned
  into fixed-point int32 with ``PRECISION_BITS = 22`` fraction bits;
* two passes with a uint8 intermediate, each computing
  ``clip((2**21 + sum(px * k)) >> 22, 0, 255)``; an axis whose size does not
  change is skipped. Horizontal first (over only the rows the vertical pass
  reads), except that Pillow >= 13 runs the vertical pass first when the height
  shrinks by more than twice as many pixels as the width:
  ``out_h < in_h and in_h - out_h > 2 * (in_w - out_w)``. (Pillow PR #9549; the
  rule was measured against Pillow 13.0.0 rather than read from its source;
  the tests pin it.) The order matters: it moves some pixels by one level;
* LA / RGBA with a filter other than nearest are resized premultiplied, exactly
  as ``Image.resize`` does (convert to La/RGBa, resize, convert back), so
  transparent pixels leave no dark halo;
* nearest is Pillow's affine nearest-neighbour scaler (no premultiplication):
  ``src = int(x_i)`` with ``x_0 = scale / 2`` and ``x_{i+1} = x_i + scale``
  accumulated in float64;
* resizing to the same size returns a copy.

``resize`` runs the algorithm in C (``_resample.c``): the same integer arithmetic, with loops
a compiler vectorises, 4-5x faster than Pillow's own passes (an ImageNet photo to a 256
thumbnail: 0.6 against 2.6 ms), and it releases the GIL. It resizes 16-bit images too, with
``resize_reference``'s bytes (30-50x faster than that NumPy model). The C module also computes the
coefficient tables (``resample_coefficients``) that ``resize_reference`` and the CUDA backend
consume, so every backend resamples with one set of weights. Pillow itself is the oracle the
tests compare all of them with, byte for byte. ``resize_reference`` re-implements the passes in
NumPy with identical integer arithmetic; ``premultiply`` / ``unpremultiply`` are the alpha steps.

16-bit images (which Pillow cannot resize in colour) follow Pillow's rule at 16 bits: the same
tables and passes in int64, each pass storing ``clip((2**21 + sum) >> 22, 0, 65535)`` into a
uint16 intermediate, with alpha premultiplied as ``round(c * a / 65535)`` and unpremultiplied
as ``min(65535, 65535 * c // a)`` (kept for alpha 0 or 65535): Pillow's rules at 16 bits.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import __version__ as _PIL_VERSION

from gpupipe import pixels
from gpupipe.backends.numpy import _resample
from gpupipe.errors import ProcessingError

__all__ = [
    "FILTERS",
    "PRECISION_BITS",
    "VERTICAL_FIRST_RULE",
    "premultiply",
    "resample_coefficients",
    "resize",
    "resize_reference",
    "unpremultiply",
    "vertical_first",
]

FILTERS = ("nearest", "bilinear", "bicubic", "lanczos3")

# Fixed-point fraction bits of the coefficients: 32 - 8 (pixel) - 2 (overshoot of
# negative lobes), as in Resample.c. A pass adds 1 << 21 so >> 22 rounds half up.
PRECISION_BITS = 32 - 8 - 2

# Pillow 13 changed the pass order for images whose height shrinks much more
# than their width (see the module docstring); earlier versions always go
# horizontal first. The reference follows the installed Pillow.
VERTICAL_FIRST_RULE = int(_PIL_VERSION.split(".")[0]) >= 13


def _check(img: np.ndarray, width: int, height: int, filter: str) -> None:
    """Raise ProcessingError for an unusable image, size or filter."""
    pixels.check(img, "resize")
    if filter not in FILTERS:
        raise ProcessingError(f"unknown resize filter {filter!r}; use one of {', '.join(FILTERS)}")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ProcessingError(f"resize {name} must be an integer, got {value!r}")
        if value < 1:
            raise ProcessingError(f"resize {name} must be at least 1, got {value}")


def resize(img: np.ndarray, width: int, height: int, filter: str = "lanczos3") -> np.ndarray:
    """Resize to exactly width x height (premultiplied for LA/RGBA): Pillow's bytes, computed in C
    (16-bit images: ``resize_reference``'s, the same rule at 16 bits)."""
    _check(img, width, height, filter)
    height, width = int(height), int(width)
    channels, item = img.shape[2], img.itemsize
    src = img if img.strides[1:] == (channels * item, item) else np.ascontiguousarray(img)  # packed pixels
    out = np.empty((height, width, channels), img.dtype)
    # (the same size gives a copy, alpha untouched, as from Image.resize: the C makes it)
    _resample.resize(src, out, filter, VERTICAL_FIRST_RULE, channels in (2, 4) and filter != "nearest")
    return out


def resample_coefficients(in_size: int, out_size: int, filter: str = "lanczos3"):
    """Integer tables for one axis: (start int32[out], length int32[out], coeffs int32[out, ksize]).

    Resample.c's precompute_coeffs and normalize_coeffs_8bpc, computed by ``_resample`` (the
    tables ``resize`` uses): output pixel ``i`` is centred on ``(i + 0.5) * scale``, the filter's
    support and argument are scaled by ``max(scale, 1)``, the float64 weights are normalised to
    sum 1 and rounded half away from zero to ``PRECISION_BITS`` fraction bits; nearest is one tap
    at Pillow's affine sample position. Cached and read-only: a corpus asks for the same few sizes
    again and again, and a table costs a C-library sin() per tap."""
    if filter not in FILTERS:
        raise ProcessingError(f"unknown resize filter {filter!r}; use one of {', '.join(FILTERS)}")
    if in_size < 1 or out_size < 1:
        raise ProcessingError(f"resample sizes must be >= 1, got {in_size} -> {out_size}")
    return _cached_coefficients(int(in_size), int(out_size), filter)


@functools.lru_cache(maxsize=1024)
def _cached_coefficients(in_size: int, out_size: int, filter: str):
    start, length, coeffs, ksize = _resample.coefficients(in_size, out_size, filter)
    # Views of bytes objects: read-only, as a cached table must be.
    return (
        np.frombuffer(start, np.int32),
        np.frombuffer(length, np.int32),
        np.frombuffer(coeffs, np.int32).reshape(out_size, ksize),
    )


# ----------------------------------------------------------------------------
# Reference implementation (the model for a GPU kernel, and 16-bit images)
# ----------------------------------------------------------------------------

# Values of the source a pass turns into float64 at a time (8 MB): the working set of one block.
_PASS_BLOCK = 1 << 20


def _pass(src: np.ndarray, axis: int, start: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """One fixed-point pass along axis 1 (horizontal) or 0 (vertical) of an HWC array, stored at its depth.

    Each output is ``floor((2**21 + sum_j px[start + j] * k[j]) / 2**22)``, clamped. The sums are
    taken in float64 by BLAS (a dot product per output over a block of the source): exact, in
    any order, because every partial sum is an integer below 2**53 — each |product| is below
    65535 * 2**23 and sum(|k|) <= 1.58 * 2**22 (measured, lanczos3), so |sum| < 2**39. The
    integers are Pillow's int32 sums (and a GPU's), bit for bit, 10x faster than summing tap by
    tap in int64 (a 12 MP 16-bit thumbnail: 1.6 -> 0.15 s).
    """
    out_size, ksize = coeffs.shape
    size = src.shape[axis]
    moved = np.moveaxis(src, axis, 0)                       # (size, the other axes)
    flat = moved.reshape(size, -1)
    out = np.empty((out_size, flat.shape[1]), np.float64)
    weights = coeffs.astype(np.float64)
    # Taps past an output's length have coefficient 0, so each window is cut at the image's end.
    stops = np.minimum(start.astype(np.int64) + ksize, size)
    step = max(1, _PASS_BLOCK // size)
    for c0 in range(0, flat.shape[1], step):
        block = flat[:, c0:c0 + step].astype(np.float64)
        for i in range(out_size):
            first, stop = int(start[i]), int(stops[i])
            out[i, c0:c0 + step] = weights[i, :stop - first] @ block[first:stop]
    out += float(1 << (PRECISION_BITS - 1))
    out *= 1.0 / (1 << PRECISION_BITS)                      # a power of two: exact
    np.floor(out, out=out)
    result = np.clip(out, 0, pixels.maximum(src.dtype)).astype(src.dtype)
    return np.ascontiguousarray(np.moveaxis(result.reshape((out_size,) + moved.shape[1:]), 0, axis))


def premultiply(img: np.ndarray) -> np.ndarray:
    """Pillow's RGBA->RGBa / LA->La: colour = round(colour * alpha / max), integer."""
    out = img.copy()
    c = img[..., :-1].astype(np.uint64)
    a = img[..., -1:].astype(np.uint64)
    if img.dtype == np.uint8:
        tmp = c * a + 128
        out[..., :-1] = ((tmp >> 8) + tmp) >> 8  # Pillow's MULDIV255: exact round(c * a / 255)
    else:
        out[..., :-1] = (c * a + 32767) // 65535  # round(c * a / 65535): never a tie (65535 is odd)
    return out


def unpremultiply(img: np.ndarray) -> np.ndarray:
    """Pillow's RGBa->RGBA / La->LA: colour = min(max, max * colour // alpha), kept for alpha 0 or max."""
    out = img.copy()
    top = pixels.maximum(img.dtype)
    c = img[..., :-1].astype(np.uint64)
    a = img[..., -1:].astype(np.uint64)
    # Truncating division, and a resampled colour may exceed its alpha: clamp.
    div = np.minimum(top * c // np.maximum(a, 1), top)
    out[..., :-1] = np.where((a == 0) | (a == top), c, div)
    return out


def vertical_first(in_w: int, in_h: int, out_w: int, out_h: int) -> bool:
    """True when Pillow runs the vertical pass before the horizontal one."""
    if not VERTICAL_FIRST_RULE or out_w == in_w or out_h >= in_h:
        return False
    return in_h - out_h > 2 * (in_w - out_w)


def resize_reference(img: np.ndarray, width: int, height: int, filter: str = "lanczos3") -> np.ndarray:
    """Pure-NumPy resize, bit-exact with resize() / Pillow (and the only resize of 16-bit images)."""
    _check(img, width, height, filter)
    in_h, in_w, channels = img.shape
    if (in_w, in_h) == (width, height):
        return np.array(img, order="C")  # Image.resize returns a copy untouched
    alpha = channels in (2, 4) and filter != "nearest"
    src = premultiply(img) if alpha else img

    if vertical_first(in_w, in_h, width, height):
        # Vertical pass over only the columns the horizontal pass will read.
        h_start, h_len, h_coeffs = resample_coefficients(in_w, width, filter)
        v_start, _, v_coeffs = resample_coefficients(in_h, height, filter)
        first, last = int(h_start[0]), int(h_start[-1]) + int(h_len[-1])
        src = _pass(src[:, first:last], 0, v_start, v_coeffs)
        src = _pass(src, 1, h_start - first, h_coeffs)
    else:
        v_start, v_len, v_coeffs = resample_coefficients(in_h, height, filter)
        if width != in_w:
            h_start, _, h_coeffs = resample_coefficients(in_w, width, filter)
            # Only rows the vertical pass reads are resampled horizontally
            # (ImagingResampleInner's ybox_first/ybox_last); its bounds shift
            # down. With an unchanged height these rows are all rows.
            first, last = int(v_start[0]), int(v_start[-1]) + int(v_len[-1])
            src = _pass(src[first:last], 1, h_start, h_coeffs)
            v_start = v_start - first
        if height != in_h:
            src = _pass(src, 0, v_start, v_coeffs)
    out = unpremultiply(src) if alpha else src
    return np.ascontiguousarray(out)
