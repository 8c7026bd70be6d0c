"""gpupipe/backends/numpy/_resample.c under AddressSanitizer, byte for byte against Pillow.

The C resampler reads and writes through raw pointers (rows with any stride, a transposed band
whose four-byte moves overlap the next slot, a table cache shared by threads), so it gets the
CUDA kernels' CPU check (tests/support/kernelcheck.py): built with ``-fsanitize=address`` for the
baseline instruction set, loaded in a child pytest with the ASan runtime preloaded. Every input lies in a buffer of exactly its
size, so a read one byte past it is reported.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from PIL import Image

from tests.support import REPO_ROOT
from tests.support import kernelcheck as kc

SOURCE = REPO_ROOT / "gpupipe" / "backends" / "numpy" / "_resample.c"
LIBRARY = "GPUPIPE_RESAMPLE_ASAN_LIBRARY"
FILTERS = ["nearest", "bilinear", "bicubic", "lanczos3"]
PIL_FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
               "bicubic": Image.Resampling.BICUBIC, "lanczos3": Image.Resampling.LANCZOS}


def test_under_asan(monkeypatch):
    # The baseline build (no AVX2 clone): the machine running the other tests picks the AVX2 clone
    # of the production build where it has AVX2, so between them both builds are run.
    monkeypatch.setenv(LIBRARY, str(kc.compile_extension(SOURCE, defines=("GPUPIPE_BASELINE_ONLY",))))
    kc.run_inner(__file__)


test_under_asan.__test__ = not kc.INNER


def pillow(img: np.ndarray, width: int, height: int, filter: str) -> np.ndarray:
    """Image.resize without premultiplying (La / RGBa modes): the C module's contract."""
    channels = img.shape[2]
    mode = {1: "L", 2: "La", 3: "RGB", 4: "RGBa"}[channels]
    im = Image.frombytes(mode, (img.shape[1], img.shape[0]), np.ascontiguousarray(img).tobytes())
    out = im.resize((width, height), PIL_FILTERS[filter])
    return np.frombuffer(out.tobytes(), np.uint8).reshape(height, width, channels)


def exact(rng: np.random.Generator, height: int, width: int, channels: int, row_pad: int = 0) -> np.ndarray:
    """Random pixels in a buffer that ends where the image ends (rows padded by row_pad bytes)."""
    stride = width * channels + row_pad
    flat = rng.integers(0, 256, height * stride - row_pad, dtype=np.uint8)
    return np.lib.stride_tricks.as_strided(flat, (height, width, channels), (stride, channels, 1))


