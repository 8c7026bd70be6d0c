"""16-bit inputs through whole runs: the depth is kept to the formats that hold it, rounded for the
others, and a device batch never mixes depths (kernels/gpupipe.cuh)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tifffile

import gpupipe
from gpupipe import codecs, ops, pixels
from gpupipe.backends.numpy import NumpyBackend
from gpupipe.spec import Spec

from tests.support.cli import EXAMPLES, gp
from tests.support.devices import SharedCount, StandInDevice, run_on


def deep_photo(height: int = 240, width: int = 320) -> np.ndarray:
    """A real photo at 16 bits: its 8-bit values times 257 plus a smooth ramp in the low byte, so
    that every output level an 8-bit pipeline would lose is there to keep."""
    photo = codecs.decode((EXAMPLES / "Landscape_1.jpg").read_bytes()).pixels[:height, :width]
    ramp = (np.linspace(0, 200, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 1), np.float32))
    return (photo.astype(np.uint32) * 257 - 100 + ramp.astype(np.uint32)).clip(0, 65535).astype(np.uint16)


def write_png16(path: Path, img: np.ndarray) -> Path:
    ok, data = cv2.imencode(".png", img[:, :, ::-1] if img.shape[2] >= 3 else img[:, :, 0])
    assert ok
    path.write_bytes(data.tobytes())
    return path


def test_an_x_ray_keeps_its_grey_levels(tmp_path):
    """The issue's 12-bit X-ray (values 1000-3000) came out with 9 grey levels; now every level a
    thumbnail makes is kept, 16-bit, in a PNG and a TIFF."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:400, 0:300]
    xray = (1000 + 2000 * (0.5 + 0.5 * np.sin(x / 40.0) * np.cos(y / 55.0))
            + rng.normal(0, 20, (400, 300))).clip(1000, 3000).astype(np.uint16)[:, :, None]
    source = tmp_path / "in"
    source.mkdir()
    write_png16(source / "chest.png", xray)
    for fmt in ("png", "tiff"):
        out = tmp_path / f"out-{fmt}"
        result = gp("run", source, "-o", out, "--thumbnail", "128", "-f", fmt, "--quiet")
        assert result.exit_code == 0, result.output
        written = next(out.glob("chest.*"))
        thumb = cv2.imread(str(written), cv2.IMREAD_UNCHANGED)
        assert thumb.dtype == np.uint16 and thumb.shape == (128, 96)
        assert 900 <= thumb.min() and thumb.max() <= 3100
        assert len(np.unique(thumb)) > 1000, f"{fmt}: {len(np.unique(thumb))} grey levels"
        expected = gpupipe.apply([ops.Thumbnail(128)], xray)
        assert np.array_equal(thumb, expected[:, :, 0])


def test_16bit_photos_in_every_output_format(tmp_path):
    deep = deep_photo()
    source = tmp_path / "in"
    source.mkdir()
    write_png16(source / "deep.png", deep)
    tifffile.imwrite(source / "deep-too.tif", deep, photometric="rgb", compression="zlib")
    spec = [ops.Resize(160, 120), ops.Sharpen(), ops.Brightness(10)]
    want16 = gpupipe.apply(spec, deep)
    assert want16.dtype == np.uint16
    for fmt in ("png", "tiff", "jpeg", "webp"):
        out = tmp_path / f"out-{fmt}"
        result = gp("run", source, "-o", out, "--resize", "160x120", "--sharpen", "--brightness", "10",
                    "-f", fmt, "--quiet")
        assert result.exit_code == 0, result.output
        for name in ("deep", "deep-too"):
            data = next(out.glob(f"{name}.*")).read_bytes()
            if fmt in ("png", "tiff"):
                assert np.array_equal(codecs.decode(data).pixels, want16), (fmt, name)
            else:      # the 16-bit result, rounded once, then encoded
                assert data == codecs.encode(pixels.to_8bit(want16), format=fmt), (fmt, name)


class OneDepthDevice(StandInDevice):
    """A stand-in device that counts what a CUDA batch cannot hold (images of two depths) and the
    batches that hold several images (so the test knows batches were formed at all)."""

    mixed: SharedCount
    several: SharedCount

    def upload(self, images):
        if len({img.dtype for img in images}) > 1:
            self.mixed.add()
        if len(images) > 1:
            self.several.add()
        return super().upload(images)


def test_a_device_gets_one_depth_per_batch_and_writes_what_the_cpu_writes(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    deep = deep_photo(120, 160)
    for k in range(6):
        write_png16(source / f"deep{k}.png", np.ascontiguousarray(np.roll(deep, 7 * k, axis=1)))
        (source / f"flat{k}.jpg").write_bytes(codecs.encode(pixels.to_8bit(np.roll(deep, 5 * k, axis=0)),
                                                            format="jpeg"))
    spec = Spec.single([ops.Thumbnail(64), ops.Contrast(1.3)])
    OneDepthDevice.mixed, OneDepthDevice.several = SharedCount(), SharedCount()    # before the workers fork
    device = run_on(OneDepthDevice, spec, source, tmp_path / "device", workers=1)
    assert OneDepthDevice.mixed.value == 0 and OneDepthDevice.several.value > 0
    cpu = run_on(NumpyBackend, spec, source, tmp_path / "cpu")
    assert device.summary.processed == cpu.summary.processed == 12 and device.summary.failed == 0
    for written in sorted((tmp_path / "cpu").glob("*.*")):
        assert (tmp_path / "device" / written.name).read_bytes() == written.read_bytes(), written.name
    assert cv2.imread(str(tmp_path / "cpu" / "deep0.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
