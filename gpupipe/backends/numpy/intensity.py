"""Intensity ops for the NumPy backend: window, normalize, equalize (medical images, mostly).

Each maps every colour value through a function of that value alone, so each is a table over the
depth's values (256 or 65536), computed here in float64 and stored with round-half-to-even:

* ``window``: DICOM's linear window (PS3.3 C.11.2.1.2) on the image's own values: at or below
  ``c - 0.5 - (w - 1) / 2`` black, above ``c - 0.5 + (w - 1) / 2`` white, between
  ``((x - (c - 0.5)) / (w - 1) + 0.5) * max``. The same table for every image; its result may
  change the depth (``bits``), alpha then converted as ``pixels.to_8bit`` / ``to_16bit`` do.
* ``normalize``: each image's own ``low`` and ``high`` percentiles of its colour values (all colour
  channels together) become black and white: ``(x - p_low) / (p_high - p_low) * max``, clamped.
  Percentiles interpolate linearly between the sorted values (``percentile``: NumPy's "linear"
  method, found on the histogram). An image whose two percentiles are equal is left as it is.
* ``equalize``: each value becomes the share of the image's colour values at or below it,
  ``cum[x] * max / n`` (scikit-image's ``equalize_hist`` with a bin per value).
* ``equalize(clahe=True)``: contrast-limited adaptive equalisation (Zuiderveld's CLAHE, as
  scikit-image's ``equalize_adapthist`` and OpenCV's): ``clahe`` below.

The CUDA backend computes the same histograms and the same float64 expressions in the same order,
so both backends agree bit for bit (``kernels/intensity.cu``).
"""

from __future__ import annotations

import numpy as np

from gpupipe import pixels

__all__ = ["CLAHE_BINS", "clahe", "clahe_grid", "equalize", "histogram", "normalize", "percentile", "window",
           "window_table"]


def _colour(img: np.ndarray) -> np.ndarray:
    """The colour channels (alpha, the last channel of LA/RGBA, left out)."""
    return img[..., :-1] if img.shape[2] in (2, 4) else img


