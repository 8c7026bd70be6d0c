"""PNG chunk walking (eXIf, truncation checks) and the 16-bit colour PNG path."""

from __future__ import annotations

import struct

import numpy as np

from .modes import _from16


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


def _png_exif_chunk(data: bytes) -> bytes | None:
    for ctype, start, length in _png_chunks(data):
        if ctype == b"eXIf":
            return data[start:start + length]
    return None


def _is_16bit_colour_png(data: bytes) -> bool:
    """IHDR says 16-bit RGB/RGBA, with no tRNS colour key.

    Pillow reduces such PNGs to 8 bits by dropping the low byte; we want the
    rounded value, round(v * 255 / 65535), so they go through OpenCV's libpng,
    which hands over all 16 bits.
    """
    if len(data) < 33 or data[24] != 16 or data[25] not in (2, 6):
        return False
    for ctype, _start, _length in _png_chunks(data):
        if ctype == b"tRNS":
            return False
        if ctype == b"IDAT":
            return True
    return False


def _decode_png16_colour(data: bytes) -> np.ndarray | None:
    """All 16 bits via OpenCV, rounded to 8; None lets Pillow try (and name
    the failure: OpenCV only says "could not decode")."""
    import cv2  # imported here: only this rare path needs it

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        return None
    arr = arr[:, :, [2, 1, 0, 3][:arr.shape[2]]]   # BGR(A) -> RGB(A)
    return _from16(arr)
