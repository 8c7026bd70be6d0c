"""Spatial filters for the NumPy (CPU) backend, computed with OpenCV in float32.

Every filter is a correlation (the kernel is not flipped) with reflect-101
borders (``dcb|abcd|cba``: OpenCV BORDER_REFLECT_101, scipy.ndimage "mirror");
images smaller than the kernel reflect repeatedly and a 1-pixel dimension just
repeats that pixel. Results are stored as ``clip(rint(x), 0, max)`` at the image's depth
(``pixels.store``); an offset or threshold, given on the 0-255 scale, is scaled by 257 on
16-bit images.

Alpha rule (a CUDA backend must do exactly the same):

* Images without alpha (L, RGB): every channel is filtered.
* Images with alpha (LA, RGBA): colour channels are premultiplied by
  ``alpha / max`` in float32 before filtering. We store ``c * alpha`` (that
  value times max) and unpremultiply with ``/ alpha``: the same maths, but exact
  in float32 for integer kernels (sharpen, edges, emboss) on 8-bit images, so the many exact
  x.5 ties (e.g. an odd sum over an even alpha) round half-to-even every time
  instead of falling either way on float error. (16-bit products need up to 32 bits:
  float32 rounds them, identically on both backends.)
* Smoothing filters (box_blur, gaussian_blur) filter the alpha channel too, and
  the colour is unpremultiplied by the *filtered float* alpha.
* All other filters (sharpen, unsharp, edges, emboss, convolve) leave alpha
  unchanged and unpremultiply by the original alpha. ``convolve``'s offset is
  added after unpremultiplying, i.e. to the straight colour.
* Wherever the output alpha (the stored uint8 value) is 0, the colour is 0.
* A fully opaque image (every alpha at the maximum) is filtered like one without alpha,
  alpha kept, so RGBA output equals RGB output exactly.

convolve divides after correlating (colour / (alpha * divisor) in one step), so
integer kernels with integer divisors also round their exact ties the same way.

Gaussians on 8-bit images (gaussian_blur, unsharp's blur) up to sigma FIXED_POINT_MAX_SIGMA take
taps of whole 256ths (``gaussian_taps``). Every sum of such taps over 8-bit values is exact in
float32, in any order: both backends, on every machine, compute the same sums, and OpenCV computes
them in its integer path, about 3x faster than in float32. The result is the exact sum rounded half to
even, as every store; unsharp's blur is that 8-bit result, so x - blur is a whole number.
"""

from __future__ import annotations

import functools
import math
import operator

import numpy as np

from gpupipe import pixels
from gpupipe.errors import ProcessingError

# OpenCV is imported in the functions that use it: a run whose ops need none of them (a
# thumbnail) never loads it (35 ms of its start-up).
_MAX_KERNEL = 31
_RANK_TOL = 1e-6

# Fixed 3x3 kernels (correlation orientation).
_IDENTITY3 = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32)
_SHARPEN3 = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)
_LAPLACIAN3 = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32)
_EMBOSS3 = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float32)
# Sobel gx = outer([1,2,1], [-1,0,1]); gy is its transpose.
_SOBEL_DIFF = np.array([-1, 0, 1], np.float32)
_SOBEL_SMOOTH = np.array([1, 2, 1], np.float32)


# --- helpers ---------------------------------------------------------------

def _check_image(img: np.ndarray) -> None:
    """Raise ProcessingError unless img follows the pixel contract."""
    pixels.check(img, "a filter")


