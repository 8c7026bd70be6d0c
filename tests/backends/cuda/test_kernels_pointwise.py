"""kernels/pointwise.cu and kernels/geometry.cu on the CPU under ASan: bit-exact vs the NumPy backend.

Run in a child process with the ASan runtime preloaded (see tests/support/kernelcheck.py);
the parent collects only ``test_under_asan``.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpupipe import ops
from gpupipe.backends.cuda.plans import colour_table
from gpupipe.backends.numpy import color, geometry

from tests.support import kernelcheck as kc

test_under_asan = kc.asan_test(__file__)

# launch shapes: a tiny grid (long grid-stride loops), an odd one, one wider than the work
GRIDS = [((1, 1), 1), ((3, 2), 7), ((64, 40), 32)]


def _check_equal(got, want, what):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"{what}: image {k} shape {g.shape} != {w.shape}"
        if not np.array_equal(g, w):
            bad = np.argwhere(g != w)[:5]
            raise AssertionError(f"{what}: image {k} {w.shape} differs at {bad.tolist()}: "
                                 f"{[int(g[tuple(b)]) for b in bad]} != {[int(w[tuple(b)]) for b in bad]}")


def _grey_channels(c):
    return 1 if c in (1, 3) else 2


class TestPointwise:
    __test__ = kc.INNER

    def setup_class(self):
        kc.require_asan_loaded()
        self.lib = kc.build("pointwise")

    @pytest.mark.parametrize("grid,block", GRIDS)
    def test_grayscale(self, grid, block):
        images = kc.mixed_batch(1)
        shapes = [(h, w, _grey_channels(c)) for h, w, c in (i.shape for i in images)]
        got = kc.run_batch(self.lib, "gp_grayscale", images, shapes, grid=grid, block=block, isolate=True)
        _check_equal(got, [color.grayscale(i) for i in images], "grayscale")

    def test_grayscale_every_value(self):
        # all 2**24 RGB triples would be slow under ASan: every R, G, B value in 3 sweeps + random
        v = np.arange(256, dtype=np.uint8)
        rng = np.random.default_rng(5)
        sweeps = [np.stack([v, np.zeros_like(v), np.zeros_like(v)], -1),
                  np.stack([np.zeros_like(v), v, np.zeros_like(v)], -1),
                  np.stack([np.zeros_like(v), np.zeros_like(v), v], -1),
                  rng.integers(0, 256, (256, 3), dtype=np.uint8)]
        images = [s[None, :, :] for s in sweeps] + [rng.integers(0, 256, (128, 256, 3), dtype=np.uint8)]
        got = kc.run_batch(self.lib, "gp_grayscale", images, [(i.shape[0], i.shape[1], 1) for i in images],
                           grid=(64, 5), block=64)
        _check_equal(got, [color.grayscale(i) for i in images], "grayscale sweep")

    @pytest.mark.parametrize("value", [0, 1, -1, 0.5, -0.5, 1.5, 2.5, 37.3, -100.7, 255, -255, 127.5])
    def test_brightness(self, value):
        images = kc.mixed_batch(2) + [np.arange(256, dtype=np.uint8).reshape(16, 16, 1)]
        got = kc.run_batch(self.lib, "gp_lut", images, [i.shape for i in images],
                           colour_table(ops.Brightness(value)), isolate=True)
        _check_equal(got, [color.brightness(i, value) for i in images], f"brightness {value}")

    @pytest.mark.parametrize("factor", [0, 1, 0.5, 1.5, 2, 0.3, 1 / 3, 2.7182818, 7.77, 100, 1e6, 1e30])
    def test_contrast(self, factor):
        images = kc.mixed_batch(3) + [np.arange(256, dtype=np.uint8).reshape(16, 16, 1)]
        got = kc.run_batch(self.lib, "gp_lut", images, [i.shape for i in images],
                           colour_table(ops.Contrast(factor)), isolate=True)
        _check_equal(got, [color.contrast(i, factor) for i in images], f"contrast {factor}")

    def test_lut_with_differently_aligned_buffers_goes_byte_by_byte(self):
        """gp_lut's 16-byte vectors need source and result equally misaligned; when they are not
        (never with CuPy's buffers, possible in principle) every byte takes the single-byte path."""
        images = kc.mixed_batch(8)
        src, _ = kc.pack(images)
        descs, total = kc.descriptors(images, [i.shape for i in images])
        table = colour_table(ops.Brightness(-33))
        for shift in (1, 3, 8):
            room = np.full(total + shift, 0xA5, np.uint8)
            dst = room[shift:]                              # same offsets, other alignment
            self.lib.launch("gp_lut", src, dst, descs, np.int32(len(images)), table, grid=(5, 3), block=16)
            got, at = [], 0
            for img in images:
                got.append(dst[at:at + img.size].reshape(img.shape))
                at += img.size
            _check_equal(got, [color.brightness(i, -33) for i in images], f"lut, result shifted by {shift}")

    def test_contrast_random_factors_all_values(self):
        rng = np.random.default_rng(7)
        img = np.arange(256, dtype=np.uint8).reshape(1, 256, 1)
        for factor in rng.uniform(0, 4, 200):
            got = kc.run_batch(self.lib, "gp_lut", [img], [img.shape], colour_table(ops.Contrast(float(factor))),
                               grid=(4, 1))
            _check_equal(got, [color.contrast(img, float(factor))], f"contrast {factor}")


class TestGeometry:
    __test__ = kc.INNER

    def setup_class(self):
        kc.require_asan_loaded()
        self.lib = kc.build("geometry")

    @pytest.mark.parametrize("grid,block", GRIDS)
    @pytest.mark.parametrize("degrees", [90, 180, 270])
    def test_rotate(self, degrees, grid, block):
        images = kc.mixed_batch(10 + degrees)
        shapes = [(w, h, c) if degrees != 180 else (h, w, c) for h, w, c in (i.shape for i in images)]
        got = kc.run_batch(self.lib, "gp_rotate", images, shapes, degrees, grid=grid, block=block, isolate=True)
        _check_equal(got, [geometry.rotate(i, degrees) for i in images], f"rotate {degrees}")

    @pytest.mark.parametrize("grid,block", kc.COOPERATIVE_GRIDS)
    @pytest.mark.parametrize("degrees", [90, 270])
    def test_rotate_through_shared_memory_tiles(self, degrees, grid, block):
        """gp_rotate_tiled (transpose.cu): one OS thread per CUDA thread, meeting at __syncthreads;
        images larger than a tile, with partial tiles on both edges, and the same batch as gp_rotate."""
        lib = kc.build("transpose")
        rng = np.random.default_rng(40 + degrees)
        images = kc.mixed_batch(11 + degrees) + [kc.random_image(rng, h, w, c) for (h, w), c in
                                                 (((70, 45), 3), ((33, 97), 4), ((64, 32), 1), ((31, 65), 2))]
        shapes = [(w, h, c) for h, w, c in (i.shape for i in images)]
        got = kc.run_batch(lib, "gp_rotate_tiled", images, shapes, degrees, grid=grid, block=block, isolate=True)
        _check_equal(got, [geometry.rotate(i, degrees) for i in images], f"rotate {degrees} tiled")

    @pytest.mark.parametrize("direction", ["horizontal", "vertical"])
    def test_flip(self, direction):
        images = kc.mixed_batch(20)
        got = kc.run_batch(self.lib, "gp_flip", images, [i.shape for i in images], int(direction == "vertical"),
                           isolate=True)
        _check_equal(got, [geometry.flip(i, direction) for i in images], f"flip {direction}")

    @pytest.mark.parametrize("grid,block", GRIDS)
    def test_crop(self, grid, block):
        rng = np.random.default_rng(30)
        images = kc.mixed_batch(31)
        boxes = []
        for img in images:
            h, w = img.shape[:2]
            cw, ch = int(rng.integers(1, w + 1)), int(rng.integers(1, h + 1))
            boxes.append((int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch))

        def setup(descs):
            for d, (x, y, _, _) in zip(descs, boxes):
                d["x"], d["y"] = x, y

        shapes = [(ch, cw, img.shape[2]) for img, (_, _, cw, ch) in zip(images, boxes)]
        got = kc.run_batch(self.lib, "gp_crop", images, shapes, setup=setup, grid=grid, block=block, isolate=True)
        _check_equal(got, [geometry.crop(i, *b) for i, b in zip(images, boxes)], "crop")

    def test_crops_at_the_images_corners(self):
        """Crops flush with the first and the last byte of an image alone in its buffer, at every
        alignment: the 32-bit loads of the vector path may reach 3 bytes beyond the bytes they
        fetch, so they must fall back to bytes there, or ASan reports a read outside the image."""
        rng = np.random.default_rng(33)
        for c in (1, 2, 3, 4):
            for w in range(17, 41, 3):
                img = kc.random_image(rng, 3, w, c)
                for x in range(0, 6):
                    for box in ((x, 0, w - x, 2), (0, 1, w - x, 2)):        # bottom-right, top-left corners
                        def setup(descs, box=box):
                            descs[0]["x"], descs[0]["y"] = box[:2]
                        got = kc.run_batch(self.lib, "gp_crop", [img], [(box[3], box[2], c)], setup=setup,
                                           grid=(2, 1), block=8)
                        _check_equal(got, [geometry.crop(img, *box)], f"crop {box} of {img.shape}")

    def test_center_crop(self):
        images = kc.mixed_batch(32)
        boxes = []
        for img in images:
            h, w = img.shape[:2]
            cw, ch = max(1, w // 2), max(1, (2 * h) // 3)
            boxes.append(((w - cw) // 2, (h - ch) // 2, cw, ch))

        def setup(descs):
            for d, (x, y, _, _) in zip(descs, boxes):
                d["x"], d["y"] = x, y

        shapes = [(ch, cw, img.shape[2]) for img, (_, _, cw, ch) in zip(images, boxes)]
        got = kc.run_batch(self.lib, "gp_crop", images, shapes, setup=setup)
        _check_equal(got, [geometry.center_crop(i, b[2], b[3]) for i, b in zip(images, boxes)], "center_crop")

    @pytest.mark.parametrize("background", [(255, 255, 255, 255), (10, 200, 30, 0), (1, 2, 3, 128)])
    def test_pad(self, background):
        rng = np.random.default_rng(40)
        images = kc.mixed_batch(41)
        places = []
        for img in images:
            h, w = img.shape[:2]
            cw, ch = w + int(rng.integers(0, 6)), h + int(rng.integers(0, 6))
            places.append((cw, ch, int(rng.integers(0, cw - w + 1)), int(rng.integers(0, ch - h + 1))))
        # fill colour per pixel size in bytes, as the host lays it out (geometry.fill_value)
        fill = np.zeros(64, np.uint8)
        for c in (1, 2, 3, 4):
            fill[(c - 1) * 8:(c - 1) * 8 + c] = geometry.fill_value(background, c)

        def setup(descs):
            for d, (_, _, left, top) in zip(descs, places):
                d["x"], d["y"] = left, top

        shapes = [(ch, cw, img.shape[2]) for img, (cw, ch, _, _) in zip(images, places)]
        got = kc.run_batch(self.lib, "gp_pad", images, shapes, fill, setup=setup, isolate=True)
        _check_equal(got, [geometry.pad(i, *p, background) for i, p in zip(images, places)], "pad")
