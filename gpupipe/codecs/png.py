"""PNG chunk walking (eXIf, CRCs, truncation checks), the completeness check of the pixel
data, and 16-bit PNGs: read through OpenCV's libpng, written here."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from gpupipe.errors import CorruptImage, TruncatedImage



def _png_chunks(data: bytes):
    """(type, payload start, length) of each PNG chunk, skipping payloads.

    Walking the chunk list (instead of searching for b"eXIf") cannot be
    fooled by those four bytes turning up inside compressed pixel data.
    """
    pos, n = 8, len(data)
    while pos + 8 <= n:
        length = struct.unpack_from(">I", data, pos)[0]
        ctype = data[pos + 4:pos + 8]
        yield ctype, pos + 8, length
        if ctype == b"IEND":
            return
        pos += 12 + length


# Chunk types a message may name; any other type is four bytes of the file, which
# messages never copy (they go to logs and the journal).
_CHUNK_NAMES = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"cHRM", b"gAMA", b"iCCP",
                          b"sBIT", b"sRGB", b"cICP", b"tEXt", b"zTXt", b"iTXt", b"bKGD", b"hIST",
                          b"pHYs", b"sPLT", b"eXIf", b"tIME", b"acTL", b"fcTL", b"fdAT"})


def _check_png_chunks(data: bytes) -> None:
    """Every chunk up to IEND lies inside ``data`` and matches its CRC.

    Pillow checks the CRCs of the chunks before the pixel data but not those of IDAT, so a
    damaged IDAT (PngSuite's xcsn0g01) decoded to wrong pixels with status ok. CRC-32 runs at
    memory speed: about 1 % of the decode of a photo PNG.
    """
    view = memoryview(data)
    n = len(data)
    for index, (ctype, start, length) in enumerate(_png_chunks(data)):
        end = start + length
        name = ctype.decode() if ctype in _CHUNK_NAMES else f"number {index + 1}"
        if end + 4 > n:
            raise TruncatedImage(f"truncated PNG: the file ends inside chunk {name}")
        if zlib.crc32(view[start - 4:end]) != struct.unpack_from(">I", data, end)[0]:
            raise CorruptImage(f"corrupt PNG: the CRC of chunk {name} does not match its data")


_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}      # by IHDR colour type
# Adam7 passes: (first row, row step, first column, column step).
_ADAM7 = ((0, 8, 0, 8), (0, 8, 4, 8), (4, 8, 0, 4), (0, 4, 2, 4), (2, 4, 0, 2), (0, 2, 1, 2), (1, 2, 0, 1))


def _png_raw_size(data: bytes) -> tuple[int, int]:
    """(bytes the IDAT stream must inflate to, bytes of one full row with its filter byte)."""
    width, height, depth, colour, _comp, _filter, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    bits = depth * _CHANNELS.get(colour, 1)

    def size(w: int, h: int) -> int:
        return h * (1 + (w * bits + 7) // 8) if w and h else 0

    row = 1 + (width * bits + 7) // 8
    if not interlace:
        return size(width, height), row
    return sum(size((width - c0 + cs - 1) // cs, (height - r0 + rs - 1) // rs)
               for r0, rs, c0, cs in _ADAM7), row


def _inflated_size(data: bytes, limit: int) -> int:
    """How many bytes the concatenated IDAT payloads inflate to, counting no further than
    ``limit`` and holding at most 1 MiB of output at a time."""
    view = memoryview(data)
    inflater = zlib.decompressobj()
    total = 0
    try:
        for ctype, start, length in _png_chunks(data):
            if ctype != b"IDAT":
                continue
            pending = view[start:start + length]
            while pending and total < limit and not inflater.eof:
                total += len(inflater.decompress(pending, min(limit - total, 1 << 20)))
                pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise CorruptImage(f"corrupt PNG data: compressed stream is invalid ({exc})") from exc
    return total


def _check_png_rows(data: bytes, last_row: bytes) -> None:
    """Fail a PNG whose pixel data ends before the rows its header declares.

    Pillow stops without a word when the zlib stream ends on a row boundary (IEND present,
    CRCs valid) and leaves the missing rows black. Counting the inflated bytes costs a third
    of the decode, so it runs only when the image could be short: an interlaced image (rare),
    or a last row that is still all zero bytes, as every missing row is.
    """
    interlaced = data[28] == 1
    if not interlaced and last_row.count(0) != len(last_row):
        return
    expected, row = _png_raw_size(data)
    got = _inflated_size(data, expected)
    if got < expected:
        held = f"{got // row} of the {expected // row} rows" if not interlaced else \
            f"{got} of the {expected} bytes"
        raise TruncatedImage(f"truncated PNG: its compressed data holds {held} its header declares")


def _png_exif_chunk(data: bytes) -> bytes | None:
    for ctype, start, length in _png_chunks(data):
        if ctype == b"eXIf":
            return data[start:start + length]
    return None


def _is_16bit_png(data: bytes) -> bool:
    """IHDR says 16 bits a sample (grey, grey + alpha, RGB, RGBA), with no tRNS colour key.

    Pillow reduces 16-bit colour PNGs to 8 bits by dropping the low byte (and cannot hold 16-bit
    grey + alpha at all), so they go through OpenCV's libpng, which hands over all 16 bits.
    A tRNS key (rare at 16 bits) is left to Pillow, which applies it, at 8 bits.
    """
    if len(data) < 33 or data[24] != 16 or data[25] not in _CHANNELS or data[25] == 3:
        return False
    for ctype, _start, _length in _png_chunks(data):
        if ctype == b"tRNS":
            return False
        if ctype == b"IDAT":
            return True
    return False


def _decode_png16(data: bytes) -> np.ndarray | None:
    """All 16 bits via OpenCV, as uint16 L/LA/RGB/RGBA; None lets Pillow try (and name the
    failure: OpenCV only says "could not decode")."""
    import cv2  # imported here: only this path needs it

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16:
        return None
    channels = _CHANNELS[data[25]]
    if arr.ndim == 2 and channels == 1:
        return arr[:, :, None]
    if arr.ndim != 3:
        return None
    if channels == 2 and arr.shape[2] == 4:
        return np.ascontiguousarray(arr[:, :, [0, 3]])   # OpenCV gives grey + alpha as BGRA
    if channels == arr.shape[2] and channels in (3, 4):
        # BGR(A) -> RGB(A); OpenCV's SIMD swap: a tenth of NumPy's fancy indexing on 12 MP
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGBA)
    return None


_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}        # channels -> IHDR colour type


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def encode_png16(pixels: np.ndarray, icc: bytes | None, level: int) -> bytes:
    """A 16-bit PNG of uint16 HWC pixels (1-4 channels), with the ICC profile if given.

    Written here because neither Pillow (16-bit grey only) nor OpenCV (no grey + alpha, no ICC)
    writes every 16-bit mode. Each row uses the Sub filter (the difference from the pixel to its
    left, byte by byte: what libpng picks for most rows of a photo), compressed by zlib at ``level``.
    """
    height, width, channels = pixels.shape
    raw = np.ascontiguousarray(pixels, ">u2").reshape(height, width * channels).view(np.uint8)
    step = 2 * channels                                     # bytes per pixel
    rows = np.empty((height, raw.shape[1] + 1), np.uint8)
    rows[:, 0] = 1                                           # filter type Sub
    rows[:, 1:1 + step] = raw[:, :step]
    np.subtract(raw[:, step:], raw[:, :-step], out=rows[:, 1 + step:])   # wraps modulo 256, as PNG wants
    header = struct.pack(">IIBBBBB", width, height, 16, _COLOUR_TYPE[channels], 0, 0, 0)
    parts = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header)]
    if icc:
        parts.append(_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc)))
    parts += [_chunk(b"IDAT", zlib.compress(rows.tobytes(), level)), _chunk(b"IEND", b"")]
    return b"".join(parts)
