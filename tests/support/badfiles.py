"""Real bad inputs, made with real codecs from real photos (no mocks).

``make_bad_inputs(directory)`` writes one file per kind of bad input and
returns {kind: path}; ``EXPECTED_ERROR_CLASS[kind]`` is the ``error_class``
gpupipe must record for it, or None where the file must process fine.
Kinds in ``ALL_FILES_ONLY`` have no image extension: a directory walk finds
them only with ``all_files`` / ``--all-files``.
"""

from __future__ import annotations

import functools
import io
import os
import random
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from tests.support import REPO_ROOT

ROOT = REPO_ROOT
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


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its length and a valid CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` white pixels.

    Pillow would need width*height bytes of memory to build it, so the PNG is
    written chunk by chunk here, with zlib streaming the all-zero rows: a
    20000x20000 image takes ~50 KB on disk and decodes to 400 megapixels.
    """
    chunk = png_chunk
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


# ------------------------------------------------------------------ short data
# Files whose structure is complete (every length, CRC and end marker right) but whose
# compressed pixel data holds fewer rows than the header declares: the decoder runs out
# of pixels, not of file.

_ADAM7 = ((0, 8, 0, 8), (0, 8, 4, 8), (4, 8, 0, 4), (0, 4, 2, 4), (2, 4, 0, 2), (0, 2, 1, 2), (1, 2, 0, 1))


def short_png(im: Image.Image, keep: float = 0.3, interlace: bool = False) -> bytes:
    """An 8-bit RGB PNG of ``im`` whose single IDAT inflates to the first ``keep`` of the
    filtered rows (for Adam7, of the passes' rows in order), cut on a row boundary, with a
    header declaring all of ``im``, valid CRCs and IEND."""
    pixels = np.asarray(im.convert("RGB"))
    height, width = pixels.shape[:2]
    passes = _ADAM7 if interlace else ((0, 1, 0, 1),)
    rows = [b"\0" + row.tobytes() for r0, rs, c0, cs in passes for row in pixels[r0::rs, c0::cs]
            if row.size]
    raw = b"".join(rows[:max(1, int(len(rows) * keep))])
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, int(interlace))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def png_with_bad_crc(png: bytes, kind: bytes = b"IDAT") -> bytes:
    """``png`` with one bit of the CRC of its first ``kind`` chunk flipped (PngSuite's
    xcsn0g01 has such an IDAT)."""
    pos = 8
    while png[pos + 4:pos + 8] != kind:
        pos += 12 + struct.unpack_from(">I", png, pos)[0]
    crc = pos + 8 + struct.unpack_from(">I", png, pos)[0]
    return png[:crc] + bytes([png[crc] ^ 1]) + png[crc + 1:]


def png_with_chunk(png: bytes, chunk: bytes) -> bytes:
    """``png`` with ``chunk`` inserted right after IHDR."""
    at = 8 + 12 + struct.unpack_from(">I", png, 8)[0]
    return png[:at] + chunk + png[at:]


def zlib_bomb_chunk(kind: bytes, inflated: int) -> bytes:
    """A valid iCCP, zTXt or iTXt chunk whose compressed text or profile inflates to
    ``inflated`` zero bytes (1 GB takes about 1 MB)."""
    head = {b"iCCP": b"profile\0\0", b"zTXt": b"Comment\0\0", b"iTXt": b"Comment\0\1\0\0\0"}[kind]
    return png_chunk(kind, head + _deflated_zeros(inflated))


@functools.lru_cache(maxsize=4)
def _deflated_zeros(count: int) -> bytes:
    z = zlib.compressobj(9)
    block = bytes(1 << 20)
    return b"".join([z.compress(block) for _ in range(count >> 20)] + [z.flush()])


def short_gif(im: Image.Image, keep: float = 0.3) -> bytes:
    """A GIF whose LZW data (ended by its end code and block terminator, then the trailer)
    holds the first ``keep`` of the rows its screen and image descriptor declare."""
    rows = max(1, int(im.height * keep))
    gif = bytearray(_save(im.crop((0, 0, im.width, rows)).quantize(), "GIF"))
    struct.pack_into("<H", gif, 8, im.height)
    struct.pack_into("<H", gif, _gif_descriptor(gif) + 7, im.height)
    return bytes(gif)


def _gif_descriptor(gif: bytes) -> int:
    """Offset of the first image descriptor (0x2C), past the colour table and extensions."""
    pos = 13 + (3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0)
    while gif[pos] == 0x21:
        pos += 2
        while gif[pos]:
            pos += gif[pos] + 1
        pos += 1
    return pos


def short_bmp_rle8(im: Image.Image, keep: float = 0.3) -> bytes:
    """An 8-bit RLE BMP whose data ends (end-of-bitmap code) after the first ``keep`` of the
    rows its header declares; the file size field is right."""
    pal = im.convert("P")
    width, height = pal.size
    indices = np.asarray(pal)[::-1]                   # BMP rows run bottom-up
    data = bytearray()
    for row in indices[:max(1, int(height * keep))]:
        for value in row.tobytes():
            data += bytes((1, value))                 # encoded mode: a run of one pixel
        data += b"\0\0"                               # end of line
    data += b"\0\1"                                   # end of bitmap
    palette = (pal.getpalette() + [0] * 768)[:768]
    colours = b"".join(bytes((palette[i + 2], palette[i + 1], palette[i], 0)) for i in range(0, 768, 3))
    offset = 14 + 40 + len(colours)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + colours + bytes(data)


def short_tiff(im: Image.Image, keep: float = 0.3, compression: str = "tiff_adobe_deflate") -> bytes:
    """A one-strip TIFF whose strip holds the first ``keep`` of the rows that its ImageLength
    and RowsPerStrip declare (StripByteCounts right for what is there)."""
    rows = max(1, int(im.height * keep))
    part = im.crop((0, 0, im.width, rows))
    tiff = bytearray(_save(part, "TIFF", compression=compression, tiffinfo={278: rows}))
    ifd = struct.unpack_from("<I", tiff, 4)[0]
    for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack_from("<H", tiff, ifd)[0], 12):
        tag, kind = struct.unpack_from("<HH", tiff, entry)
        if tag in (257, 278):                         # ImageLength, RowsPerStrip
            struct.pack_into("<H" if kind == 3 else "<I", tiff, entry + 8, im.height)
    return bytes(tiff)


def short_webp(webp: bytes, keep: float = 0.5) -> bytes:
    """``webp`` (a simple VP8 or VP8L file) with its bitstream chunk cut to ``keep`` of its
    payload, and the chunk and RIFF sizes set to match."""
    kind = webp[12:16]
    length = int(struct.unpack_from("<I", webp, 16)[0] * keep)
    payload = webp[20:20 + length] + b"\0" * (length & 1)
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(payload)) + b"WEBP" + kind
            + struct.pack("<I", length) + payload)


def jpeg_cut_with_eoi(jpeg: bytes, keep: float = 0.5) -> bytes:
    """``jpeg`` cut inside its entropy-coded data and closed with an end-of-image marker."""
    return jpeg[:int(len(jpeg) * keep)] + b"\xff\xd9"


# --------------------------------------------------------------------- header bombs

def with_declared_size(data: bytes, width: int, height: int) -> bytes:
    """A JPEG (first SOF0/1/2), PNG (IHDR, CRC fixed), GIF (screen and first image), BMP,
    TIFF (ImageWidth/ImageLength, rewritten as LONGs) or simple WebP (VP8/VP8L; a VP8X
    header is added for sizes past 16384) whose header declares ``width`` x ``height``,
    the pixel data left as it was: a header bomb."""
    out = bytearray(data)
    if data.startswith(b"\xff\xd8"):
        at = min(i for i in (out.find(b"\xff\xc0"), out.find(b"\xff\xc1"), out.find(b"\xff\xc2")) if i > 0)
        struct.pack_into(">HH", out, at + 5, height, width)
    elif data.startswith(b"\x89PNG"):
        struct.pack_into(">II", out, 16, width, height)
        struct.pack_into(">I", out, 29, zlib.crc32(out[12:29]))
    elif data[:3] == b"GIF":
        struct.pack_into("<HH", out, 6, width, height)
        struct.pack_into("<HH", out, _gif_descriptor(out) + 5, width, height)
    elif data[:2] == b"BM":
        struct.pack_into("<ii", out, 18, width, height)
    elif data[:4] == b"II*\0":
        ifd = struct.unpack_from("<I", out, 4)[0]
        for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack_from("<H", out, ifd)[0], 12):
            tag = struct.unpack_from("<H", out, entry)[0]
            if tag in (256, 257):
                struct.pack_into("<HII", out, entry + 2, 4, 1, width if tag == 256 else height)
    elif data[:4] == b"RIFF" and max(width, height) > 16384:
        canvas = (b"VP8X" + struct.pack("<I", 10) + bytes(4) + (width - 1).to_bytes(3, "little")
                  + (height - 1).to_bytes(3, "little"))
        return b"RIFF" + struct.pack("<I", 4 + len(canvas) + len(data) - 12) + b"WEBP" + canvas + data[12:]
    elif data[12:16] == b"VP8 ":
        struct.pack_into("<HH", out, 26, width & 0x3FFF, height & 0x3FFF)
    elif data[12:16] == b"VP8L":
        bits = struct.unpack_from("<I", out, 21)[0] & ~0xFFFFFFF
        struct.pack_into("<I", out, 21, bits | (width - 1) | ((height - 1) << 14))
    else:
        raise ValueError("not a format with_declared_size knows")
    return bytes(out)
