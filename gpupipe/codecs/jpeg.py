"""JPEG internals: our own marker scan and the simplejpeg (TurboJPEG) hot path.

``_parse_jpeg_header`` walks the marker segments up to the first SOS (size,
components, precision, EXIF orientation, ICC profile) without touching the
compressed data; ``_decode_turbo`` decodes the layouts TurboJPEG handles,
with DCT scaling; ``_with_icc`` inserts an ICC profile as APP2 segments into
a JPEG that simplejpeg encoded.

Why the JPEG hot path is simplejpeg
-----------------------------------
JPEG decode dominates every workload (docs/design.md §7). simplejpeg wraps
libjpeg-turbo's TurboJPEG API, releases the GIL, decodes straight into a NumPy
array (no Pillow image, no ``np.asarray`` copy) and does DCT-domain scaling.
Measured here (timeit, best of 5-7 repeats, one thread, the 1800x1200 photo
``exif-orientation/Landscape_1.jpg``; libjpeg-turbo 3 under both libraries):

    to a NumPy array      simplejpeg      Pillow (open, [draft,] load, np.asarray)
    full size               5.5 ms        19.7 ms   (of which open+load 6.1 ms)
    1/4 DCT scale           3.7 ms         4.1 ms
    EXIF orientation + ICC  4.5 us (our own APP1/APP2 scan)   39 us (Pillow open)

``np.asarray`` of a freshly decoded Pillow image costs twice the decode
(Pillow keeps RGB at 4 bytes a pixel; ``tobytes`` packs and joins chunks into
fresh memory). So simplejpeg is the hot path for 8-bit baseline/progressive
grey and YCbCr JPEGs, and the orientation and ICC profile come from our own
scan of the marker segments, which stops at the first SOS marker and never
touches the compressed data.
``strict=True`` makes truncated or corrupt scan data raise instead of filling
the rest of the image with grey. Pillow stays the general codec: CMYK/YCCK,
12-bit, arithmetic-coded and lossless JPEGs, every other format, and encoding.
"""

from __future__ import annotations

import re
import struct
from dataclasses import field

import numpy as np
import simplejpeg

from gpupipe.errors import CorruptImage, TruncatedImage

from ..records import dataclass
from .orientation import _exif_orientation

# SOF markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# What simplejpeg (TurboJPEG) decodes for us: 8-bit huffman baseline,
# extended and progressive. The rest goes to Pillow.
_TURBO_SOF = {0xC0, 0xC1, 0xC2}
# Huffman-coded SOFs (arithmetic coding, C9-CF, can squeeze an empty block below a bit).
_HUFFMAN_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})


@dataclass
class _JpegHeader:
    """What a JPEG's markers declare, read before any pixel is decoded."""

    width: int = 0
    height: int = 0
    components: int = 0
    precision: int = 8
    sof: int = 0
    orientation: int | None = None  # raw EXIF value (None when no tag)
    icc: bytes | None = None
    problems: list[str] = field(default_factory=list)


# The last header parsed, with the bytes it came from: an input's header is asked for twice (its
# memory need, then its decode), and the walk is 10 µs of Python for a small JPEG. Keyed by the
# bytes object itself, which the entry keeps alive, so it can never answer for other bytes.
_last_parsed: tuple[bytes, "_JpegHeader"] | None = None


def _parse_jpeg_header(data: bytes) -> _JpegHeader:
    """Walk the marker segments up to the first SOS (no entropy data read); the header of the
    same bytes object asked again is not walked again (treat the result as read-only).

    Raises TruncatedImage when the data ends inside the header and
    CorruptImage when the marker structure is broken.
    """
    global _last_parsed
    last = _last_parsed
    if last is not None and last[0] is data:
        return last[1]
    hdr = _walk_header(data)
    _last_parsed = (data, hdr)
    return hdr


