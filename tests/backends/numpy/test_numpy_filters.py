"""NumPy-backend filters against scipy.ndimage float64 references (docs/design.md §4)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from PIL import Image
from scipy import ndimage as ndi

from gpupipe.backends.numpy import filters as F
from gpupipe.errors import ProcessingError

from tests.support.corpus import stills
MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


# --- float64 reference -----------------------------------------------------

def _u8(x):
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _gauss64(sigma):
    r = math.ceil(3 * sigma)
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-x * x / (2 * sigma * sigma))
    return k / k.sum()


def _contract_gauss64(sigma):
    """The Gaussian's taps on 8-bit images (whole 256ths up to FIXED_POINT_MAX_SIGMA), in float64."""
    return F.gaussian_taps(sigma, np.uint8).astype(np.float64)


def _sep64(x, k):
    return ndi.correlate1d(ndi.correlate1d(x, k, axis=0, mode="mirror"), k, axis=1, mode="mirror")


def _corr64(x, k):
    return ndi.correlate(x, np.asarray(k, np.float64), mode="mirror")


def _unsharp64(sigma, amount, threshold):
    def f(x, plain):
        g = _sep64(x, _contract_gauss64(sigma))
        if plain and sigma <= F.FIXED_POINT_MAX_SIGMA:
            g = np.rint(g)        # 8-bit pixels as they are: the blur is its 8-bit result
        d = x - g
        # the contract's mask: ties at the threshold (within 1/1024) count as not above it
        return np.where(np.abs(d) > float(F.unsharp_threshold(threshold)), x + amount * d, x)
    f.knows_plain = True
    return f


def _sobel64(x):
    gx = _corr64(x, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    gy = _corr64(x, [[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
    return np.sqrt(gx * gx + gy * gy)


SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], float)
IDENT = np.zeros((3, 3)); IDENT[1, 1] = 1
LAPLACE = -np.ones((3, 3)); LAPLACE[1, 1] = 8
EMBOSS = [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]


def reference(img, f, smooth, offset=0.0):
    """Apply per-channel float64 f with the module's alpha rule (an f that ``knows_plain`` is told
    whether it sees 8-bit pixels as they are or premultiplied ones)."""
    x = img.astype(np.float64)

    def per(a, plain=False):
        each = (lambda v: f(v, plain)) if getattr(f, "knows_plain", False) else f
        return np.stack([each(a[..., c]) for c in range(a.shape[2])], -1)

    if img.shape[2] in (1, 3):
        return _u8(per(x, plain=True) + offset)
    if (img[..., -1] == 255).all():             # opaque: filtered as without alpha
        return np.concatenate([_u8(per(x[..., :-1], plain=True) + offset), img[..., -1:]], -1)
    a = x[..., -1:]
    p = x[..., :-1] * a  # c*alpha: the spec's c*alpha/255 scaled by 255, exact for integers
    if smooth:
        fa = f(a[..., 0])[..., None]
        vis = _u8(fa) > 0
        col = np.where(vis, per(p) / np.where(vis, fa, 1), 0)
        return np.concatenate([_u8(col), _u8(fa)], -1)
    vis = a > 0
    col = np.where(vis, per(p) / np.where(vis, a, 1) + offset, 0)
    return np.concatenate([_u8(col), img[..., -1:]], -1)


# name -> (ours, float64 per-channel reference, smooth?)
OPS = {
    "box1": (lambda i: F.box_blur(i, 1), lambda x: _sep64(x, np.full(3, 1 / 3)), True),
    "box4": (lambda i: F.box_blur(i, 4), lambda x: _sep64(x, np.full(9, 1 / 9)), True),
    "gauss0.8": (lambda i: F.gaussian_blur(i, 0.8), lambda x: _sep64(x, _contract_gauss64(0.8)), True),
    "gauss2.5": (lambda i: F.gaussian_blur(i, 2.5), lambda x: _sep64(x, _contract_gauss64(2.5)), True),
    "gauss6": (lambda i: F.gaussian_blur(i, 6.0), lambda x: _sep64(x, _gauss64(6.0)), True),   # float taps
    "sharpen": (F.sharpen, lambda x: _corr64(x, SHARPEN), False),
    "sharpen0.4": (lambda i: F.sharpen(i, 0.4), lambda x: _corr64(x, IDENT + 0.4 * (SHARPEN - IDENT)), False),
    "unsharp": (F.unsharp, _unsharp64(1.0, 1.0, 0), False),
    "unsharp_t": (lambda i: F.unsharp(i, 2.0, 1.5, 3.5), _unsharp64(2.0, 1.5, 3.5), False),
    "sobel": (F.edges, _sobel64, False),
    "laplacian": (lambda i: F.edges(i, "laplacian"), lambda x: _corr64(x, LAPLACE), False),
    "emboss": (F.emboss, lambda x: _corr64(x, EMBOSS), False),
    "conv5": (lambda i: F.convolve(i, np.arange(25).reshape(5, 5) % 7 - 2),
              lambda x: _corr64(x, np.arange(25).reshape(5, 5) % 7 - 2) / 19, False),
}


def assert_close(ours, ref, min_equal=0.999):
    assert ours.dtype == np.uint8 and ours.shape == ref.shape and ours.flags.c_contiguous
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 1, f"max |d| = {diff.max()}"
    assert (diff == 0).mean() >= min_equal, f"equal fraction {(diff == 0).mean():.5f}"


def with_mode(rgb, mode, alpha=None):
    """Derive an L/LA/RGB/RGBA test image from an RGB one."""
    base = rgb if mode in ("RGB", "RGBA") else _u8(rgb @ np.array([0.299, 0.587, 0.114]))[..., None]
    if mode in ("LA", "RGBA"):
        base = np.concatenate([base, alpha[..., None]], -1)
    return np.ascontiguousarray(base)


def alpha_pattern(h, w):
    """Radial alpha: opaque centre, soft ramp, fully transparent corners."""
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((yy - h / 2) / h, (xx - w / 2) / w)
    return _u8((0.55 - r) * 255 / 0.3)


@pytest.fixture(scope="module")
def photo():
    rgb = np.asarray(Image.open(stills()[4]).convert("RGB"))
    return rgb[100:292, 200:456]  # 192x256 crop keeps scipy references quick


# --- parity with scipy -------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
def test_photo_matches_scipy(photo, op, mode):
    img = with_mode(photo, mode, alpha_pattern(*photo.shape[:2]))
    ours, f, smooth = OPS[op]
    before = img.copy()
    out = ours(img)
    assert np.array_equal(img, before), "input was modified"
    assert_close(out, reference(img, f, smooth))


def test_full_photo_gaussian():
    rgb = np.asarray(Image.open(stills()[0]).convert("RGB"))
    assert_close(F.gaussian_blur(rgb, 1.5), reference(rgb, lambda x: _sep64(x, _contract_gauss64(1.5)), True))


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), mode=st.sampled_from(list(MODES)),
       op=st.sampled_from(list(OPS)), seed=st.integers(0, 2**32 - 1))
