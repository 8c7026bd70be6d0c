"""The formats table (gpupipe.codecs.formats) is what the codecs, the scan and the names do."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from gpupipe import codecs
from gpupipe.codecs import formats
from gpupipe.errors import ImageTooLarge, UsageError

PILLOW_NAME = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF",
               "avif": "AVIF", "heif": "HEIF"}


def sample(fmt: formats.Format, pixels: np.ndarray) -> tuple[bytes, tuple[int, int]] | None:
    """A real file of the format and its size (h, w); None where this machine cannot make one."""
    if fmt.name == "dicom":                    # Pillow cannot write DICOM: pydicom's own test file
        data = pytest.importorskip("pydicom.data").get_testdata_file("CT_small.dcm")
        return open(data, "rb").read(), (128, 128)
    if formats.unavailable(fmt.name) is not None or fmt.name == "raw":   # RAW: tests/codecs/test_raw.py
        return None
    if fmt.name == "heif":
        __import__("pillow_heif").register_heif_opener()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, PILLOW_NAME[fmt.name])
    return buffer.getvalue(), pixels.shape[:2]


@pytest.mark.parametrize("fmt", formats.FORMATS, ids=lambda f: f.name)
def test_each_format_is_what_the_table_says(fmt: formats.Format) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (12, 16, 4 if fmt.alpha else 3), np.uint8)
    made = sample(fmt, pixels) if fmt.read else None
    if made is not None:
        data, size = made
        assert codecs.sniff(data) == fmt.name
        decoded = codecs.decode(data)
        assert decoded.format == fmt.name and decoded.pixels.shape[:2] == size
    if fmt.read:
        for ext in fmt.extensions:                       # the scan picks them, the name suggests the format
            assert f".{ext}" in formats.IMAGE_EXTENSIONS and codecs.format_from_name(f"a.{ext.upper()}") == fmt.name
    if fmt.write and fmt.name in codecs.available_formats():
        data = codecs.encode(pixels, format=fmt.name)
        with Image.open(io.BytesIO(data)) as im:
            assert im.format.lower() == fmt.name and ("A" in im.mode) == fmt.alpha
        assert codecs.extension_for(fmt.name) == fmt.extensions[0]
        for alias in fmt.extensions:
            assert codecs.normalise_format(alias.upper()) == fmt.name
    assert formats.kept(fmt.name) == (fmt.name if fmt.write else "png")


@pytest.mark.parametrize("fmt", [f.name for f in formats.FORMATS if f.write and f.max_side])
def test_an_output_larger_than_its_format_holds_fails_saying_so(fmt: str) -> None:
    """Each format's largest side (formats.py) is its codec's: one pixel more fails as too_large
    with the sizes, where the codec's own error read as a bug (internal); the largest is written.
    Where this Pillow cannot write the format at all, encoding it says so."""
    if fmt not in codecs.available_formats():
        with pytest.raises(UsageError, match=f"needs a Pillow built with {fmt.upper()} support"):
            codecs.encode(np.zeros((2, 2, 3), np.uint8), format=fmt)
        return
    most = formats.BY_NAME[fmt].max_side
    with pytest.raises(ImageTooLarge, match=rf"{fmt.upper()} holds at most {most} pixels a side, and this output "
                                            rf"is 2x{most + 1}: make it smaller \(--resize\) or choose another --format"):
        codecs.encode(np.zeros((most + 1, 2, 3), np.uint8), format=fmt)
    assert codecs.encode(np.zeros((2, most, 3), np.uint8), format=fmt)