def _walk_header(data: bytes) -> _JpegHeader:
    hdr = _JpegHeader()
    icc_chunks: dict[int, bytes] = {}
    icc_count = 0
    n = len(data)
    pos = 2
    while True:
        if pos >= n:
            raise TruncatedImage("truncated JPEG: the file ends inside the header, before any image data")
        if data[pos] != 0xFF:
            raise CorruptImage(f"corrupt JPEG header: expected a marker at byte {pos}, found 0x{data[pos]:02x}")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            raise TruncatedImage("truncated JPEG: the file ends inside the header")
        marker = data[pos]
        pos += 1
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue                           # standalone markers carry no length
        if marker == 0xD9:
            raise CorruptImage("corrupt JPEG: end-of-image marker before any image data")
        if pos + 2 > n:
            raise TruncatedImage("truncated JPEG: the file ends inside the header")
        length = (data[pos] << 8) | data[pos + 1]
        end = pos + length
        if length < 2:
            raise CorruptImage(f"corrupt JPEG header: segment 0x{marker:02x} has length {length}")
        if end > n:
            raise TruncatedImage("truncated JPEG: the file ends inside the header")
        body = pos + 2
        if marker == 0xE1 and hdr.orientation is None and data.startswith(b"Exif\0\0", body):
            hdr.orientation = _exif_orientation(data, body + 6, end)
        elif marker == 0xE2 and data.startswith(b"ICC_PROFILE\0", body) and length >= 16:
            icc_chunks[data[body + 12]] = data[body + 14:end]
            icc_count = data[body + 13]
        elif marker in _SOF:
            if length < 8:
                raise CorruptImage("corrupt JPEG header: frame header too short")
            hdr.sof = marker
            hdr.precision = data[body]
            hdr.height, hdr.width = struct.unpack_from(">HH", data, body + 1)
            hdr.components = data[body + 5]
        elif marker == 0xDA:
            break
        pos = end
    if not hdr.sof:
        raise CorruptImage("corrupt JPEG header: image data starts before the frame header (no SOF marker)")
    if hdr.width == 0 or hdr.height == 0:
        raise CorruptImage(f"corrupt JPEG header: declared size {hdr.width}x{hdr.height}")
    if icc_chunks:
        # Profiles larger than 64 KB are split over numbered APP2 chunks;
        # a profile with a chunk missing is useless, so drop it and say so.
        if icc_count and sorted(icc_chunks) == list(range(1, icc_count + 1)):
            hdr.icc = b"".join(icc_chunks[i] for i in range(1, icc_count + 1))
        else:
            hdr.problems.append("ICC profile is incomplete (missing APP2 chunks); ignored")
    return hdr


