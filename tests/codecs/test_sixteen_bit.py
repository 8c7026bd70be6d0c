"""16-bit images in and out: PNG and TIFF inputs keep all 16 bits, PNG and TIFF outputs write
them, and the 8-bit formats get them rounded (gpupipe.pixels.to_8bit).

Files are made by writers other than gpupipe's (Pillow, OpenCV's libpng and libtiff, tifffile, a
plain unfiltered PNG written below) and gpupipe's own files are read back by those writers' readers.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from gpupipe import codecs, pixels
from gpupipe.codecs.orientation import _orient
from gpupipe.errors import CorruptImage, TruncatedImage

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()     # a real RGB profile


def ramp(channels: int, height: int = 37, width: int = 53, seed: int = 0) -> np.ndarray:
    """16-bit pixels using the whole range, low bytes included (a value per pixel and channel)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 65536, (height, width, channels), dtype=np.uint16)
    img[0, 0] = 0
    img[-1, -1] = 65535
    return img


def plain_png(img: np.ndarray) -> bytes:
    """A 16-bit PNG written the plainest way (filter None, one IDAT): an independent writer."""
    height, width, channels = img.shape

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    rows = b"".join(b"\0" + img[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, {1: 0, 2: 4, 3: 2, 4: 6}[channels], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_a_16bit_png_decodes_with_every_bit(channels):
    img = ramp(channels)
    decoded = codecs.decode(plain_png(img))
    assert decoded.pixels.dtype == np.uint16 and decoded.mode == pixels.MODES[channels]
    assert np.array_equal(decoded.pixels, img)


def test_16bit_pngs_from_pillow_and_libpng_decode_exactly():
    grey = ramp(1)[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, "PNG")                               # Pillow's I;16
    assert np.array_equal(codecs.decode(buf.getvalue()).pixels[:, :, 0], grey)
    rgba = ramp(4, seed=1)
    ok, png = cv2.imencode(".png", rgba[:, :, [2, 1, 0, 3]])              # libpng, adaptive filters
    assert ok and np.array_equal(codecs.decode(png.tobytes()).pixels, rgba)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_16bit_tiff_decodes_with_every_bit_and_its_orientation(channels, orientation):
    img = ramp(channels, seed=2)
    buf = io.BytesIO()
    tifffile.imwrite(buf, img[:, :, 0] if channels == 1 else img,
                     photometric="minisblack" if channels == 1 else "rgb",
                     extrasamples=["unassalpha"] if channels == 4 else None,
                     compression="zlib", extratags=[(274, "H", 1, orientation, True)])
    decoded = codecs.decode(buf.getvalue())
    assert decoded.pixels.dtype == np.uint16 and decoded.orientation == orientation
    assert np.array_equal(decoded.pixels, _orient(img, orientation))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_output_keeps_every_bit(channels):
    img = ramp(channels, seed=3)
    data = codecs.encode(img, format="png")
    assert data[24] == 16                                               # IHDR bit depth
    assert np.array_equal(codecs.decode(data).pixels, img)
    theirs = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)   # libpng reads it too
    expected = {1: [0], 2: [0, 0, 0, 1], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[channels]   # OpenCV's BGR(A)
    assert np.array_equal(theirs.reshape(*img.shape[:2], -1), img[:, :, expected])


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_output_keeps_depth_channels_and_profile(channels, dtype):
    img = ramp(channels, seed=4) if dtype == np.uint16 else pixels.to_8bit(ramp(channels, seed=4))
    icc = SRGB
    data = codecs.encode(img, format="tiff", icc_profile=icc if channels >= 3 else None)
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages[0]
        assert page.dtype == dtype and page.samplesperpixel == channels
        assert np.array_equal(page.asarray().reshape(img.shape), img)
        if channels >= 3:
            assert page.tags["InterColorProfile"].value == icc
    if channels != 2 or dtype == np.uint8:                 # Pillow reads no 16-bit grey + alpha TIFF
        assert np.array_equal(codecs.decode(data).pixels, img)


def test_16bit_png_output_carries_the_icc_profile():
    icc = SRGB
    with Image.open(io.BytesIO(codecs.encode(ramp(3), format="png", icc_profile=icc))) as im:
        assert im.info["icc_profile"] == icc


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_8bit_formats_get_the_rounded_values(fmt, channels):
    img = ramp(channels, seed=5)
    got = codecs.encode(img, format=fmt)
    if fmt == "jpeg" and channels == 4:            # JPEG composites alpha at 16 bits first, then rounds
        img = codecs._flatten(img, (255, 255, 255))
    assert got == codecs.encode(pixels.to_8bit(img), format=fmt)


def test_rounding_to_8_bits_is_round_to_nearest():
    values = np.arange(65536, dtype=np.uint16)
    assert np.array_equal(pixels.to_8bit(values), np.rint(values / 257.0).astype(np.uint8))
    assert np.array_equal(pixels.to_8bit(pixels.to_16bit(np.arange(256, dtype=np.uint8))), np.arange(256))


def test_flattening_at_16_bits_scales_the_background():
    la = np.array([[[40000, 0], [40000, 65535], [12345, 32768]]], np.uint16)
    out = codecs._flatten(la, (255, 255, 255))
    assert out.dtype == np.uint16
    assert out[0, 0, 0] == 65535 and out[0, 1, 0] == 40000
    alpha = np.float32(32768) * np.float32(1 / 65535)
    assert out[0, 2, 0] == np.rint(np.float32(12345) * alpha + np.float32(65535) * (np.float32(1) - alpha))


def test_a_damaged_16bit_png_fails_alone_with_its_class():
    data = bytearray(plain_png(ramp(3)))
    with pytest.raises(TruncatedImage):
        codecs.decode(bytes(data[:len(data) // 2]))
    idat = data.index(b"IDAT") + 20
    data[idat:idat + 8] = b"\xff" * 8
    with pytest.raises(CorruptImage):
        codecs.decode(bytes(data))


def test_inspect_says_how_many_bits_a_file_holds(tmp_path):
    """probe (gpupipe inspect) reports the bits a sample: 16 for the 16-bit PNG and TIFF it keeps."""
    import json

    from tests.support.cli import gp

    (tmp_path / "deep.png").write_bytes(codecs.encode(ramp(3), format="png"))
    (tmp_path / "deep.tif").write_bytes(codecs.encode(ramp(1), format="tiff"))
    (tmp_path / "flat.jpg").write_bytes(codecs.encode(pixels.to_8bit(ramp(3)), format="jpeg"))
    assert codecs.probe((tmp_path / "deep.png").read_bytes()).bits == 16
    done = gp("inspect", tmp_path, "--json")
    assert done.exit_code == 0, done.output
    bits = {json.loads(line)["path"].rsplit("/", 1)[1]: json.loads(line)["bits"]
            for line in done.output.splitlines() if line.startswith("{")}
    assert bits == {"deep.png": 16, "deep.tif": 16, "flat.jpg": 8}
