"""kernels/convolve.cu on the CPU under ASan vs filters.py (docs/design.md §4 parity: max |Δ| ≤ 1, ≥ 99.9 % equal).

The integer-kernel filters (emboss, laplacian, sobel, sharpen at amount 1, integer
convolve kernels) and the Gaussians of 8-bit images (taps of whole 256ths: gaussian_blur, unsharp)
sum exactly in float32 and must match bit for bit (for unsharp: at amount 1; premultiplied images
excepted); the others may differ by one level where OpenCV orders its float sums differently.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from gpupipe.backends.numpy import filters

from tests.support import kernelcheck as kc

test_under_asan = kc.asan_test(__file__)

SHAPES = [(1, 1), (1, 9), (7, 1), (2, 2), (3, 5), (6, 4), (17, 13), (40, 33)]


def filter_batch(lib, images, kind, *, taps=None, taps2=None, smooth=False, divisor=1.0, offset=0.0,
                 unsharp=None, grid=(3, 2), block=32, rows="gp_sep_rows"):
    """Run one filter on a packed batch the way the CuPy backend will: flags, then one or two passes
    (``rows``: the row pass, gp_sep_rows or convolve_tiled.cu's gp_sep_rows_tiled)."""
    src, descs, size, flags = _flagged(lib, images, grid, block)
    n = len(images)
    dst = np.full(size, 0xA5, np.uint8)
    if kind == "separable":
        kx, ky = (np.ascontiguousarray(t, np.float32) for t in taps)
        tmp = _row_pass(rows, src, descs, size, flags, kx, smooth, grid, block)
        mode, amount, threshold = (0, 0.0, 0.0) if unsharp is None else (1, *unsharp)
        if unsharp is not None and filters._fixed_point(ky, np.uint8):
            mode = 2                  # as plans._filter: the 8-bit blur is stored first
        lib.launch("gp_sep_cols", src, tmp, dst, descs, n, ky, len(ky) // 2, flags, int(smooth),
                   np.float32(divisor), np.float32(offset), mode, np.float32(amount), np.float32(threshold),
                   grid=grid, block=block)
    else:
        k = np.ascontiguousarray(taps, np.float32)
        if taps2 is not None:
            k = np.ascontiguousarray(np.concatenate([k.ravel(), np.asarray(taps2, np.float32).ravel()]))
        lib.launch("gp_correlate", src, dst, descs, n, k, np.asarray(taps).shape[0] // 2, flags,
                   np.float32(divisor), np.float32(offset), int(taps2 is not None), grid=grid, block=block)
    return kc.unpack(dst, descs), flags


def row_pass(rows, images, kx, smooth, grid, block):
    """The float32 intermediate the row pass ``rows`` writes (NaN where it writes nothing), as raw bits."""
    src, descs, size, flags = _flagged(kc.build("convolve"), images, (3, 2), 32)
    return _row_pass(rows, src, descs, size, flags, np.ascontiguousarray(kx, np.float32), smooth, grid,
                     block).view(np.uint32)


def _flagged(lib, images, grid, block):
    """The packed batch, its descriptors and size, and gp_translucent's flags for it."""
    src, _ = kc.pack(images)
    descs, size = kc.descriptors(images, [i.shape for i in images])
    flags = np.zeros(len(images), np.int32)
    lib.launch("gp_translucent", src, descs, len(images), flags, grid=grid, block=block)
    return src, descs, size, flags


def _row_pass(rows, src, descs, size, flags, kx, smooth, grid, block):
    tmp = np.full(size, np.nan, np.float32)
    kc.kernel_library(rows).launch(rows, src, tmp, descs, len(flags), kx, len(kx) // 2, flags, int(smooth),
                                   grid=grid, block=block)
    return tmp


def batch(seed, shapes=SHAPES, opaque_too=True):
    images = kc.mixed_batch(seed, shapes)
    if opaque_too:   # alpha images that are fully opaque take the no-alpha path
        rng = np.random.default_rng(seed)
        for c in (2, 4):
            img = kc.random_image(rng, 11, 8, c)
            img[..., -1] = 255
            images.append(img)
    return images


def check_fixed_parity(images, got, want, what):
    """Gaussians of 8-bit images by taps of whole 256ths: bit for bit wherever the image is not
    premultiplied (no alpha, or all opaque), within parity elsewhere."""
    plain = [i for i, img in enumerate(images) if img.shape[2] in (1, 3) or (img[..., -1] == 255).all()]
    assert plain, "the batch has images that are not premultiplied"
    check_parity([got[i] for i in plain], [want[i] for i in plain], what + " (not premultiplied)", exact=True)
    check_parity(got, want, what)


def check_parity(got, want, what, exact=False):
    assert [g.shape for g in got] == [w.shape for w in want]
    diff = np.concatenate([np.abs(g.astype(np.int16) - w.astype(np.int16)).ravel() for g, w in zip(got, want)])
    worst = int(diff.max())
    equal = float((diff == 0).mean())
    if exact:
        assert worst == 0, f"{what}: max |Δ| {worst}, {100 * (1 - equal):.3f} % differ (expected bit-exact)"
    assert worst <= 1 and equal >= 0.999, f"{what}: max |Δ| {worst}, {100 * equal:.3f} % equal"


def exact_correlation(img, kernel, divisor, offset):
    """filters.py's alpha rule for a non-smoothing filter, in float64 (scipy "mirror" is reflect-101)."""
    f = img.astype(np.float64)
    alpha = img.shape[2] in (2, 4) and (img[..., -1] != 255).any()
    colour = img.shape[2] - (img.shape[2] in (2, 4))
    if alpha:
        f[..., :colour] *= f[..., -1:]
    out = img.copy()
    for c in range(colour):
        v = ndimage.correlate(f[..., c], kernel, mode="mirror")
        if alpha:
            a = f[..., -1]
            v = np.where(a > 0, v / np.where(a > 0, a * divisor, 1) + offset, 0)
        else:
            v = v / divisor + offset
        out[..., c] = np.clip(np.rint(v), 0, 255)
    if img.shape[2] in (2, 4) and not alpha:
        out[..., -1] = 255
    return out


SOBEL_X = np.outer(filters._SOBEL_SMOOTH, filters._SOBEL_DIFF)
SOBEL_Y = np.outer(filters._SOBEL_DIFF, filters._SOBEL_SMOOTH)


class TestConvolve:
    __test__ = kc.INNER

    def setup_class(self):
        kc.require_asan_loaded()
        self.lib = kc.build("convolve")

    def test_translucent_flags(self):
        images = batch(1)
        _, flags = filter_batch(self.lib, images, "2d", taps=filters._EMBOSS3)
        want = [int(i.shape[2] in (2, 4) and (i[..., -1] != 255).any()) for i in images]
        assert flags.tolist() == want

    @pytest.mark.parametrize("sigma", [0.3, 0.8, 1.0, 1.7, 3.0, 5.0, 6.0])
    def test_gaussian_blur(self, sigma):
        images = batch(2)
        k = filters.gaussian_taps(sigma, np.uint8)
        got, _ = filter_batch(self.lib, images, "separable", taps=(k, k), smooth=True)
        want = [filters.gaussian_blur(i, sigma) for i in images]
        if sigma <= filters.FIXED_POINT_MAX_SIGMA:
            check_fixed_parity(images, got, want, f"gaussian {sigma}")
        else:                 # float32 taps: OpenCV orders its sums its own way
            check_parity(got, want, f"gaussian {sigma}")

    @pytest.mark.parametrize("radius", [1, 2, 3, 5, 12])
    def test_box_blur(self, radius):
        images = batch(3)
        k = np.full(2 * radius + 1, 1.0 / (2 * radius + 1), np.float32)
        got, _ = filter_batch(self.lib, images, "separable", taps=(k, k), smooth=True)
        check_parity(got, [filters.box_blur(i, radius) for i in images], f"box {radius}")

    @pytest.mark.parametrize("amount", [1.0, 0.0, 0.5, 2.3])
    def test_sharpen(self, amount):
        images = batch(4)
        k = filters._IDENTITY3 + np.float32(amount) * (filters._SHARPEN3 - filters._IDENTITY3)
        got, _ = filter_batch(self.lib, images, "2d", taps=k)
        check_parity(got, [filters.sharpen(i, amount) for i in images], f"sharpen {amount}",
                     exact=amount in (0.0, 1.0))

    def test_emboss(self):
        images = batch(5)
        got, _ = filter_batch(self.lib, images, "2d", taps=filters._EMBOSS3)
        check_parity(got, [filters.emboss(i) for i in images], "emboss", exact=True)

    def test_laplacian(self):
        images = batch(6)
        got, _ = filter_batch(self.lib, images, "2d", taps=filters._LAPLACIAN3)
        check_parity(got, [filters.edges(i, "laplacian") for i in images], "laplacian", exact=True)

    def test_sobel(self):
        images = batch(7)
        got, _ = filter_batch(self.lib, images, "2d", taps=SOBEL_X, taps2=SOBEL_Y)
        check_parity(got, [filters.edges(i, "sobel") for i in images], "sobel")

    @pytest.mark.parametrize("sigma,amount,threshold", [(1.0, 1.0, 0), (2.0, 0.7, 0), (1.3, 2.0, 4.0),
                                                       (3.0, 1.0, 2.0)])
    def test_unsharp(self, sigma, amount, threshold):
        images = batch(8)
        k = filters.gaussian_taps(sigma, np.uint8)
        got, _ = filter_batch(self.lib, images, "separable", taps=(k, k),
                              unsharp=(amount, filters.unsharp_threshold(threshold)))
        want = [filters.unsharp(i, sigma, amount, threshold) for i in images]
        check_fixed_parity(images, got, want, f"unsharp {sigma} {amount} {threshold}")

    @pytest.mark.parametrize("case", range(8))
    def test_convolve(self, case):
        rng = np.random.default_rng(100 + case)
        n = [3, 5, 3, 7, 5, 9, 3, 11][case]
        if case % 2 == 0:      # rank 1: two passes
            kx, ky = rng.integers(-3, 4, n), rng.integers(-3, 4, n)
            ky[n // 2] = 2
            kx[n // 2] = 1
            kernel = np.outer(ky, kx).astype(np.float64)
        else:                  # general 2-D
            kernel = rng.integers(-4, 5, (n, n)).astype(np.float64)
        if case in (4, 5):
            kernel = kernel * 0.37
        divisor = [None, None, 3.0, None, None, 7.5, None, 2.0][case]
        offset = [0.0, 10.0, 0.0, -5.5, 0.0, 128.0, 0.0, 3.0][case]
        images = batch(9 + case)
        d = np.float32(filters._divisor(kernel, divisor))
        pair = filters.separate(kernel)
        if pair is not None:
            got, _ = filter_batch(self.lib, images, "separable", taps=pair, divisor=d, offset=offset)
        else:
            got, _ = filter_batch(self.lib, images, "2d", taps=kernel, divisor=d, offset=offset)
        assert (pair is not None) == (case % 2 == 0)
        want = [filters.convolve(i, kernel, divisor, offset) for i in images]
        # Integer kernels (cases 0, 1, 3, 7 — 7 is 11×11, which NumPy sums directly rather than
        # through OpenCV's DFT) must match bit for bit; the others within docs/design.md §4 parity.
        check_parity(got, want, f"convolve case {case}", exact=case in (0, 1, 3, 7))
        if case == 7:          # and both equal the float64 ground truth
            check_parity(got, [exact_correlation(i, kernel, d, offset) for i in images],
                         "convolve 11x11 vs float64", exact=True)

    @pytest.mark.parametrize("grid,block", kc.COOPERATIVE_GRIDS)
    def test_tiled_row_pass_writes_what_gp_sep_rows_writes(self, grid, block):
        """gp_sep_rows_tiled (convolve_tiled.cu) against its twin, bit for bit: every mode, opaque and
        translucent, rows of one to three segments (the last partial), radii from 1 to the apron's 64
        (reflecting more than once on the narrow images), smooth and not, negative taps."""
        rng = np.random.default_rng(50)
        images = batch(51) + [kc.random_image(rng, h, w, c) for (h, w), c in
                              (((3, 1100), 4), ((2, 2049), 3), ((4, 1024), 2), ((2, 1023), 1), ((1, 1025), 3))]
        opaque = kc.random_image(rng, 2, 1030, 4)
        opaque[..., -1] = 255
        images.append(opaque)
        cases = [(filters.gaussian_kernel(0.3), True), (filters.gaussian_kernel(3.0), True),
                 (filters.gaussian_kernel(3.0), False), (np.full(129, 1 / 129, np.float32), True),
                 (rng.integers(-3, 4, 7).astype(np.float32), False)]
        for kx, smooth in cases:
            want = row_pass("gp_sep_rows", images, kx, smooth, (3, 2), 32)
            got = row_pass("gp_sep_rows_tiled", images, kx, smooth, grid, block)
            assert np.array_equal(got, want), f"{len(kx)} taps, smooth {smooth}: {np.sum(got != want)} values differ"

    def test_filters_with_the_tiled_row_pass(self):
        images = batch(52)
        k = filters.gaussian_taps(1.7, np.uint8)
        got, _ = filter_batch(self.lib, images, "separable", taps=(k, k), smooth=True, rows="gp_sep_rows_tiled")
        check_fixed_parity(images, got, [filters.gaussian_blur(i, 1.7) for i in images], "gaussian 1.7, tiled rows")
        got, _ = filter_batch(self.lib, images, "separable", taps=(k, k), unsharp=(1.5, 0.0), rows="gp_sep_rows_tiled")
        check_fixed_parity(images, got, [filters.unsharp(i, 1.7, 1.5, 0) for i in images], "unsharp 1.7, tiled rows")

    def test_kernel_larger_than_image(self):
        images = batch(20, shapes=[(1, 1), (1, 2), (2, 1), (2, 3), (3, 3)], opaque_too=False)
        k = filters.gaussian_taps(4.0, np.uint8)    # 23 taps on images of 1..3 pixels
        got, _ = filter_batch(self.lib, images, "separable", taps=(k, k), smooth=True)
        check_fixed_parity(images, got, [filters.gaussian_blur(i, 4.0) for i in images], "gaussian on tiny images")
        kernel = np.random.default_rng(21).integers(-3, 4, (9, 9)).astype(np.float64)
        got, _ = filter_batch(self.lib, images, "2d", taps=kernel, divisor=np.float32(filters._divisor(kernel, None)))
        check_parity(got, [filters.convolve(i, kernel) for i in images], "9x9 on tiny images", exact=True)

    @pytest.mark.parametrize("grid,block", [((1, 1), 1), ((5, 3), 7), ((128, 64), 64)])
    def test_launch_shapes(self, grid, block):
        images = batch(30)
        k = filters.gaussian_taps(1.2, np.uint8)
        got, _ = filter_batch(self.lib, images, "separable", taps=(k, k), smooth=True, grid=grid, block=block)
        check_fixed_parity(images, got, [filters.gaussian_blur(i, 1.2) for i in images], f"gaussian grid {grid}x{block}")

    def test_each_image_alone(self):
        """Each image in buffers of exactly its size: ASan then sees a read outside that one image."""
        images = batch(40, shapes=[(1, 1), (1, 4), (5, 1), (2, 2), (6, 9)])
        k = filters.gaussian_taps(1.5, np.uint8)
        kernel = np.random.default_rng(41).integers(-2, 3, (5, 5)).astype(np.float64)
        d = np.float32(filters._divisor(kernel, None))
        for img in images:
            got, _ = filter_batch(self.lib, [img], "separable", taps=(k, k), smooth=True, grid=(2, 1), block=3)
            check_parity(got, [filters.gaussian_blur(img, 1.5)], f"gaussian alone {img.shape}",
                         exact=img.shape[2] in (1, 3))
            got, _ = filter_batch(self.lib, [img], "separable", taps=(k, k), unsharp=(1.5, 0.0))
            check_parity(got, [filters.unsharp(img, 1.5, 1.5, 0)], f"unsharp alone {img.shape}",
                         exact=img.shape[2] in (1, 3))
            got, _ = filter_batch(self.lib, [img], "2d", taps=kernel, divisor=d, grid=(2, 1), block=3)
            check_parity(got, [filters.convolve(img, kernel)], f"5x5 alone {img.shape}", exact=True)
            got, _ = filter_batch(self.lib, [img], "2d", taps=SOBEL_X, taps2=SOBEL_Y)
            check_parity(got, [filters.edges(img, "sobel")], f"sobel alone {img.shape}")
