"""Resample.c's coefficient tables derived again in NumPy: an independent model of the tables the
C module (gpupipe/backends/numpy/_resample.c) computes, written from the same description.

Each expression keeps Resample.c's operation order so the float64 rounding matches.
"""

from __future__ import annotations

import math

import numpy as np

PRECISION_BITS = 22


def _bilinear(x: np.ndarray) -> np.ndarray:
    """Triangle filter, support 1."""
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution with a = -0.5, support 2."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _sinc(x: np.ndarray) -> np.ndarray:
    """sin(pi x) / (pi x), 1 at 0."""
    # sin() from the C library through math.sin, the same function Pillow calls,
    # so the weights match to the last bit whatever NumPy's SIMD sin does.
    px = x * math.pi
    s = np.fromiter(map(math.sin, px.ravel()), np.float64, px.size).reshape(px.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0.0, 1.0, s / px)


def _lanczos3(x: np.ndarray) -> np.ndarray:
    """sinc(x) * sinc(x / 3) on [-3, 3), support 3."""
    inside = (-3.0 <= x) & (x < 3.0)
    return np.where(inside, _sinc(x) * _sinc(x / 3), 0.0)


# name -> (support in input pixels at scale 1, weight function)
_KERNELS = {"bilinear": (1.0, _bilinear), "bicubic": (2.0, _bicubic), "lanczos3": (3.0, _lanczos3)}


def _nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output pixel for Pillow's nearest (ImagingScaleAffine)."""
    step = float(np.float32(in_size)) / out_size
    # x_0 = step / 2, x_{i+1} = x_i + step, accumulated sequentially like the C
    # loop (np.cumsum adds in order, so the float64 rounding is identical).
    terms = np.full(out_size, step)
    terms[0] = 0.0 + step * 0.5
    xo = np.cumsum(terms)
    # int() truncation; x_i <= in_size - step/2, so the index stays in range.
    return np.minimum(xo.astype(np.int64), in_size - 1).astype(np.int32)


def coefficients(in_size: int, out_size: int, filter: str):
    """(start int32[out], length int32[out], coeffs int32[out, ksize]) for one axis."""
    one = 1 << PRECISION_BITS
    if filter == "nearest":
        # One tap of weight 1.0: the generic pass below then reproduces nearest.
        start = _nearest_indices(in_size, out_size)
        return start, np.ones(out_size, np.int32), np.full((out_size, 1), one, np.int32)

    support0, kernel = _KERNELS[filter]
    # precompute_coeffs(): box is float (in1 - in0 in float32), the rest float64.
    scale = float(np.float32(in_size)) / out_size
    filterscale = max(scale, 1.0)
    support = support0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1

    center = 0.0 + (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    # (int)(v + 0.5) truncates toward zero, then clamps to the image.
    start = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    stop = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64)
    length = stop - start

    taps = np.arange(ksize)
    valid = taps[None, :] < length[:, None]
    # w = filter((x + xmin - center + 0.5) * ss) with ss = 1 / filterscale.
    arg = ((taps[None, :] + start[:, None]).astype(np.float64) - center[:, None] + 0.5) * (1.0 / filterscale)
    w = np.where(valid, kernel(arg), 0.0)
    # The C code sums the weights left to right; a tap loop keeps that order
    # (np.sum would use pairwise summation and could differ in the last bit).
    ww = np.zeros(out_size)
    for j in range(ksize):
        ww = ww + w[:, j]
    safe = np.where(ww != 0.0, ww, 1.0)
    k = np.where(ww[:, None] != 0.0, w / safe[:, None], w)
    # normalize_coeffs_8bpc(): (int)(k * 2**22 +- 0.5), truncating toward zero.
    scaled = k * float(one)
    fixed = np.trunc(np.where(k < 0, scaled - 0.5, scaled + 0.5)).astype(np.int32)
    return start.astype(np.int32), length.astype(np.int32), fixed
