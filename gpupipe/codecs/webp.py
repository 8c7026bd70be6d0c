"""WebP header: the canvas size, read from the first chunk without Pillow.

Pillow's WebP plugin compares the size with its own process-wide limit while opening (and
libwebp allocates the whole canvas before it looks at the data), so ``decode`` applies the
user's ``max_pixels`` to this size first.
"""

from __future__ import annotations


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a VP8X, VP8 or VP8L first chunk; None when the header is too
    short or malformed to say (Pillow then names the problem)."""
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if kind == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return (int.from_bytes(data[26:28], "little") & 0x3FFF,
                int.from_bytes(data[28:30], "little") & 0x3FFF)
    if kind == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return None