def _check_room_for_blocks(data: bytes, hdr: _JpegHeader) -> None:
    """Refuse, before decoding, a Huffman-coded JPEG too small to hold the image it declares.

    Every 8x8 block of a scan costs at least one bit (a DC code is at least one bit long), and
    even with 4x4 chroma-style subsampling of every component the first scan covers
    ceil(w/32) x ceil(h/32) blocks. A 3 KB file declaring 12000x12000 would otherwise be
    decoded in full (seconds, the whole canvas allocated) only to fail as truncated.
    """
    if hdr.sof not in _HUFFMAN_SOF:
        return
    blocks = -(-hdr.width // 32) * -(-hdr.height // 32)
    if len(data) * 8 < blocks:
        raise TruncatedImage(
            f"truncated JPEG: {len(data)} bytes cannot hold the {hdr.width}x{hdr.height} image its "
            f"header declares (each 8x8 block takes at least one bit)")


def _pick_scale(width: int, height: int, min_stored: tuple[int, int] | None) -> int:
    """Largest DCT reduction s in (8, 4, 2) with both sides // s >= the minimum.

    Floor division (not the ceil that libjpeg's output size uses) keeps the
    choice identical to what Pillow's ``draft()`` makes for the same request.
    Tiny images are never reduced: below 16 px libjpeg may pick a non-power-
    of-two factor for the same minimum.
    """
    if not min_stored or min(width, height) < 16:
        return 1
    mw, mh = max(1, min_stored[0]), max(1, min_stored[1])
    for s in (8, 4, 2):
        if width // s >= mw and height // s >= mh:
            return s
    return 1


# "premature end of data segment": the entropy-coded data met a marker (a file cut short
# and closed with an end-of-image marker) before the image was complete.
_TRUNCATED_JPEG = re.compile(
    r"premature end of jpeg file|jpeg datastream contains no image|premature end of data segment", re.I)
# Junk before the final EOI marker is common in camera files and harmless:
# every scan was decoded completely, so we accept those pixels.
_HARMLESS_JPEG = re.compile(r"extraneous bytes before marker 0xd9", re.I)
# TurboJPEG refusing the header (after our own scan found it complete) means
# a layout it does not handle, e.g. unusual sampling factors: Pillow may.
_REFUSED_JPEG = re.compile(r"^tjDecompressHeader", re.I)


def _decode_turbo(data: bytes, hdr: _JpegHeader,
                  min_stored: tuple[int, int] | None) -> tuple[np.ndarray, int] | None:
    """simplejpeg decode straight into a new array, at DCT scale 1/s.

    None when TurboJPEG refuses the file's layout (the caller tries Pillow).
    """
    s = _pick_scale(hdr.width, hdr.height, min_stored)
    kw = {"colorspace": "GRAY" if hdr.components == 1 else "RGB"}
    if s > 1:
        # Asking for exactly ceil(size / s) makes TurboJPEG choose scale 1/s
        # (it picks the smallest of its n/8 factors that reaches the minimum).
        kw["min_width"] = -(-hdr.width // s)
        kw["min_height"] = -(-hdr.height // s)
    pixels = _turbo_strict(data, kw)
    if pixels is None:
        return None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels, s


def _check_cmyk_complete(data: bytes) -> None:
    """Fail a 4-component (CMYK/YCCK) JPEG whose entropy-coded data is short or corrupt.

    Pillow decodes these (with the colour handling they need) but, like libjpeg's default,
    fills a scan that ends early with grey and says nothing. TurboJPEG in strict mode decodes
    the same data and raises instead; at 1/8 scale the check costs little next to the decode.
    """
    _turbo_strict(data, {"colorspace": "CMYK", "min_width": 1, "min_height": 1})


def _turbo_strict(data: bytes, kw: dict) -> np.ndarray | None:
    """``simplejpeg.decode_jpeg(strict=True)`` with its failures mapped to InputErrors;
    None when TurboJPEG refuses the layout."""
    kw = {**kw, "strict": True}
    try:
        try:
            return simplejpeg.decode_jpeg(data, **kw)
        except ValueError as exc:
            if not _HARMLESS_JPEG.search(str(exc)):
                raise
            return simplejpeg.decode_jpeg(data, **{**kw, "strict": False})
    except ValueError as exc:
        msg = str(exc)
        if _REFUSED_JPEG.search(msg):
            return None
        if _TRUNCATED_JPEG.search(msg):
            raise TruncatedImage(
                f"truncated JPEG: the image data ends before the image does ({msg})") from exc
        detail = re.sub(r"^corrupt jpeg data:\s*", "", msg, flags=re.I)
        raise CorruptImage(f"corrupt JPEG data: {detail}") from exc


_ICC_MARKER = b"ICC_PROFILE\0"
_ICC_CHUNK = 65535 - 2 - len(_ICC_MARKER) - 2     # a segment's payload after its length, tag and numbering


def _with_icc(jpeg: bytes, icc: bytes) -> bytes:
    """Insert an ICC profile as APP2 segments after SOI and any APP0 (JFIF) segment."""
    chunks = [icc[i:i + _ICC_CHUNK] for i in range(0, len(icc), _ICC_CHUNK)]
    if len(chunks) > 255:
        return jpeg                                  # ICC in JPEG can't span more than 255 segments
    segments = b"".join(
        b"\xff\xe2" + struct.pack(">H", 2 + len(_ICC_MARKER) + 2 + len(chunk)) + _ICC_MARKER
        + bytes((index, len(chunks))) + chunk
        for index, chunk in enumerate(chunks, 1))
    at = 2
    if jpeg[2:4] == b"\xff\xe0":
        at = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:at] + segments + jpeg[at:]