def _finite(name: str, value, minimum: float | None = None, strict: bool = False) -> float:
    """Return value as float, checking it is finite and above a bound."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ProcessingError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ProcessingError(f"{name} must be finite, got {value!r}")
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise ProcessingError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return v


def _store(x: np.ndarray, dtype, into: np.ndarray | None = None) -> np.ndarray:
    """clip(rint(x), 0, max) as C-contiguous ``dtype`` (x itself is left alone), written ``into``
    a C-contiguous array of x's shape where one is given (a strip of the result), and returned.

    For uint8, OpenCV's saturating conversion (an addition of 0 stored as CV_8U) rounds half to
    even, like np.rint, in one SIMD pass: 5x zeroing the negatives and then converting, as this
    did before with the same bytes (a 12 MP photo: 52 -> 10 ms). OpenCV's Python binding would
    take an array of up to 4 values for a scalar: those few go through NumPy. An ``x`` of ``dtype``
    is stored already (_corr_integers' 8-bit sums): it is only placed.
    """
    if dtype == np.uint8 and x.dtype != dtype and x.size > 4:
        import cv2
        flat = np.ascontiguousarray(x, np.float32).reshape(x.shape[0], -1)
        if into is None:
            return cv2.add(flat, 0.0, dtype=cv2.CV_8U).reshape(x.shape)
        cv2.add(flat, 0.0, dst=into.reshape(flat.shape), dtype=cv2.CV_8U)
        return into
    stored = np.ascontiguousarray(x if x.dtype == dtype else pixels.store(x, dtype))
    if into is None:
        return stored
    into[...] = stored
    return into


def _sep(x: np.ndarray, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
    """Separable correlation: kx along rows (x), ky along columns (y)."""
    import cv2
    out = cv2.sepFilter2D(x, cv2.CV_32F, kx.astype(np.float32), ky.astype(np.float32),
                          borderType=cv2.BORDER_REFLECT_101)
    return out.reshape(x.shape)  # OpenCV drops a trailing channel axis of 1


# OpenCV's integer path rounds its sums half to even in its vector loops, but half up in the scalar
# code that ends each output row: fewer values than one vector of 16-bit lanes (SymmColumnVec_32s8u:
# under 16 with AVX2, as measured here, under 32 with AVX-512). Twice the widest is summed again.
_SCALAR_TAIL = 64


def _sep_fixed(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable smoothing of 8-bit x (C-contiguous HWC) by taps k of whole 256ths (``gaussian_taps``)
    in both directions: the exact sums rounded half to even, as uint8.

    OpenCV sums such taps in integers (its fixed-point path for 8-bit smoothing kernels) and rounds
    half to even, except in the scalar code that ends each output row, which rounds half up: those
    last columns are summed again in float32 (exact for these taps: multiples of 2**-16 below 256)
    and stored as every float result is.
    """
    import cv2
    out = cv2.sepFilter2D(x, cv2.CV_8U, k, k, borderType=cv2.BORDER_REFLECT_101).reshape(x.shape)
    width, channels = x.shape[1], x.shape[2]
    tail = min(width, -(-_SCALAR_TAIL // channels))
    start = max(0, width - tail - len(k) // 2)     # columns within the radius of the cut are not kept
    exact = _sep(np.ascontiguousarray(x[:, start:]), k, k)
    out[:, width - tail:] = _store(exact[:, exact.shape[1] - tail:], np.uint8)
    return out


def _sharpened(x: np.ndarray, g: np.ndarray, amount: np.float32, threshold: np.float32) -> np.ndarray:
    """Unsharp's x + amount * (x - g) where |x - g| > threshold, for 8-bit x and blur g: x - g is a
    whole number, so at amount 1 without a threshold 2x - g saturates in 8 bits (stored); otherwise
    float32 steps as on the GPU: amount * d, then + x (two roundings)."""
    import cv2
    x2, g2 = x.reshape(x.shape[0], -1), g.reshape(g.shape[0], -1)   # one channel: no per-channel scalars
    if amount == 1 and threshold == 0:             # into g: a 12 MP photo's third copy never made
        return cv2.addWeighted(x2, 2.0, g2, -1.0, 0.0, dst=g2).reshape(x.shape)
    d = cv2.subtract(x2, g2, dtype=cv2.CV_16S)
    sharp = d.astype(np.float32)
    sharp *= amount
    sharp += x2
    if threshold > 0:
        np.copyto(sharp, x2, where=np.abs(d) <= threshold)
    return sharp.reshape(x.shape)


def _corr_integers(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """_corr with a 3x3 kernel of integers, stored: on 8-bit pixels every sum is an integer (well
    inside float32's exact range), so OpenCV's saturating 8-bit output is the float result's bytes,
    without the float32 image between (sharpen on a 500x375 photo: 0.47 -> 0.23 ms). Other depths
    (and the premultiplied floats of an image with alpha) take _corr."""
    if x.dtype != np.uint8:
        return _corr(x, k)
    import cv2
    return cv2.filter2D(x, -1, k, borderType=cv2.BORDER_REFLECT_101).reshape(x.shape)


def _corr(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Non-separable 2-D correlation, summed directly (never through a DFT)."""
    import cv2
    k = k.astype(np.float32)
    if k.size < 50:
        return cv2.filter2D(x, cv2.CV_32F, k, borderType=cv2.BORDER_REFLECT_101).reshape(x.shape)
    # OpenCV's filter2D switches to a DFT from 50 taps (uint8 input) or 130 (float32): its
    # float error then decides exact .5 ties at random (0.4-0.8 % of pixels off by one
    # for integer kernels). Summing one row-correlation per kernel row, each a direct
    # 1-D pass shifted by the row's offset, keeps the arithmetic exact for such kernels.
    n = k.shape[0]
    acc = None
    for i in range(n):
        if not k[i].any():
            continue
        pick = np.zeros(n, np.float32)
        pick[i] = 1.0                   # the column pass only selects row y + i - n//2 (reflect-101)
        term = _sep(x, k[i], pick)
        if acc is None:
            acc = term
        else:
            acc += term
    return acc if acc is not None else np.zeros(x.shape, np.float32)


# Large images are filtered in horizontal strips (plus a halo of `reach` rows each side):
# the float32 working set stays near the cache and a 12 MP photo needs a few MB of
# temporaries instead of several full-size float copies. Rows outside the halo are
# never read, so the result is the same as filtering the whole image at once.
_STRIP_BYTES = 4 * 2**20


def _filter(img: np.ndarray, fn, smooth: bool, reach: int, divisor: float = 1.0,
            offset: float = 0.0, in_float: bool = True) -> np.ndarray:
    """Apply fn with the alpha rule, strip by strip; ``reach`` is the kernel's radius in y. An fn that
    keeps 8-bit pixels in 8 bits (not ``in_float``) takes an image without alpha whole: it has no
    float working set to keep near the cache, and strips would only add their halos.

    Whether an image with alpha is opaque is decided for the whole image, as on the GPU, never strip
    by strip: a translucent image's opaque strip is premultiplied like the rest of it."""
    height, width, channels = img.shape
    top = pixels.maximum(img.dtype)
    if channels in (2, 4) and (img[..., -1] == top).all():
        # Opaque: premultiplying changes nothing but float error; this keeps RGBA == RGB exactly.
        out = np.empty_like(img)
        out[..., :-1] = _filter(np.ascontiguousarray(img[..., :-1]), fn, smooth, reach, divisor, offset, in_float)
        out[..., -1] = top
        return out
    rows = max(4 * reach, _STRIP_BYTES // (width * channels * 4), 1)
    if height <= rows + 2 * reach or not (in_float or channels in (2, 4)):
        return _filter_whole(img, fn, smooth, divisor, offset)
    out = np.empty_like(img)
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        top, bottom = max(0, y0 - reach), min(height, y1 + reach)
        _filter_whole(img[top:bottom], fn, smooth, divisor, offset, rows=(y0 - top, y1 - top), into=out[y0:y1])
    return out


def _filter_whole(img: np.ndarray, fn, smooth: bool, divisor: float = 1.0, offset: float = 0.0,
                  rows: tuple[int, int] | None = None, into: np.ndarray | None = None) -> np.ndarray:
    """Apply fn (HWC -> float32 HWC correlation) with the alpha rule to an image without alpha or a
    translucent one (``_filter`` takes the opaque ones); result / divisor + offset. A strip of a large
    image keeps only ``rows`` of it (its halo is dropped) and writes them ``into`` the result: stored
    straight there, without a strip of its own to copy."""
    d, off = np.float32(divisor), np.float32(offset) * np.float32(pixels.value_scale(img.dtype))
    if img.shape[2] in (1, 3):
        res = fn(np.ascontiguousarray(img))   # OpenCV reads integers straight into float32 passes: no float copy
        if rows is not None:
            res = res[rows[0]:rows[1]]
        if divisor != 1:
            res /= d
        if offset:
            res += off
        return _store(res, img.dtype, into)
    if rows is not None:                      # with alpha: the whole strip, then its rows
        into[...] = _filter_whole(img, fn, smooth, divisor, offset)[rows[0]:rows[1]]
        return into
    original_alpha = img[..., -1:]
    f = np.array(img, np.float32, order="C")
    f[..., :-1] *= f[..., -1:]  # premultiply as c*a (exact), see the module docstring
    if smooth:
        f = fn(f)
        colour, alpha = f[..., :-1], f[..., -1:]
    else:
        colour, alpha = fn(np.ascontiguousarray(f[..., :-1])), f[..., -1:]
    stored_alpha = _store(alpha, img.dtype) if smooth else original_alpha
    visible = stored_alpha > 0
    # one division by alpha*divisor (exact product for integer divisors) keeps exact ties exact
    res = np.where(visible, colour / (np.where(visible, alpha, 1) * d) + off, 0)
    out = np.empty(img.shape, img.dtype)
    out[..., :-1] = _store(res, img.dtype)
    out[..., -1:] = stored_alpha
    return out


# --- public filters --------------------------------------------------------

def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps, radius ceil(3*sigma), as float32 (cached, read-only)."""
    return _gaussian_kernel(_finite("sigma", sigma, 0.0, strict=True))


@functools.lru_cache(maxsize=64)
def _gaussian_kernel(s: float) -> np.ndarray:
    r = math.ceil(3 * s)
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-(x * x) / (2 * s * s))
    taps = (k / k.sum()).astype(np.float32)
    taps.flags.writeable = False
    return taps


# Up to this sigma, 8-bit images are blurred with taps of whole 256ths (see the module docstring).
# Beyond it the largest tap is under 20/256 and rounding shapes the kernel: the 2 levels a photo
# moves at most against float32 taps at sigma 5 become 4 at 20 and 30 at 100 (PSNR 59, 51, 31 dB).
FIXED_POINT_MAX_SIGMA = 5.0
_FIXED_ONE = 256


def gaussian_taps(sigma: float, dtype) -> np.ndarray:
    """The taps a Gaussian of sigma applies to images of dtype, on both backends (cached, read-only).

    8-bit images up to sigma FIXED_POINT_MAX_SIGMA: gaussian_kernel's taps in whole 256ths summing
    to exactly 1. Each tap is rounded down; the units left go to the centre (one, if they are odd)
    and then to the symmetric pairs that rounding took most from (the largest remainders); the
    zero taps at the ends are dropped. Otherwise gaussian_kernel's taps."""
    s = _finite("sigma", sigma, 0.0, strict=True)
    if np.dtype(dtype) != np.uint8 or s > FIXED_POINT_MAX_SIGMA:
        return _gaussian_kernel(s)
    return _fixed_taps(s)


@functools.lru_cache(maxsize=64)
def _fixed_taps(s: float) -> np.ndarray:
    exact = _gaussian_kernel(s).astype(np.float64) * _FIXED_ONE
    r = len(exact) // 2
    units = np.floor(exact)
    left = _FIXED_ONE - int(units.sum())
    if left % 2:
        units[r] += 1
        left -= 1
    remainders = exact[r + 1:] - units[r + 1:]          # the right half's; the left mirrors it
    for i in sorted(range(r), key=lambda i: (-remainders[i], i))[:left // 2]:
        units[r + 1 + i] += 1
        units[r - 1 - i] += 1
    used = np.flatnonzero(units)
    taps = (units[used[0]:used[-1] + 1] / _FIXED_ONE).astype(np.float32)
    taps.flags.writeable = False
    return taps


def _fixed_point(k: np.ndarray, dtype) -> bool:
    """Whether images of dtype are blurred by taps k in fixed point: 8-bit ones by whole 256ths
    (gaussian_taps' 8-bit taps). Both backends ask this."""
    return np.dtype(dtype) == np.uint8 and bool((k * _FIXED_ONE == np.rint(k * _FIXED_ONE)).all())


def _blur(x: np.ndarray, k: np.ndarray, fixed: bool) -> np.ndarray:
    """Separable smoothing by k in both directions: with ``fixed`` taps, 8-bit pixels in OpenCV's
    integer path (stored, uint8); anything else (premultiplied, 16-bit) in float32."""
    if fixed and x.dtype == np.uint8:
        return _sep_fixed(x, k)
    return _sep(x, k, k)


def box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)x(2r+1) window."""
    _check_image(img)
    try:
        r = operator.index(radius)
    except TypeError:
        raise ProcessingError(f"radius must be an integer, got {radius!r}") from None
    if isinstance(radius, bool) or r < 1:
        raise ProcessingError(f"radius must be an integer >= 1, got {radius!r}")
    k = np.full(2 * r + 1, 1.0 / (2 * r + 1), np.float32)
    return _filter(img, lambda x: _sep(x, k, k), smooth=True, reach=r)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (see gaussian_taps)."""
    _check_image(img)
    k = gaussian_taps(sigma, img.dtype)
    fixed = _fixed_point(k, img.dtype)
    return _filter(img, lambda x: _blur(x, k, fixed), smooth=True, reach=len(k) // 2, in_float=not fixed)


def sharpen(img: np.ndarray, amount: float = 1.0) -> np.ndarray:
    """3x3 sharpen: identity + amount * (K - identity)."""
    _check_image(img)
    a = _finite("amount", amount, 0.0)
    k = _IDENTITY3 + np.float32(a) * (_SHARPEN3 - _IDENTITY3)
    correlate = _corr_integers if a.is_integer() else _corr
    return _filter(img, lambda x: correlate(x, k), smooth=False, reach=1)


# A difference equal to the threshold in exact arithmetic lands on either side of it after float32
# rounding, and the side depends on the order of the sums (OpenCV's SIMD code here, sequential sums
# on the GPU): a flipped pixel changes by amount * threshold, whole levels. The mask therefore asks
# for more than threshold + 1/1024 of a level: far above float32's error on sums of 0..255 values,
# far below anything visible.
UNSHARP_TIE_MARGIN = np.float32(1 / 1024)


def unsharp_threshold(threshold: float, dtype=np.uint8) -> np.float32:
    """The value |x - g| is compared with (``>``) for a user's threshold (0-255 scale, scaled by the
    depth); 0 stays 0 (no mask)."""
    t = np.float32(_finite("threshold", threshold, 0.0))
    # the margin scales with the values too: float32's error grows with them
    return np.float32((t + UNSHARP_TIE_MARGIN) * np.float32(pixels.value_scale(dtype))) if t > 0 else np.float32(0)


def unsharp(img: np.ndarray, sigma: float = 1.0, amount: float = 1.0,
            threshold: float = 0) -> np.ndarray:
    """Unsharp mask: x + amount*(x - g) where |x - g| > threshold, g = the gaussian of x
    (``gaussian_taps``): its 8-bit result on 8-bit pixels, else float (``unsharp_threshold``: ties
    at the threshold count as not above it)."""
    _check_image(img)
    k = gaussian_taps(sigma, img.dtype)
    a = np.float32(_finite("amount", amount, 0.0))
    t = unsharp_threshold(threshold, img.dtype)
    fixed = _fixed_point(k, img.dtype)

    def fn(x):
        g = _blur(x, k, fixed)
        if g.dtype == np.uint8:
            return _sharpened(x, g, a, t)
        # x in float32 once: NumPy's mixed integer-float arithmetic is 2-3x slower than float's,
        # and every step below is the same float32 operation either way (the same bytes).
        xf = x.astype(np.float32)
        d = np.subtract(xf, g, out=g)  # d = x - g: the blur stays float, no rounding in between
        if t == 0:                 # |d| > 0 or d == 0, where x + a·d == x: no mask needed
            if a != 1:             # d·1 is d exactly: one pass fewer at the usual amount
                d *= a
            d += xf
            return d
        return np.where(np.abs(d) > t, xf + a * d, xf)

    return _filter(img, fn, smooth=False, reach=len(k) // 2, in_float=not (fixed and a == 1 and t == 0))


def edges(img: np.ndarray, kind: str = "sobel") -> np.ndarray:
    """Edge magnitude: Sobel sqrt(gx^2 + gy^2), or the 8-neighbour Laplacian."""
    _check_image(img)
    if kind == "sobel":
        def fn(x):
            gx = _sep(x, _SOBEL_DIFF, _SOBEL_SMOOTH)
            gy = _sep(x, _SOBEL_SMOOTH, _SOBEL_DIFF)
            return np.sqrt(gx * gx + gy * gy)
    elif kind == "laplacian":
        def fn(x):
            return _corr_integers(x, _LAPLACIAN3)
    else:
        raise ProcessingError(f"edges kind must be 'sobel' or 'laplacian', got {kind!r}")
    return _filter(img, fn, smooth=False, reach=1)


def emboss(img: np.ndarray) -> np.ndarray:
    """3x3 emboss [-2,-1,0; -1,1,1; 0,1,2]."""
    _check_image(img)
    return _filter(img, lambda x: _corr_integers(x, _EMBOSS3), smooth=False, reach=1)


def _check_kernel(kernel) -> np.ndarray:
    try:
        k = np.array(kernel, dtype=np.float64)
    except (TypeError, ValueError):
        raise ProcessingError("kernel must be a square 2-D array of numbers") from None
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ProcessingError(f"kernel must be square n x n, got shape {k.shape}")
    n = k.shape[0]
    if n % 2 == 0 or n > _MAX_KERNEL:
        raise ProcessingError(f"kernel size must be odd and <= {_MAX_KERNEL}, got {n}")
    if not np.isfinite(k).all():
        raise ProcessingError("kernel values must be finite")
    return k


def separate(kernel) -> tuple[np.ndarray, np.ndarray] | None:
    """(kx, ky) with outer(ky, kx) == kernel when it has rank 1 (SVD, relative tol 1e-6), else None."""
    k = np.asarray(kernel, np.float64)
    s = np.linalg.svd(k, compute_uv=False)
    if s[0] == 0 or (len(s) > 1 and s[1] > _RANK_TOL * s[0]):
        return None
    # Factor from a real column and row rather than the SVD vectors: integer kernels then get
    # integer taps (column / its gcd), so the float32 passes stay exact, like filter2D's.
    j = int(np.abs(k).max(axis=0).argmax())
    ky = k[:, j]
    if np.array_equal(ky, np.round(ky)) and np.abs(ky).max() < 2**31:
        ky = ky / np.gcd.reduce(np.abs(ky).astype(np.int64))
    i = int(np.abs(ky).argmax())
    return k[i] / ky[i], ky


def _divisor(k: np.ndarray, divisor) -> float:
    if divisor is None:
        total = k.sum()
        # "sum is 0" with a relative tolerance: float kernels such as [.1, .2, -.3] sum to ~1e-17
        return 1.0 if abs(total) <= _RANK_TOL * np.abs(k).sum() else float(total)
    d = _finite("divisor", divisor)
    if d == 0:
        raise ProcessingError("divisor must not be 0")
    return d


def _convolve(img, kernel, divisor, offset, separable: bool) -> np.ndarray:
    _check_image(img)
    k = _check_kernel(kernel)
    d = _divisor(k, divisor)
    off = _finite("offset", offset)
    pair = separate(k) if separable else None
    if pair is not None:
        fn = lambda x: _sep(x, pair[0], pair[1])  # noqa: E731
    else:
        fn = lambda x: _corr(x, k)  # noqa: E731
    # the divisor is applied after correlating, so integer kernels sum exactly
    return _filter(img, fn, smooth=False, reach=k.shape[0] // 2, divisor=d, offset=off)


def convolve(img: np.ndarray, kernel, divisor: float | None = None,
             offset: float = 0.0) -> np.ndarray:
    """General 2-D correlation: corr(img, kernel) / divisor + offset; rank-1 kernels run as two 1-D passes."""
    return _convolve(img, kernel, divisor, offset, separable=True)
