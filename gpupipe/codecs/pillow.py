"""Pillow access: open (header only) and load, with failures mapped to InputErrors."""

from __future__ import annotations

import functools
import io
import re
import struct
import threading
import warnings
import zlib
from typing import TYPE_CHECKING

from gpupipe.errors import CorruptImage, ImageTooLarge, SystemFailure, TruncatedImage

from .png import _png_chunks
from .tiff import _tiff_strip_short

if TYPE_CHECKING:
    from PIL import Image, ImageFile

# PIL.Image is imported where Pillow decodes (11 ms of a start, with what it loads): a run of JPEGs,
# which simplejpeg decodes, never needs it.

_PILLOW_NAME = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP",
                "bmp": "BMP", "tiff": "TIFF", "avif": "AVIF", "heif": "HEIF"}


@functools.cache
def _register_heif() -> None:
    """pillow-heif's plug-in (the [heif] extra), registered with Pillow the first time a HEIF is met."""
    import pillow_heif
    pillow_heif.register_heif_opener()


def _pillow_open(data: bytes, fmt: str) -> ImageFile.ImageFile:
    """Open ``data`` with Pillow's plugin for ``fmt``; reads the header only.

    Why not ``Image.open``: it compares the declared size with Pillow's
    process-wide ``Image.MAX_IMAGE_PIXELS`` and warns (above 89 MP) or raises
    (above 179 MP) before we get to apply *our* limit, which is the one the
    user configured. Silencing that with ``warnings.catch_warnings()`` changes
    process-global state and is not thread-safe before Python 3.14 (decoders
    run in threads), and setting ``MAX_IMAGE_PIXELS = None`` would switch off
    the protection for everything else in the process. Calling the format's
    registered factory (what ``Image.open`` itself calls once it has picked a
    plugin) skips only that one check, changes nothing global, and lets
    ``_check_size`` run first. Pillow still checks sizes it discovers while
    loading (TIFF tiles, GIF frames); see ``_pillow_load``.
    """
    from PIL import Image
    _refuse_truncated_loads()
    if fmt == "heif":
        _register_heif()
    name = _PILLOW_NAME[fmt]
    if name not in Image.OPEN:
        Image.init()
    factory, _accept = Image.OPEN[name]
    try:
        return factory(io.BytesIO(data), None)
    except Image.DecompressionBombError as exc:   # a GIF frame larger than its screen
        raise ImageTooLarge(f"image too large: {exc}") from exc
    except Exception as exc:  # Pillow reports bad headers with many types
        raise _pillow_error(exc, fmt, "header", data) from exc


def _refuse_truncated_loads() -> None:
    """Pillow's process-wide ``ImageFile.LOAD_TRUNCATED_IMAGES`` makes its loaders keep a file
    that ends early (the rest of the image left black) and skip PNG CRC errors. gpupipe never
    turns it on; if other code in the process did, decoding would pass broken files as ok, so
    every Pillow decode refuses to run instead (the flag is read at load time, so it cannot be
    switched off for our decodes alone without changing it under the other code's feet)."""
    from PIL import ImageFile
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise SystemFailure(
            "Pillow's ImageFile.LOAD_TRUNCATED_IMAGES is switched on in this process: truncated "
            "images would decode as if complete, so gpupipe does not decode with it; set it back "
            "to False before using gpupipe")


# Serialises the rare loads that need a local warnings filter (see below).
_WARNINGS_LOCK = threading.Lock()


def _pillow_load(im: ImageFile.ImageFile, fmt: str, data: bytes) -> None:
    """Decode the pixels of an opened image, mapping failures to InputErrors."""
    from PIL import Image
    _refuse_truncated_loads()
    try:
        if im.size[0] * im.size[1] > (Image.MAX_IMAGE_PIXELS or float("inf")):
            # The caller's limit already admitted this size, so Pillow's own
            # DecompressionBombWarning from TIFF/GIF loaders would be noise.
            # catch_warnings() swaps process-wide state, so such loads (rare,
            # huge, memory-bound anyway) are serialised; ordinary images never
            # take this path. Pillow's hard DecompressionBombError (above 2x
            # its limit, only when --max-pixels was raised past 179 MP) still
            # stops TIFF/GIF loads: it is reported as too_large below.
            with _WARNINGS_LOCK, warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
        else:
            im.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image too large for Pillow's {fmt.upper()} decoder: {exc}") from exc
    except Exception as exc:
        if fmt == "tiff" and not isinstance(exc, MemoryError) and _tiff_strip_short(im, data):
            raise TruncatedImage("truncated TIFF: a strip's compressed data holds fewer rows than "
                                 "the header declares") from exc
        raise _pillow_error(exc, fmt, "data", data) from exc