class TestResampleUnderAsan:
    __test__ = kc.INNER

    def setup_class(self):
        kc.require_asan_loaded()
        self.c = kc.load_extension("gpupipe.backends.numpy._resample", os.environ[LIBRARY])

    def resize(self, img, width, height, filter):
        out = np.empty((height, width, img.shape[2]), np.uint8)
        self.c.resize(img, out, filter, True, False)
        return out

    @pytest.mark.parametrize("filter", FILTERS)
    @pytest.mark.parametrize("channels", [1, 2, 3, 4])
    def test_random_sizes_match_pillow(self, filter, channels):
        rng = np.random.default_rng([FILTERS.index(filter), channels])
        for _ in range(60):
            in_w, in_h, out_w, out_h = (int(v) for v in rng.integers(1, 40, 4))
            img = exact(rng, in_h, in_w, channels, row_pad=int(rng.integers(0, 3)))
            want = pillow(img, out_w, out_h, filter)
            assert np.array_equal(self.resize(img, out_w, out_h, filter), want), (in_w, in_h, out_w, out_h)

    @pytest.mark.parametrize("filter", ["bilinear", "lanczos3"])
    def test_photo_sizes_both_pass_orders_and_long_rows(self, filter):
        rng = np.random.default_rng(5)
        img = exact(rng, 375, 700, 3)
        for width, height in [(256, 137), (690, 40), (300, 375), (700, 120), (2100, 50), (1, 1)]:
            assert np.array_equal(self.resize(img, width, height, filter), pillow(img, width, height, filter))

    @pytest.mark.parametrize("channels", [2, 4])
    def test_straight_alpha_matches_pillows_la_and_rgba(self, channels):
        rng = np.random.default_rng(channels)
        mode = {2: "LA", 4: "RGBA"}[channels]
        for filter in FILTERS[1:]:
            for _ in range(20):
                in_w, in_h, out_w, out_h = (int(v) for v in rng.integers(1, 40, 4))
                img = exact(rng, in_h, in_w, channels, row_pad=int(rng.integers(0, 3)))
                img[..., -1][rng.random((in_h, in_w)) < 0.4] = 0  # and alpha 0 and 255, told apart
                img[..., -1][rng.random((in_h, in_w)) < 0.3] = 255
                im = Image.frombytes(mode, (in_w, in_h), np.ascontiguousarray(img).tobytes())
                want = np.frombuffer(im.resize((out_w, out_h), PIL_FILTERS[filter]).tobytes(), np.uint8)
                out = np.empty((out_h, out_w, channels), np.uint8)
                self.c.resize(img, out, filter, True, True)
                assert np.array_equal(out.ravel(), want), (filter, in_w, in_h, out_w, out_h)

    @pytest.mark.parametrize("channels", [1, 2, 3, 4])
    def test_16bit_matches_the_numpy_model(self, channels):
        from gpupipe.backends.numpy.resample import resize_reference

        rng = np.random.default_rng(40 + channels)
        for filter in FILTERS:
            for _ in range(15):
                in_w, in_h, out_w, out_h = (int(v) for v in rng.integers(1, 40, 4))
                stride = in_w * channels + int(rng.integers(0, 3))
                flat = rng.integers(0, 65536, in_h * stride - (stride - in_w * channels), dtype=np.uint16)
                img = np.lib.stride_tricks.as_strided(flat, (in_h, in_w, channels), (2 * stride, 2 * channels, 2))
                if channels in (2, 4):
                    img[..., -1][rng.random((in_h, in_w)) < 0.3] = 0
                    img[..., -1][rng.random((in_h, in_w)) < 0.3] = 65535
                out = np.empty((out_h, out_w, channels), np.uint16)
                self.c.resize(img, out, filter, True, channels in (2, 4) and filter != "nearest")
                want = resize_reference(np.ascontiguousarray(img), out_w, out_h, filter)
                assert np.array_equal(out, want), (filter, in_w, in_h, out_w, out_h)

    def test_coefficient_tables(self):
        for in_size, out_size in [(1, 1), (1, 300), (300, 1), (4000, 256), (17, 5)]:
            for filter in FILTERS:
                start, length, coeffs, ksize = self.c.coefficients(in_size, out_size, filter)
                assert len(coeffs) == 4 * out_size * ksize and len(start) == len(length) == 4 * out_size

    def test_threads_share_the_table_cache(self):
        rng = np.random.default_rng(9)
        jobs = [(exact(rng, int(rng.integers(2, 50)), int(rng.integers(2, 50)), 3), int(rng.integers(1, 60)),
                 int(rng.integers(1, 60)), FILTERS[i % 4]) for i in range(160)]
        want = [pillow(*job) for job in jobs]
        bad: list[int] = []

        def work(first: int) -> None:
            for i in range(first, len(jobs), 4):
                if not np.array_equal(self.resize(*jobs[i]), want[i]):
                    bad.append(i)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert bad == []

    def test_bad_buffers_are_refused(self):
        img = np.zeros((4, 4, 3), np.uint8)
        for src, dst in [(img, np.empty((2, 2, 4), np.uint8)), (img[:, ::2], np.empty((2, 2, 3), np.uint8)),
                         (img.astype(np.uint16), np.empty((2, 2, 3), np.uint8)), (img.astype(np.int16), np.empty((2, 2, 3), np.int16)),
                         (img.astype(np.float32), np.empty((2, 2, 3), np.float32)), (img, np.empty((2, 2, 3), np.uint8)[::-1])]:
            with pytest.raises(ValueError):
                self.c.resize(src, dst, "lanczos3", True, False)
        with pytest.raises(ValueError):
            self.c.resize(img, np.empty((2, 2, 3), np.uint8), "lanczos", True, False)
