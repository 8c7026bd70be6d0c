"""TIFF: 16-bit colour input and TIFF output; tell a deflate strip that holds fewer rows than
declared from a damaged one.

libtiff stops on both with the same "decoder error" through Pillow (its own words, "Not
enough data at scanline", go to stderr), so after a failed load the strips of a
deflate-compressed TIFF are inflated here: one that ends short is truncated, not corrupt.
Only the failure path pays for it.
"""

from __future__ import annotations

import io
import zlib

import numpy as np

from gpupipe.errors import CorruptImage

_DEFLATE = (8, 32946)      # Compression tag: Adobe deflate, old deflate


def _tiff_strip_short(im, data: bytes) -> bool:
    """Does a strip of this (already opened) deflate TIFF inflate to fewer bytes than its rows need?"""
    tags = im.tag_v2
    if tags.get(259) not in _DEFLATE or tags.get(284, 1) != 1 or 322 in tags:   # strips, chunky only
        return False
    try:
        width, height = int(tags[256]), int(tags[257])
        bits = tags.get(258, (1,))
        bits = sum(bits) if isinstance(bits, tuple) else int(bits)
        rows = min(int(tags.get(278, height)), height) or height
        offsets, counts = tags[273], tags[279]
    except (KeyError, TypeError, ValueError):
        return False
    row_bytes = (width * bits + 7) // 8
    for index, (offset, count) in enumerate(zip(offsets, counts)):
        need = min(rows, height - index * rows) * row_bytes
        if need > 0 and _inflated(data[offset:offset + count], need) < need:
            return True
    return False


def _inflated(stream: bytes, limit: int) -> int:
    """Bytes ``stream`` inflates to, up to ``limit``; the limit itself when it is damaged
    (a damaged stream is corrupt, not short)."""
    inflater = zlib.decompressobj()
    total = 0
    try:
        while stream and total < limit and not inflater.eof:
            total += len(inflater.decompress(stream, min(limit - total, 1 << 20)))
            stream = inflater.unconsumed_tail
    except zlib.error:
        return limit
    return total


def _is_16bit_colour_tiff(im) -> bool:
    """RGB or RGBA at 16 bits a sample: Pillow would keep only the high byte of each."""
    bits = im.tag_v2.get(258)
    bits = bits if isinstance(bits, tuple) else (bits,)
    return im.mode in ("RGB", "RGBA") and len(bits) in (3, 4) and all(b == 16 for b in bits)


def _decode_tiff16(data: bytes, im) -> np.ndarray:
    """All 16 bits of an RGB(A) TIFF through OpenCV's libtiff, as uint16, upright (OpenCV applies
    the Orientation tag, whatever the flags say: checked for all eight in the tests)."""
    import cv2  # imported here: only this path needs it

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    channels = len(im.mode)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] != channels:
        raise CorruptImage("corrupt TIFF: libtiff cannot decode its 16-bit pixel data")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGBA)   # BGR(A) -> RGB(A)


def encode_tiff(pixels: np.ndarray, icc: bytes | None) -> bytes:
    """A TIFF of HWC pixels at their depth (8 or 16 bits, 1-4 channels; alpha unassociated),
    deflate-compressed with horizontal differencing, with the ICC profile if given.

    tifffile writes it: Pillow writes no 16-bit colour TIFF, OpenCV no grey + alpha and no ICC.
    """
    import tifffile  # imported here: only TIFF output needs it

    channels = pixels.shape[2]
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels[:, :, 0] if channels == 1 else pixels,
                     photometric="minisblack" if channels <= 2 else "rgb",
                     extrasamples=["unassalpha"] if channels in (2, 4) else None,
                     compression="zlib", predictor=True, iccprofile=icc, metadata=None)
    return buf.getvalue()
