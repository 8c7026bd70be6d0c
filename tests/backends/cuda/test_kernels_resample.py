"""kernels/resample.cu on the CPU under ASan: bit-exact vs resample.resize (Pillow 13) for every filter and mode.

``resize_batch`` is the host side the CuPy backend needs: per image it takes the integer
tables from resample.resample_coefficients() and the pass order from resample.vertical_first(),
packs all tables into one int32 buffer and runs two launches of gp_resample_pass over the
whole batch (source -> uint8 intermediate -> result).
"""

from __future__ import annotations

import numpy as np
import pytest

from gpupipe.backends.cuda.plans import resample_passes
from gpupipe.backends.numpy import resample

from tests.support import kernelcheck as kc

test_under_asan = kc.asan_test(__file__)


def resize_batch(lib, images, sizes, filters, grid=(3, 2), block=32):
    """Resize images[k] to sizes[k] = (w, h) with filters[k], all in two launches."""
    # the production host code: the passes the CUDA backend plans (gpupipe/backends/cuda/plans.py)
    plans = [resample_passes(img.shape, w, h, f) for img, (w, h), f in zip(images, sizes, filters)]
    buffer, _ = kc.pack(images)
    for step in (0, 1):
        n = len(images)
        descs = np.zeros(n, kc.DESC)
        tables, table_size = [], 0
        in_off = out_off = 0
        for d, img, plan in zip(descs, images, plans):
            direction, (iw, ih), (ow, oh), table, shift, flags = plan[step]
            c = img.shape[2]
            d["in_offset"], d["out_offset"] = in_off, out_off
            d["width"], d["height"], d["channels"] = iw, ih, c
            d["out_width"], d["out_height"], d["out_channels"] = ow, oh, c
            ksize = 0
            if table is not None:
                start, length, coeffs = table
                ksize = coeffs.shape[1]
                flat = np.concatenate([start, length, coeffs.ravel()]).astype(np.int32)
                d["aux_offset"] = table_size
                tables.append(flat)
                table_size += flat.size
            d["param"] = (direction, ksize, shift, flags)
            in_off += iw * ih * c
            out_off += ow * oh * c
        assert in_off == buffer.size
        table_buf = np.concatenate(tables) if tables else np.zeros(0, np.int32)
        if table_buf.size == 0:
            table_buf = np.zeros(1, np.int32)   # never read: every pass copies
        out = np.full(out_off, 0xA5, np.uint8)
        lib.launch("gp_resample_pass", buffer, out, descs, n, np.ascontiguousarray(table_buf, np.int32),
                   grid=grid, block=block)
        buffer = out
    return kc.unpack(buffer, descs)


FILTERS = list(resample.FILTERS)


def _targets(rng, images, kind):
    sizes = []
    for img in images:
        h, w = img.shape[:2]
        if kind == "shrink":
            sizes.append((int(rng.integers(1, w + 1)), int(rng.integers(1, h + 1))))
        elif kind == "enlarge":
            sizes.append((int(w + rng.integers(0, 30)), int(h + rng.integers(0, 30))))
        elif kind == "tall":   # height shrinks far more than width: Pillow 13's vertical-first order
            sizes.append((max(1, w - int(rng.integers(0, 3))), max(1, h // 5)))
        else:
            sizes.append((int(rng.integers(1, 2 * w + 2)), int(rng.integers(1, 2 * h + 2))))
    return sizes


SHAPES = [(1, 1), (1, 6), (8, 1), (3, 4), (17, 11), (40, 29), (64, 9), (70, 50)]


class TestResample:
    __test__ = kc.INNER

    def setup_class(self):
        kc.require_asan_loaded()
        self.lib = kc.build("resample")

    @pytest.mark.parametrize("kind", ["shrink", "enlarge", "tall", "mixed"])
    @pytest.mark.parametrize("filter", FILTERS)
    def test_resize_matches_pillow(self, filter, kind):
        rng = np.random.default_rng(FILTERS.index(filter) * 10 + len(kind))  # stable across processes
        images = kc.mixed_batch(int(rng.integers(1 << 30)), SHAPES)
        sizes = _targets(rng, images, kind)
        got = resize_batch(self.lib, images, sizes, [filter] * len(images))
        for img, (w, h), g in zip(images, sizes, got):
            want = resample.resize(img, w, h, filter)
            assert g.shape == want.shape
            assert np.array_equal(g, want), (f"{filter} {img.shape} -> {w}x{h}: "
                                             f"{int((g != want).sum())} values differ")

    def test_vertical_first_is_exercised(self):
        rng = np.random.default_rng(3)
        images = kc.mixed_batch(4, SHAPES)
        sizes = _targets(rng, images, "tall")
        assert any(resample.vertical_first(i.shape[1], i.shape[0], w, h) for i, (w, h) in zip(images, sizes))

    def test_mixed_filters_one_batch(self):
        rng = np.random.default_rng(11)
        images = kc.mixed_batch(12, SHAPES)
        sizes = _targets(rng, images, "mixed")
        filters = [FILTERS[k % 4] for k in range(len(images))]
        got = resize_batch(self.lib, images, sizes, filters, grid=(5, 3), block=7)
        for img, (w, h), f, g in zip(images, sizes, filters, got):
            assert np.array_equal(g, resample.resize(img, w, h, f)), f"{f} {img.shape} -> {w}x{h}"

    def test_photo_sized(self):
        rng = np.random.default_rng(13)
        img = kc.random_image(rng, 300, 400, 4)
        for f in FILTERS:
            for w, h in ((256, 192), (97, 300), (401, 77), (1, 1)):
                got = resize_batch(self.lib, [img], [(w, h)], [f], grid=(64, 1), block=64)[0]
                assert np.array_equal(got, resample.resize(img, w, h, f)), f"{f} -> {w}x{h}"

    @pytest.mark.parametrize("filter", FILTERS)
    def test_each_image_alone(self, filter):
        """Each image in buffers of exactly its size: ASan then sees a read outside that one image."""
        rng = np.random.default_rng(17 + FILTERS.index(filter))
        images = kc.mixed_batch(18, [(1, 1), (1, 5), (6, 1), (9, 7), (30, 4)])
        for kind in ("shrink", "enlarge", "tall"):
            for img, size in zip(images, _targets(rng, images, kind)):
                got = resize_batch(self.lib, [img], [size], [filter], grid=(2, 1), block=5)[0]
                assert np.array_equal(got, resample.resize(img, *size, filter)), f"{filter} {img.shape} -> {size}"
