"""kernels/composite.cu on the CPU under ASan vs composite.watermark: every position, mode and opacity."""

from __future__ import annotations

import numpy as np
import pytest

from gpupipe.backends.numpy import composite

from tests.support import kernelcheck as kc

test_under_asan = kc.asan_test(__file__)

SHAPES = [(1, 1), (1, 9), (7, 1), (5, 6), (17, 13), (40, 33), (24, 60)]


def watermark_batch(lib, images, marks, position, margin, opacity, grid=(3, 2), block=32):
    """One launch for the batch; marks[k] is image k's RGBA mark (shared marks are packed once)."""
    unique = {}
    for m in marks:
        unique.setdefault(id(m), m)
    mark_buf, mark_offsets = kc.pack(list(unique.values()))
    where = dict(zip(unique, mark_offsets))
    descs, size = kc.descriptors(images, [i.shape for i in images])
    for d, img, mark in zip(descs, images, marks):
        H, W = img.shape[:2]
        h, w = mark.shape[:2]
        if position != "tile":
            (d["x"], d["y"]), = composite.placements(W, H, w, h, position, margin)
        d["aux_offset"] = where[id(mark)]
        d["param"] = (w, h, int(position == "tile"), margin)
    src, _ = kc.pack(images)
    dst = src.copy()              # the kernel writes only under the marks: the host copies first (plans.MEMCPY)
    lib.launch("gp_watermark", src, dst, descs, len(images), mark_buf, np.float32(opacity), grid=grid, block=block)
    return kc.unpack(dst, descs)


def random_mark(rng, h, w):
    mark = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    special = rng.random((h, w)) < 0.3
    mark[..., 3][special] = rng.choice(np.array([0, 255], np.uint8), int(special.sum()))
    return mark


class TestWatermark:
    __test__ = kc.INNER

    def setup_class(self):
        kc.require_asan_loaded()
        self.lib = kc.build("composite")

    @pytest.mark.parametrize("position", composite.POSITIONS)
    @pytest.mark.parametrize("opacity", [0.5, 1.0, 0.0, 0.37])
    def test_matches_numpy(self, position, opacity):
        rng = np.random.default_rng(composite.POSITIONS.index(position) * 7 + int(opacity * 100))
        images = kc.mixed_batch(int(rng.integers(1 << 30)), SHAPES)
        shared = random_mark(rng, 4, 7)
        marks = [shared if k % 2 else random_mark(rng, int(rng.integers(1, 12)), int(rng.integers(1, 12)))
                 for k in range(len(images))]
        for margin in (0, 2, 5):
            got = watermark_batch(self.lib, images, marks, position, margin, opacity)
            for img, mark, g in zip(images, marks, got):
                want = composite.watermark(img, mark, position, margin, opacity)
                assert np.array_equal(g, want), (f"{position} m={margin} op={opacity} {img.shape} mark {mark.shape}: "
                                                 f"{int((g != want).sum())} values differ, max "
                                                 f"{int(np.abs(g.astype(int) - want).max())}")

    def test_text_mark(self):
        rng = np.random.default_rng(9)
        mark = composite.render_text("gpupipe ©", 14, (250, 20, 90))
        images = [kc.random_image(rng, 48, 120, c) for c in (1, 2, 3, 4)]
        for position in composite.POSITIONS:
            got = watermark_batch(self.lib, images, [mark] * 4, position, 3, 0.5, grid=(16, 4), block=64)
            for img, g in zip(images, got):
                assert np.array_equal(g, composite.watermark(img, mark, position, 3, 0.5)), (position, img.shape)

    def test_each_image_alone(self):
        """Each image and mark in buffers of exactly their size: ASan sees any read outside them."""
        rng = np.random.default_rng(21)
        images = kc.mixed_batch(22, [(1, 1), (3, 8), (9, 2), (12, 12)])
        for position in composite.POSITIONS:
            for img in images:
                mark = random_mark(rng, int(rng.integers(1, 6)), int(rng.integers(1, 6)))
                for margin in (0, 1, 4):
                    got = watermark_batch(self.lib, [img], [mark], position, margin, 0.8, grid=(2, 1), block=3)[0]
                    assert np.array_equal(got, composite.watermark(img, mark, position, margin, 0.8)), \
                        (position, margin, img.shape, mark.shape)
