"""The formats table (gpupipe.codecs.formats) is what the codecs, the scan and the names do."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from gpupipe import codecs
from gpupipe.codecs import formats

PILLOW_NAME = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF"}


@pytest.mark.parametrize("fmt", formats.FORMATS, ids=lambda f: f.name)
def test_each_format_is_what_the_table_says(fmt: formats.Format) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (12, 16, 4 if fmt.alpha else 3), np.uint8)
    if fmt.read:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, PILLOW_NAME[fmt.name])
        assert codecs.sniff(buffer.getvalue()) == fmt.name
        decoded = codecs.decode(buffer.getvalue())
        assert decoded.format == fmt.name and decoded.pixels.shape[:2] == (12, 16)
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