_TRUNCATION_HINTS = ("truncated", "premature end", "unpack requires a buffer",
                     "not enough data", "not enough image data", "end of file", "eof", "no more images")


_BYTES_LITERAL = re.compile(r"b'(?:[^'\\]|\\.)*'" + r'|b"(?:[^"\\]|\\.)*"')


def _pillow_error(exc: Exception, fmt: str, where: str, data: bytes) -> Exception:
    """Map a Pillow/zlib exception to TruncatedImage or CorruptImage.

    Pillow's messages say "truncated" for most short files; where they do not
    (a header cut short, libwebp's "could not create decoder object") the
    file's own length fields tell.
    """
    if isinstance(exc, MemoryError):
        return exc                       # a system problem, not this file's
    # Pillow quotes raw bytes in some messages (a chunk type, a tag value): messages go to
    # logs and the journal, so they never carry the file's content.
    msg = _BYTES_LITERAL.sub("<bytes>", str(exc)) or type(exc).__name__
    label = fmt.upper()
    if "decompressed data too large" in msg.lower():
        return CorruptImage(f"corrupt {label}: a compressed metadata chunk (text or ICC profile) "
                            f"inflates past Pillow's limit of {_text_limit()} bytes (a zlib bomb)")
    if (isinstance(exc, EOFError) or any(h in msg.lower() for h in _TRUNCATION_HINTS)
            or ((where == "header" or fmt == "webp") and _looks_cut_short(data, fmt))):
        return TruncatedImage(f"truncated {label}: the file ends before the image does ({msg})")
    if isinstance(exc, zlib.error):
        return CorruptImage(f"corrupt {label} data: compressed stream is invalid ({msg})")
    return CorruptImage(f"corrupt {label} {where}: {msg}")


def _text_limit() -> int:
    from PIL import PngImagePlugin
    return PngImagePlugin.MAX_TEXT_CHUNK


def _looks_cut_short(data: bytes, fmt: str) -> bool:
    """Do the format's own length fields point past the end of ``data``?"""
    n = len(data)
    try:
        if fmt == "webp":
            return struct.unpack_from("<I", data, 4)[0] + 8 > n
        if fmt == "bmp":
            return struct.unpack_from("<I", data, 2)[0] > n or n < 26
        if fmt == "tiff":
            order = "<" if data[:2] == b"II" else ">"
            if data[2:4] in (b"+\x00", b"\x00+"):          # BigTIFF: 64-bit offset at 8
                return struct.unpack_from(order + "Q", data, 8)[0] >= n
            ifd = struct.unpack_from(order + "I", data, 4)[0]
            # The first directory (entry count, 12-byte entries, next offset) must fit in the file.
            return ifd + 2 > n or ifd + 2 + 12 * struct.unpack_from(order + "H", data, ifd)[0] + 4 > n
        if fmt == "png":
            # Chunks run out (or point past the end) before IEND.
            return not any(ctype == b"IEND" and start + length + 4 <= n
                           for ctype, start, length in _png_chunks(data))
        if fmt == "gif":
            return not data.rstrip(b"\0").endswith(b";")
    except struct.error:
        return True                       # too short to hold the length field
    return False


def _stored_size(im: Image.Image, fmt: str) -> tuple[int, int]:
    """(w, h) as stored. Pillow reports a TIFF's size already turned by its
    Orientation tag, so read the TIFF's own width and length tags."""
    if fmt == "tiff":
        w, h = im.tag_v2.get(256), im.tag_v2.get(257)
        if isinstance(w, int) and isinstance(h, int):
            return w, h
    return im.size