@example(h=5, w=24, mode="RGBA", op="box1", seed=119)       # two flips on 480 samples
def test_random_matches_scipy(h, w, mode, op, seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, MODES[mode]), dtype=np.uint8)
    ours, f, smooth = OPS[op]
    out, ref = ours(img), reference(img, f, smooth)
    diff = np.abs(out.astype(int) - ref.astype(int))
    # float32 vs float64 may flip a rounding near x.5 (more likely where tiny alpha amplifies
    # the error: a premultiplied colour divided by a small blurred alpha): allow it on 0.1 % of
    # samples, at least two (a small image of noise met two), never more than 1 level.
    assert diff.max() <= 1
    assert (diff != 0).sum() <= max(2, int(0.001 * diff.size))


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 1), (3, 50), (2, 2)])
@pytest.mark.parametrize("mode", MODES)
def test_tiny_images_larger_kernels(shape, mode):
    """Kernels wider than the image: reflect-101 repeats (OpenCV does this right)."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, shape + (MODES[mode],), dtype=np.uint8)
    if MODES[mode] in (2, 4):
        img[..., -1] = rng.choice([0, 90, 255], shape)
    k31 = rng.normal(size=(31, 31))
    rank1 = np.outer(np.hanning(33)[1:-1], np.arange(31) - 10.0)
    cases = [
        (lambda i: F.box_blur(i, 12), lambda x: _sep64(x, np.full(25, 1 / 25)), True, 0),
        (lambda i: F.gaussian_blur(i, 5.0), lambda x: _sep64(x, _contract_gauss64(5.0)), True, 0),
        (lambda i: F.gaussian_blur(i, 7.0), lambda x: _sep64(x, _gauss64(7.0)), True, 0),
        (lambda i: F.unsharp(i, 4.0, 2.0), _unsharp64(4.0, 2.0, 0), False, 0),
        (lambda i: F.convolve(i, k31, divisor=40, offset=128), lambda x: _corr64(x, k31) / 40, False, 128),
        (lambda i: F.convolve(i, rank1), lambda x: _corr64(x, rank1) / rank1.sum(), False, 0),
        (F.edges, _sobel64, False, 0),
    ]
    for ours, f, smooth, off in cases:
        assert_close(ours(img), reference(img, f, smooth, off), min_equal=0.0)
        assert np.abs(ours(img).astype(int) - reference(img, f, smooth, off)).max() <= 1


def test_one_pixel_dimension_repeats_pixel():
    row = np.arange(0, 250, 10, dtype=np.uint8).reshape(1, 25, 1)
    # a 1-row image blurred vertically only sees itself: vertical-only kernel is identity
    k = np.zeros((5, 5)); k[:, 2] = 1
    assert np.array_equal(F.convolve(row, k), row)
    one = np.array([[[10, 20, 30]]], np.uint8)
    for out in (F.gaussian_blur(one, 3.0), F.box_blur(one, 5), F.sharpen(one, 2.0)):
        assert np.array_equal(out, one)


# --- alpha rule ----------------------------------------------------------------

ALL_FILTERS = [lambda i: F.box_blur(i, 2), lambda i: F.gaussian_blur(i, 1.2), F.sharpen,
               lambda i: F.unsharp(i, 1.5, 2.0, 1), F.edges, lambda i: F.edges(i, "laplacian"),
               F.emboss, lambda i: F.convolve(i, [[1, 2, 1], [0, 0, 0], [-1, -2, -1]], offset=128)]


@pytest.mark.parametrize("fn", ALL_FILTERS)
def test_opaque_rgba_equals_rgb(photo, fn):
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], -1)
    out = fn(rgba)
    assert np.array_equal(out[..., :3], fn(np.ascontiguousarray(photo)))
    assert (out[..., 3] == 255).all()
    la = np.ascontiguousarray(rgba[..., [0, 3]])
    assert np.array_equal(fn(la)[..., 0], fn(np.ascontiguousarray(photo[..., :1]))[..., 0])


@pytest.mark.parametrize("blur", [lambda i: F.box_blur(i, 3), lambda i: F.gaussian_blur(i, 2.0)])
def test_transparent_black_does_not_darken(blur):
    img = np.zeros((20, 30, 4), np.uint8)
    img[:, :15] = (250, 200, 100, 255)  # right half is transparent black
    out = blur(img)
    vis = out[..., 3] > 0
    assert vis[:, 15:].any() and (out[..., 3][:, 14] < 255).all()  # alpha did spread and soften
    assert (np.abs(out[vis][:, :3].astype(int) - [250, 200, 100]) <= 1).all()
    assert (out[~vis][:, :3] == 0).all()


def test_non_smoothing_keeps_alpha_and_zeroes_invisible():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    img[::3, :, 3] = 0
    for fn in ALL_FILTERS[2:]:
        out = fn(img)
        assert np.array_equal(out[..., 3], img[..., 3])
        assert (out[img[..., 3] == 0][:, :3] == 0).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sigma", [0.3, 1.0, 4.0, 12.0])
def test_gaussian_of_constant_is_constant(mode, sigma):
    img = np.full((23, 31, MODES[mode]), 173, np.uint8)
    if MODES[mode] in (2, 4):
        img[..., -1] = 61
    assert np.array_equal(F.gaussian_blur(img, sigma), img)
    assert np.array_equal(F.box_blur(img, 7), img)


@pytest.mark.parametrize("mode", MODES)
def test_sharpen_amount_zero_is_identity(photo, mode):
    alpha = np.maximum(alpha_pattern(*photo.shape[:2]), 1)  # alpha 0 would zero the colour
    img = with_mode(photo, mode, alpha)
    assert np.array_equal(F.sharpen(img, 0), img)
    assert np.array_equal(F.unsharp(img, 1.0, 0.0), img)


@pytest.mark.parametrize("r", [1, 2, 5])
def test_box_blur_matches_cv2_blur(photo, r):
    for img in (np.ascontiguousarray(photo), np.ascontiguousarray(photo[..., :1])):
        ref = cv2.blur(img, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT_101).reshape(img.shape)
        assert_close(F.box_blur(img, r), ref, min_equal=0.99)


# --- convolve ------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 3, 7, 15, 31])
def test_separable_path_agrees_with_2d(photo, n):
    rng = np.random.default_rng(n)
    k = np.outer(rng.random(n) + 0.1, rng.random(n) - 0.3)
    d = float(np.abs(k).sum()) / 2
    assert F.separate(k) is not None
    img = with_mode(photo, "RGBA", alpha_pattern(*photo.shape[:2]))
    fast = F.convolve(img, k, divisor=d, offset=20)
    slow = F._convolve(img, k, d, 20, separable=False)
    assert np.abs(fast.astype(int) - slow.astype(int)).max() <= 1
    assert_close(fast, reference(img, lambda x: _corr64(x, k) / d, False, 20))


def test_separate_detects_rank():
    assert F.separate(np.outer([1, 2, 1], [-1, 0, 1])) is not None
    assert F.separate(np.ones((5, 5))) is not None
    assert F.separate(LAPLACE) is None
    assert F.separate(SHARPEN) is None
    assert F.separate(np.zeros((3, 3))) is None
    kx, ky = F.separate(np.outer([1, 4, 6, 4, 1], [1, 2, 1, 2, 1]))
    np.testing.assert_allclose(np.outer(ky, kx), np.outer([1, 4, 6, 4, 1], [1, 2, 1, 2, 1]), atol=1e-9)


def test_convolve_divisor_rules(photo):
    img = np.ascontiguousarray(photo)
    zero_sum = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    assert_close(F.convolve(img, zero_sum, offset=128),
                 reference(img, lambda x: _corr64(x, zero_sum), False, 128))
    assert np.array_equal(F.convolve(img, np.ones((3, 3))), F.box_blur(img, 1))
    assert_close(F.convolve(img, np.ones((3, 3)), divisor=18),
                 reference(img, lambda x: _corr64(x, np.ones((3, 3))) / 18, False))


# --- contract basics -------------------------------------------------------------

def test_gaussian_kernel():
    for s in (0.1, 0.5, 1.0, 2.7):
        k = F.gaussian_kernel(s)
        assert k.dtype == np.float32 and k.shape == (2 * math.ceil(3 * s) + 1,)
        assert abs(float(k.sum(dtype=np.float64)) - 1) < 1e-6
        assert np.array_equal(k, k[::-1])


@pytest.mark.parametrize("sigma", [0.05, 0.27, 0.5, 0.91, 1.0, 1.56, 2.3, 3.0, 4.4, 5.0])
def test_8_bit_gaussian_taps_are_whole_256ths_of_the_gaussian(sigma):
    """Whole 256ths summing to exactly 1, symmetric, falling away from the centre, no zero taps at
    the ends, each within one 256th of the exact tap (sigmas where rounding alone would miss 1 by
    up to 4 units among them)."""
    taps = F.gaussian_taps(sigma, np.uint8)
    units = taps.astype(np.float64) * 256
    assert np.array_equal(units, np.rint(units)) and units.sum() == 256
    assert np.array_equal(units, units[::-1]) and units[0] > 0
    r = len(units) // 2
    assert (np.diff(units[r:]) <= 0).all()
    exact = F.gaussian_kernel(sigma).astype(np.float64) * 256
    cut = (len(exact) - len(units)) // 2
    assert np.abs(units - exact[cut:len(exact) - cut]).max() < 1 and (exact[:cut] < 1).all()
    # 16-bit images, and sigmas past the fixed-point range, keep the float32 taps
    assert np.array_equal(F.gaussian_taps(sigma, np.uint16), F.gaussian_kernel(sigma))
    assert np.array_equal(F.gaussian_taps(F.FIXED_POINT_MAX_SIGMA + 0.5, np.uint8),
                          F.gaussian_kernel(F.FIXED_POINT_MAX_SIGMA + 0.5))


def _exact_fixed_blur(img, sigma):
    """The 8-bit Gaussian in whole numbers: sum(taps * 256) over reflect-101 neighbours, both ways
    (float64 holds them exactly), divided by 65536 and rounded half to even; and how many of the
    sums were exact halves."""
    units = np.rint(F.gaussian_taps(sigma, np.uint8).astype(np.float64) * 256)
    sums = np.rint(_sep64(img.astype(np.float64), units)).astype(np.int64)   # whole numbers below 2**24: exact
    q, rem = np.divmod(sums, 65536)
    q += (rem > 32768) | ((rem == 32768) & (q % 2 == 1))
    return np.minimum(q, 255).astype(np.uint8), int((rem == 32768).sum())


@pytest.mark.parametrize("sigma", [0.3, 0.8, 1.0, 2.0, 3.0, 5.0])
def test_8_bit_gaussian_is_the_exact_sum_rounded_half_to_even(sigma):
    """Every width from 1 to 70 and about the vector loops' steps, one and three channels, images
    that make many exact halves (multiples of 64): OpenCV's integer path rounds the end of each
    row half up, so those columns are summed again (_sep_fixed)."""
    rng = np.random.default_rng(int(sigma * 10))
    ties = 0
    for w in [*range(1, 71), 127, 128, 129, 255, 256, 257, 341, 1023]:
        for channels in (1, 3):
            img = rng.integers(0, 256, (int(rng.integers(1, 24)), w, channels), dtype=np.uint8)
            if w % 2:
                img = (img // 64 * 64).astype(np.uint8)
            expected, halves = _exact_fixed_blur(img, sigma)
            assert np.array_equal(F.gaussian_blur(img, sigma), expected), (sigma, img.shape)
            assert np.array_equal(F.unsharp(img, sigma), np.clip(2 * img.astype(int) - expected, 0, 255))
            x, d = img.astype(np.float32), img.astype(np.float32) - expected   # float32 steps, as on the GPU
            sharp = np.where(np.abs(d) > F.unsharp_threshold(3), x + np.float32(0.7) * d, x)
            assert np.array_equal(F.unsharp(img, sigma, 0.7, 3), np.clip(np.rint(sharp), 0, 255).astype(np.uint8))
            ties += halves
    assert ties > 20        # the images did make exact halves to round


def test_8_bit_gaussian_stays_within_two_levels_of_the_float_gaussian():
    """The quality the fixed-point taps give up, on real photos: at most 2 levels from the float32
    Gaussian anywhere, PSNR over 55 dB, at every sigma they are used for."""
    photos = [np.asarray(Image.open(path).convert("RGB").reduce(2)) for path in stills()[:4]]
    for sigma in (0.5, 1.0, 2.0, 3.0, 4.0, 5.0):
        k = F.gaussian_kernel(sigma)
        for img in photos:
            fixed = F.gaussian_blur(img, sigma).astype(np.float64)
            float_taps = F._sep(img, k, k)
            error = fixed - float_taps
            assert np.abs(error).max() < 2.5, sigma
            assert 10 * np.log10(255**2 / np.mean(error**2)) > 55, sigma


def test_non_contiguous_input_not_modified(photo):
    view = photo[::2, ::-1]  # strided, reversed view
    before = view.copy()
    for fn in ALL_FILTERS:
        out = fn(view)
        assert out.flags.c_contiguous and out.dtype == np.uint8 and out.shape == view.shape
        assert np.array_equal(out, fn(np.ascontiguousarray(view)))
    assert np.array_equal(view, before)


@pytest.mark.parametrize("call", [
    lambda i: F.box_blur(i, 0), lambda i: F.box_blur(i, -2), lambda i: F.box_blur(i, 1.5),
    lambda i: F.box_blur(i, True), lambda i: F.box_blur(i, "3"),
    lambda i: F.gaussian_blur(i, 0), lambda i: F.gaussian_blur(i, -1),
    lambda i: F.gaussian_blur(i, float("nan")), lambda i: F.gaussian_blur(i, float("inf")),
    lambda i: F.sharpen(i, -1), lambda i: F.sharpen(i, float("nan")),
    lambda i: F.unsharp(i, 0), lambda i: F.unsharp(i, 1, -1), lambda i: F.unsharp(i, 1, 1, -0.5),
    lambda i: F.edges(i, "canny"),
    lambda i: F.convolve(i, np.ones((4, 4))), lambda i: F.convolve(i, np.ones((33, 33))),
    lambda i: F.convolve(i, np.ones((3, 5))), lambda i: F.convolve(i, np.ones(3)),
    lambda i: F.convolve(i, [[1, 2, 3], [4, float("nan"), 6], [7, 8, 9]]),
    lambda i: F.convolve(i, [["a"] * 3] * 3), lambda i: F.convolve(i, np.ones((3, 3)), divisor=0),
    lambda i: F.convolve(i, np.ones((3, 3)), offset=float("inf")),
])
def test_bad_parameters_raise(call):
    with pytest.raises(ProcessingError):
        call(np.zeros((4, 4, 3), np.uint8))


@pytest.mark.parametrize("img", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8),
                                 np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8), [[1]]])
def test_bad_images_raise(img):
    with pytest.raises(ProcessingError):
        F.box_blur(img, 1)


@pytest.mark.parametrize("n", [9, 11, 15, 31])
def test_large_integer_kernels_are_exact(n: int) -> None:
    # Large kernels must not go through a DFT: with integer taps and divisor the float32
    # sums are exact, so every pixel must equal the float64 reference, ties included.
    import scipy.ndimage as ndi
    rng = np.random.default_rng(n)
    kernel = rng.integers(-3, 4, (n, n)).astype(np.float64)
    kernel[n // 2, n // 2] += 40            # not separable, positive sum
    img = rng.integers(0, 256, (57, 83, 3), dtype=np.uint8)
    got = F.convolve(img, kernel, divisor=7)
    ref = np.stack([ndi.correlate(img[..., c].astype(np.float64), kernel, mode="mirror") / 7
                    for c in range(3)], axis=-1)
    assert np.array_equal(got, np.clip(np.rint(ref), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 2, 2), (2, 2, 1), (1, 5, 1), (3, 2, 3), (97, 131, 3), (40, 50, 4)])
def test_storing_filtered_floats_rounds_half_to_even_and_clamps(shape):
    # What every 8-bit filter result goes through (OpenCV's saturating conversion, NumPy for a few
    # values): the same bytes as clip(rint(x), 0, 255), ties and out-of-range values included.
    rng = np.random.default_rng(len(shape) * 100 + shape[1])
    x = (rng.random(shape, np.float32) * 330 - 40).astype(np.float32)
    ties = rng.random(shape) < 0.3
    x[ties] = np.floor(x[ties]) + np.float32(0.5)
    x.flat[0] = -0.5
    x.flat[-1] = 254.5
    expected = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    got = F._store(x, np.uint8)
    assert got.shape == shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_a_large_image_filtered_in_strips_is_the_image_filtered_whole(channels, monkeypatch):
    """Large images are filtered in horizontal strips with a halo, each stored straight into the
    result: the same bytes as filtering the whole image at once."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (700, 130, channels), dtype=np.uint8)
    if channels == 4:            # translucent below, opaque above: each strip filtered as the image is
        img[..., 3] = rng.choice([0, 90, 255], img.shape[:2])
        img[:350, :, 3] = 255
    calls = [lambda x: F.gaussian_blur(x, 3.0), lambda x: F.unsharp(x, 1.0, 1.5, 2), F.sharpen,
             lambda x: F.convolve(x, np.ones((3, 3), np.float32), divisor=9, offset=5),
             lambda x: F.box_blur(x, 2), lambda x: F.sharpen(x, 0.7)]
    monkeypatch.setattr(F, "_STRIP_BYTES", 64 * 1024)          # strips of a few dozen rows, plus the halo
    strips = [call(img) for call in calls]
    monkeypatch.setattr(F, "_STRIP_BYTES", 2**40)               # one strip: the whole image
    for call, stripped in zip(calls, strips):
        assert np.array_equal(stripped, call(img))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_integer_kernels_on_8_bit_pixels_give_the_float_paths_bytes(channels, monkeypatch):
    """Sharpen at a whole amount, emboss and the laplacian sum 8-bit pixels in integers and store
    them at once (_corr_integers): exactly what the float32 correlation stores, at every amount the
    op allows, on noise, on black-and-white extremes, on slivers and in strips."""
    rng = np.random.default_rng(11)
    images = [rng.integers(0, 256, (41, 57, channels), dtype=np.uint8),
              (rng.integers(0, 2, (33, 29, channels)) * 255).astype(np.uint8),
              rng.integers(0, 256, (1, 17, channels), dtype=np.uint8),
              rng.integers(0, 256, (700, 130, channels), dtype=np.uint8)]
    calls = [lambda x, a=a: F.sharpen(x, a) for a in (0, 1, 2, 3, 7, 28, 100)]
    calls += [F.emboss, lambda x: F.edges(x, "laplacian"), lambda x: F.sharpen(x, 1.5)]
    monkeypatch.setattr(F, "_STRIP_BYTES", 64 * 1024)          # the tall image in strips
    fast = [call(img) for call in calls for img in images]
    monkeypatch.setattr(F, "_corr_integers", lambda x, k: F._corr(x, k))
    slow = [call(img) for call in calls for img in images]
    for got, expected in zip(fast, slow):
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, expected)