def _with_table(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Colour channels through ``table`` (its dtype is the result's); alpha converted to that depth."""
    out = table[img]
    if img.shape[2] in (2, 4):
        alpha = img[..., -1]
        out[..., -1] = alpha if table.dtype == img.dtype else (
            pixels.to_8bit(alpha) if table.dtype == np.uint8 else pixels.to_16bit(alpha))
    return out


def window_table(center: float, width: float, dtype, bits: int | None = None) -> np.ndarray:
    """The window as a table over every value of ``dtype``, stored at ``bits`` (None: the same depth)."""
    out = np.dtype(dtype) if bits is None else np.dtype(np.uint8 if bits == 8 else np.uint16)
    top = float(pixels.maximum(out))
    x = np.arange(pixels.maximum(dtype) + 1, dtype=np.float64)
    middle, span = center - 0.5, width - 1.0
    low, high = middle - span / 2, middle + span / 2
    if span > 0:
        y = ((x - middle) / span + 0.5) * top
    else:
        y = np.full(x.shape, top)
    y = np.where(x <= low, 0.0, np.where(x > high, top, y))
    return pixels.store(y, out)


def window(img: np.ndarray, center: float, width: float, bits: int | None = None) -> np.ndarray:
    pixels.check(img, "window")
    return _with_table(img, window_table(center, width, img.dtype, bits))


def histogram(img: np.ndarray) -> np.ndarray:
    """Counts of each value of the depth among the colour values (int64, 256 or 65536 bins)."""
    return np.bincount(_colour(img).ravel(), minlength=pixels.maximum(img.dtype) + 1).astype(np.int64)


def percentile(cumulative: np.ndarray, q: float) -> float:
    """The q-th percentile (0-100) of the values a cumulative histogram counts, interpolated
    linearly between the two sorted values around position (n - 1) * q / 100."""
    n = int(cumulative[-1])
    position = (n - 1) * q / 100.0
    below = int(position)
    fraction = position - below
    a = float(np.searchsorted(cumulative, below, side="right"))          # the value at sorted index `below`
    b = float(np.searchsorted(cumulative, min(below + 1, n - 1), side="right"))
    return a + (b - a) * fraction


def normalize(img: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    pixels.check(img, "normalize")
    cumulative = np.cumsum(histogram(img))
    p_low, p_high = percentile(cumulative, low), percentile(cumulative, high)
    if p_high <= p_low:
        return img.copy()
    x = np.arange(cumulative.size, dtype=np.float64)
    table = pixels.store((x - p_low) / (p_high - p_low) * float(pixels.maximum(img.dtype)), img.dtype)
    return _with_table(img, table)


def equalize(img: np.ndarray, clahe_on: bool = False, clip_limit: float = 0.01, tiles: int = 8) -> np.ndarray:
    if clahe_on:
        return clahe(img, clip_limit, tiles)
    pixels.check(img, "equalize")
    cumulative = np.cumsum(histogram(img)).astype(np.float64)
    table = pixels.store(cumulative * float(pixels.maximum(img.dtype)) / cumulative[-1], img.dtype)
    return _with_table(img, table)


# --- CLAHE ------------------------------------------------------------------------------------------

CLAHE_BINS = 256            # histogram bins of a tile at either depth (a 16-bit value's bin: its high byte)


def clahe_grid(height: int, width: int, tiles: int) -> tuple[int, int, int, int]:
    """(tile height, tile width, tiles down, tiles across): ``tiles`` per axis at most, each
    ceil(side / tiles) pixels, the last ones possibly smaller (fewer when the side is short)."""
    tile_h, tile_w = -(-height // min(tiles, height)), -(-width // min(tiles, width))
    return tile_h, tile_w, -(-height // tile_h), -(-width // tile_w)


def clip_histogram(hist: np.ndarray, limit: int) -> np.ndarray:
    """Bins above ``limit`` cut to it, their excess spread over every bin: an equal share each,
    then one more for the bins at a step of bins // remainder from the first (OpenCV's rule)."""
    excess = int(np.maximum(hist - limit, 0).sum())
    hist = np.minimum(hist, limit) + excess // hist.size
    remainder = excess % hist.size
    if remainder:
        step = max(hist.size // remainder, 1)
        hist[np.arange(0, hist.size, step)[:remainder]] += 1
    return hist


def clahe_maps(img: np.ndarray, clip_limit: float, tiles: int) -> np.ndarray:
    """Each tile's map from bin to value: ``cum[b] * max / n`` of its clipped histogram (float64,
    shape tiles down × tiles across × CLAHE_BINS)."""
    height, width = img.shape[:2]
    tile_h, tile_w, down, across = clahe_grid(height, width, tiles)
    shift = 8 if img.dtype == np.uint16 else 0
    top = float(pixels.maximum(img.dtype))
    colour = _colour(img)
    maps = np.empty((down, across, CLAHE_BINS), np.float64)
    for i in range(down):
        for j in range(across):
            tile = colour[i * tile_h:(i + 1) * tile_h, j * tile_w:(j + 1) * tile_w]
            hist = np.bincount((tile >> shift).ravel(), minlength=CLAHE_BINS).astype(np.int64)
            count = tile.size
            hist = clip_histogram(hist, max(1, int(clip_limit * count)))
            maps[i, j] = np.cumsum(hist).astype(np.float64) * top / float(count)
    return maps


def _neighbours(size: int, tile: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each pixel along an axis: the two tiles whose centres are around it and the weight of
    the second, from p / tile - 0.5 (OpenCV's convention; a pixel outside the centres takes the
    edge tile)."""
    f = np.arange(size, dtype=np.float64) / tile - 0.5
    first = np.floor(f)
    weight = f - first
    first = first.astype(np.int64)
    return np.clip(first, 0, count - 1), np.clip(first + 1, 0, count - 1), weight


def clahe(img: np.ndarray, clip_limit: float = 0.01, tiles: int = 8) -> np.ndarray:
    """Each colour value through its tile's map, blended bilinearly between the four tiles whose
    centres surround the pixel: ``(1 - wy)((1 - wx) a + wx b) + wy((1 - wx) c + wx d)``, rounded."""
    pixels.check(img, "equalize")
    height, width = img.shape[:2]
    tile_h, tile_w, down, across = clahe_grid(height, width, tiles)
    maps = clahe_maps(img, clip_limit, tiles)
    y0, y1, wy = _neighbours(height, tile_h, down)
    x0, x1, wx = _neighbours(width, tile_w, across)
    out = img.copy()
    colours = img.shape[2] - (img.shape[2] in (2, 4))
    shift = 8 if img.dtype == np.uint16 else 0
    wy, wx = wy[:, None], wx[None, :]
    for c in range(colours):
        b = img[..., c] >> shift
        top_row = (1 - wx) * maps[y0[:, None], x0[None, :], b] + wx * maps[y0[:, None], x1[None, :], b]
        bottom_row = (1 - wx) * maps[y1[:, None], x0[None, :], b] + wx * maps[y1[:, None], x1[None, :], b]
        out[..., c] = pixels.store((1 - wy) * top_row + wy * bottom_row, img.dtype)
    return out
