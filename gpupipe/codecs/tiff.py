"""TIFF: tell a deflate strip that holds fewer rows than declared from a damaged one.

libtiff stops on both with the same "decoder error" through Pillow (its own words, "Not
enough data at scanline", go to stderr), so after a failed load the strips of a
deflate-compressed TIFF are inflated here: one that ends short is truncated, not corrupt.
Only the failure path pays for it.
"""

from __future__ import annotations

import zlib

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
