"""Real bad inputs, made with real codecs from real photos (no mocks).

``make_bad_inputs(directory)`` writes one file per kind of bad input and
returns {kind: path}; ``EXPECTED_ERROR_CLASS[kind]`` is the ``error_class``
gpupipe must record for it, or None where the file must process fine.
Kinds in ``ALL_FILES_ONLY`` have no image extension: a directory walk finds
them only with ``all_files`` / ``--all-files``.
"""

from __future__ import annotations

import io
import os
import random
import struct
import zlib
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "photos" / "Landscape_1.jpg"      # MIT, see ATTRIBUTION.md

EXPECTED_ERROR_CLASS: dict[str, str | None] = {
    "corrupt_jpeg": "corrupt",          # valid header, garbage entropy-coded data
    "truncated_jpeg": "truncated",      # a real photo cut in half
    "empty_jpg": "empty",               # zero bytes
    "png_named_jpg": None,              # content wins over the extension
    "jpeg_named_txt": None,             # found only with all_files, then fine
    "text_named_jpg": "not_an_image",   # a text file with an image extension
    "broken_symlink": "unreadable",     # dangling symlink named .jpg (fails for root too)
    "bomb_png": "too_large",            # 20000x20000 declared, 50 KB on disk
    "unsupported_named_png": "unsupported",  # a real ICO file named .png
}

ALL_FILES_ONLY = frozenset({"jpeg_named_txt"})

BOMB_SIZE = (20_000, 20_000)


def make_bad_inputs(directory: Path) -> dict[str, Path]:
    """Write every kind of bad input into ``directory``; return {kind: path}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    photo = PHOTO.read_bytes()
    small = _small_photo()
    made = {
        "corrupt_jpeg": _write(directory / "corrupt.jpg", corrupt_jpeg(photo)),
        "truncated_jpeg": _write(directory / "truncated.jpg", photo[: len(photo) // 2]),
        "empty_jpg": _write(directory / "empty.jpg", b""),
        "png_named_jpg": _write(directory / "really_a_png.jpg", _save(small, "PNG")),
        "jpeg_named_txt": _write(directory / "really_a_jpeg.txt", _save(small, "JPEG", quality=90)),
        "text_named_jpg": _write(directory / "notes.jpg",
                                 b"Shopping list:\n- milk\n- photos of the cat\n"),
        "bomb_png": _write(directory / "bomb.png", bomb_png(*BOMB_SIZE)),
        "unsupported_named_png": _write(directory / "icon.png",
                                        _save(small.resize((64, 64)), "ICO", sizes=[(64, 64)])),
    }
    link = directory / "broken_link.jpg"
    if os.path.lexists(link):
        link.unlink()
    os.symlink(directory / "this-target-does-not-exist.jpg", link)
    made["broken_symlink"] = link
    assert set(made) == set(EXPECTED_ERROR_CLASS)
    return made


def corrupt_jpeg(jpeg: bytes, seed: int = 1) -> bytes:
    """Keep every header segment up to and including the SOS header, replace
    the entropy-coded data by random bytes (no 0xFF, so no fake markers) of
    the same length, keep the end-of-image marker."""
    pos = 2
    while True:
        marker = jpeg[pos + 1]
        length = struct.unpack_from(">H", jpeg, pos + 2)[0]
        pos += 2 + length
        if marker == 0xDA:
            break
    rng = random.Random(seed)
    garbage = bytes(rng.randrange(0, 255) for _ in range(len(jpeg) - pos - 2))
    return jpeg[:pos] + garbage + b"\xff\xd9"


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` white pixels.

    Pillow would need width*height bytes of memory to build it, so the PNG is
    written chunk by chunk here, with zlib streaming the all-zero rows: a
    20000x20000 image takes ~50 KB on disk and decodes to 400 megapixels.
    """
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload)))

    row = b"\x00" + b"\xff" * ((width + 7) // 8)      # filter byte 0 + packed bits
    z = zlib.compressobj(9)
    rows_per_call = 256
    parts = []
    for start in range(0, height, rows_per_call):
        parts.append(z.compress(row * min(rows_per_call, height - start)))
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)   # 1-bit, greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b""))


def _small_photo() -> Image.Image:
    with Image.open(PHOTO) as im:
        im.draft("RGB", (im.width // 8, im.height // 8))   # 225x150, fast
        return im.convert("RGB")


def _save(im: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
