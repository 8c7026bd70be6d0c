"""WebP's RIFF container: the canvas size, read from the first chunk without Pillow, and an ICC
profile added to an encoded image.

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


_ICC_FLAG = 0x20


def _with_icc(webp: bytes, icc: bytes) -> bytes | None:
    """A lossy WebP (``VP8 ``, or ``VP8X`` then its alpha and image) with ``icc`` added as libwebp's
    muxer adds it, which is what Pillow writes: an extended header with the ICC flag, the profile
    (padded to an even length), then the image's chunks. None for a layout it does not know."""
    kind = webp[12:16]
    if kind == b"VP8X":
        header = bytearray(webp[12:30])
        header[8] |= _ICC_FLAG
        chunks = webp[30:]
    elif kind == b"VP8 " and (size := _webp_size(webp)) is not None:
        width, height = size
        header = b"VP8X" + (10).to_bytes(4, "little") + bytes((_ICC_FLAG, 0, 0, 0)) + \
            (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        chunks = webp[12:]
    else:
        return None
    profile = b"ICCP" + len(icc).to_bytes(4, "little") + icc + b"\0" * (len(icc) % 2)
    payload = b"WEBP" + bytes(header) + profile + chunks
    return b"RIFF" + len(payload).to_bytes(4, "little") + payload
