"""Decode image bytes into pixel arrays and encode pixel arrays into files.

Contract (DESIGN.md §4): pixels are ``uint8`` HWC, C-contiguous, with 1 (L),
2 (LA), 3 (RGB) or 4 (RGBA) channels. Decoding applies the EXIF orientation
(pixels come out upright), normalises every mode to one of those four, takes
the first frame of animations and refuses a declared size above ``max_pixels``
before a single pixel is decoded. Encoding writes jpeg/png/webp (and avif where
Pillow has it), flattens alpha for jpeg and keeps only the ICC profile.

Why the JPEG hot path is simplejpeg
-----------------------------------
JPEG decode dominates every workload (DESIGN.md §7). simplejpeg wraps
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

import io
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import simplejpeg
from PIL import Image, ImageFile, features

from gpupipe.errors import (
    CorruptImage,
    EmptyInput,
    ImageTooLarge,
    NotAnImage,
    TruncatedImage,
    UnsupportedFormat,
    UsageError,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "READ_FORMATS",
    "Decoded",
    "ImageInfo",
    "available_formats",
    "decode",
    "encode",
    "extension_for",
    "normalise_format",
    "pil_to_array",
    "probe",
    "sniff",
]

#: ``decode(min_size=...)``: (w, h), a function of the upright (w, h), or None.
MinSize = tuple[int, int] | Callable[[int, int], "tuple[int, int] | None"] | None

#: Pillow's own hard bomb limit (2 x Image.MAX_IMAGE_PIXELS), our default.
DEFAULT_MAX_PIXELS = 178_956_970

#: Formats ``decode`` reads. ``sniff`` also names others so that callers can
#: say "unsupported format: PSD" instead of "not an image".
READ_FORMATS = ("jpeg", "png", "gif", "webp", "bmp", "tiff")

#: zlib level for PNG output. Measured on Kodak photos (768x512 and 256x171)
#: with Pillow: level 1 encodes 2-3.5x faster than zlib's default 6 (28 vs
#: 96-148 ms at 768x512) and the files are -6 % to +10 % the size; on a
#: flat graphic with text, +4 % for 1.6x speed. Level 1 is also OpenCV's
#: default. PNG output of photos is bulky either way; speed wins.
PNG_COMPRESS_LEVEL = 1

_PILLOW_NAME = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP",
                "bmp": "BMP", "tiff": "TIFF"}

# How an unsupported format is named in messages ("unsupported format: PSD").
_LABEL = {
    "heic": "HEIC/HEIF", "avif": "AVIF", "jxl": "JPEG XL", "jp2": "JPEG 2000",
    "psd": "PSD (Photoshop)", "ico": "ICO", "cur": "CUR (cursor)", "icns": "ICNS",
    "svg": "SVG", "pdf": "PDF", "eps": "EPS/PostScript", "pbm": "PBM", "pgm": "PGM",
    "ppm": "PPM", "pam": "PAM", "qoi": "QOI", "exr": "OpenEXR", "dds": "DDS",
    "hdr": "Radiance HDR", "xcf": "XCF (GIMP)", "cr3": "CR3 (Canon raw)",
}


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------

@dataclass
class ImageInfo:
    """What the header says about an image (``probe``); no pixel is decoded."""

    format: str
    width: int                 # as stored, before EXIF orientation
    height: int
    mode: str                  # Pillow's mode name, e.g. "RGB", "CMYK", "P", "I;16"
    orientation: int = 1       # EXIF 1-8; 1 when absent or invalid
    frames: int = 1
    has_icc: bool = False
    problems: list[str] = field(default_factory=list)


@dataclass
class Decoded:
    """Upright pixels plus what the encoder and the report need to know."""

    pixels: np.ndarray         # uint8, HWC, C-contiguous, C in 1..4
    format: str                # source format, e.g. "jpeg"
    icc_profile: bytes | None  # only when it matches the output channels
    stored_size: tuple[int, int]  # (w, h) in the file, before scaling/orientation
    scale: int = 1             # DCT reduction used: 1, 2, 4 or 8
    orientation: int = 1       # the EXIF orientation that was applied

    @property
    def size(self) -> tuple[int, int]:
        """(w, h) of ``pixels``."""
        return self.pixels.shape[1], self.pixels.shape[0]

    @property
    def mode(self) -> str:
        return ("L", "LA", "RGB", "RGBA")[self.pixels.shape[2] - 1]


# --------------------------------------------------------------------------
# Sniffing
# --------------------------------------------------------------------------

_BMP_DIB_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm",
                b"hevs", b"mif1", b"msf1", b"mif2"}
_PNM = {ord("1"): "pbm", ord("4"): "pbm", ord("2"): "pgm", ord("5"): "pgm",
        ord("3"): "ppm", ord("6"): "ppm", ord("7"): "pam"}


def sniff(head: bytes) -> str | None:
    """Name the format of a file from its first bytes (64+ recommended).

    Returns one of ``READ_FORMATS``, the name of an image format we recognise
    but do not read (see ``_LABEL``: "heic", "avif", "psd", "svg", ...), or
    None when the bytes look like no image at all.
    """
    h = bytes(head[:1024])
    if h.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if h.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if h[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if h[:4] == b"RIFF" and h[8:12] == b"WEBP":
        return "webp"
    if h[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if h[:2] == b"BM" and len(h) >= 18 and struct.unpack_from("<I", h, 14)[0] in _BMP_DIB_SIZES:
        return "bmp"
    return _sniff_unsupported(h)


def _sniff_unsupported(h: bytes) -> str | None:
    """Image formats we recognise only to name them in an error."""
    if h[4:8] == b"ftyp" and len(h) >= 12:
        size = struct.unpack_from(">I", h, 0)[0]
        brands = {h[8:12]} | {h[i:i + 4] for i in range(16, min(size, len(h)) - 3, 4)}
        if brands & {b"avif", b"avis"}:
            return "avif"
        if brands & _HEIF_BRANDS:
            return "heic"
        if b"crx " in brands:
            return "cr3"
        return None                      # MP4 / QuickTime video and friends
    if h.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "jxl"
    if h.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or h.startswith(b"\xff\x4f\xff\x51"):
        return "jp2"
    if h.startswith(b"8BPS"):
        return "psd"
    if h[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00") and len(h) >= 6 \
            and 0 < struct.unpack_from("<H", h, 4)[0] <= 256:
        return "ico" if h[2] == 1 else "cur"
    if h.startswith(b"icns"):
        return "icns"
    if h.startswith(b"%PDF-"):
        return "pdf"
    if h.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        return "eps"
    if len(h) >= 3 and h[0] == ord("P") and h[1] in _PNM and h[2] in b" \t\r\n":
        return _PNM[h[1]]
    if h.startswith(b"qoif"):
        return "qoi"
    if h.startswith(b"\x76\x2f\x31\x01"):
        return "exr"
    if h.startswith(b"DDS "):
        return "dds"
    if h.startswith((b"#?RADIANCE", b"#?RGBE")):
        return "hdr"
    if h.startswith(b"gimp xcf"):
        return "xcf"
    text = h.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<svg") or (text.startswith((b"<?xml", b"<!--", b"<!DOCTYPE"))
                                    and b"<svg" in text):
        return "svg"
    return None


def _describe_start(data: bytes) -> str:
    """How a NotAnImage message shows the first bytes: text if it is text."""
    head = data[:24]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
        return repr(text + ("..." if len(data) > len(head) else ""))
    return "bytes " + head[:12].hex(" ") + (" ..." if len(data) > 12 else "")


def _classify(data: bytes) -> str:
    """The readable format of ``data``, or the InputError that says why not."""
    if not data:
        raise EmptyInput("empty file (0 bytes)")
    fmt = sniff(data[:1024])
    if fmt is None:
        raise NotAnImage(f"not an image (starts with {_describe_start(data)})")
    if fmt not in READ_FORMATS:
        raise UnsupportedFormat(f"unsupported format: {_LABEL.get(fmt, fmt.upper())}")
    return fmt


# --------------------------------------------------------------------------
# JPEG header (our own scan: size, components, EXIF orientation, ICC)
# --------------------------------------------------------------------------

# SOF markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# What simplejpeg (TurboJPEG) decodes for us: 8-bit huffman baseline,
# extended and progressive. The rest goes to Pillow.
_TURBO_SOF = {0xC0, 0xC1, 0xC2}


@dataclass
class _JpegHeader:
    width: int = 0
    height: int = 0
    components: int = 0
    precision: int = 8
    sof: int = 0
    orientation: int | None = None  # raw EXIF value (None when no tag)
    icc: bytes | None = None
    problems: list[str] = field(default_factory=list)


def _parse_jpeg_header(data: bytes) -> _JpegHeader:
    """Walk the marker segments up to the first SOS (no entropy data read).

    Raises TruncatedImage when the data ends inside the header and
    CorruptImage when the marker structure is broken.
    """
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


def _exif_orientation(data: bytes, start: int, end: int) -> int | None:
    """The Orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block."""
    try:
        order = data[start:start + 2]
        if order == b"II":
            e = "<"
        elif order == b"MM":
            e = ">"
        else:
            return None
        ifd = start + struct.unpack_from(e + "I", data, start + 4)[0]
        count = struct.unpack_from(e + "H", data, ifd)[0]
        for i in range(count):
            entry = ifd + 2 + 12 * i
            if entry + 12 > end:
                return None
            tag, typ = struct.unpack_from(e + "HH", data, entry)
            if tag == 0x0112:
                if typ == 3:       # SHORT, the type the standard prescribes
                    return struct.unpack_from(e + "H", data, entry + 8)[0]
                if typ == 4:       # LONG, seen in the wild
                    return struct.unpack_from(e + "I", data, entry + 8)[0]
                return None
    except struct.error:
        return None
    return None


def _valid_orientation(raw: int | None, problems: list[str] | None = None) -> int:
    if raw is None or raw == 1:
        return 1
    if 2 <= raw <= 8:
        return raw
    if problems is not None:
        problems.append(f"invalid EXIF orientation {raw}; treated as 1 (upright)")
    return 1


# --------------------------------------------------------------------------
# Size limit and Pillow access
# --------------------------------------------------------------------------

def _check_size(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(
            f"image too large: declared size {width}x{height} "
            f"({width * height / 1e6:.1f} megapixels) is above the limit of "
            f"{max_pixels / 1e6:.1f} megapixels (--max-pixels {max_pixels})")


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


# Serialises the rare loads that need a local warnings filter (see below).
_WARNINGS_LOCK = threading.Lock()


def _pillow_load(im: ImageFile.ImageFile, fmt: str, data: bytes) -> None:
    """Decode the pixels of an opened image, mapping failures to InputErrors."""
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
        raise _pillow_error(exc, fmt, "data", data) from exc


_TRUNCATION_HINTS = ("truncated", "premature end", "unpack requires a buffer",
                     "not enough data", "end of file", "eof", "no more images")


def _pillow_error(exc: Exception, fmt: str, where: str, data: bytes) -> Exception:
    """Map a Pillow/zlib exception to TruncatedImage or CorruptImage.

    Pillow's messages say "truncated" for most short files; where they do not
    (a header cut short, libwebp's "could not create decoder object") the
    file's own length fields tell.
    """
    if isinstance(exc, MemoryError):
        return exc                       # a system problem, not this file's
    msg = str(exc) or type(exc).__name__
    label = fmt.upper()
    if (isinstance(exc, EOFError) or any(h in msg.lower() for h in _TRUNCATION_HINTS)
            or ((where == "header" or fmt == "webp") and _looks_cut_short(data, fmt))):
        return TruncatedImage(f"truncated {label}: the file ends before the image does ({msg})")
    if isinstance(exc, zlib.error):
        return CorruptImage(f"corrupt {label} data: compressed stream is invalid ({msg})")
    return CorruptImage(f"corrupt {label} {where}: {msg}")


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
            return struct.unpack_from(order + "I", data, 4)[0] >= n
        if fmt == "png":
            # Chunks run out (or point past the end) before IEND.
            return not any(ctype == b"IEND" and start + length + 4 <= n
                           for ctype, start, length in _png_chunks(data))
        if fmt == "gif":
            return not data.rstrip(b"\0").endswith(b";")
    except struct.error:
        return True                       # too short to hold the length field
    return False


# --------------------------------------------------------------------------
# probe
# --------------------------------------------------------------------------

def probe(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Describe an image from its header alone (for ``gpupipe inspect``).

    Raises EmptyInput / NotAnImage / UnsupportedFormat / CorruptImage /
    TruncatedImage when even the header cannot be read. A size above
    ``max_pixels`` and other things a decode would trip on (an end marker
    missing, a bad orientation value) are listed in ``problems`` instead.
    """
    fmt = _classify(data)
    problems: list[str] = []
    if fmt == "jpeg":
        hdr = _parse_jpeg_header(data)
        problems += hdr.problems
        info = ImageInfo(fmt, hdr.width, hdr.height,
                         {1: "L", 3: "RGB", 4: "CMYK"}.get(hdr.components, f"{hdr.components} components"),
                         _valid_orientation(hdr.orientation, problems), 1, hdr.icc is not None, problems)
        im = _pillow_open(data, fmt)   # only for the frame count (MPO)
        info.frames = getattr(im, "n_frames", 1)
        if b"\xff\xd9" not in data[-4096:]:
            problems.append("no JPEG end-of-image marker: the file is probably truncated")
    else:
        im = _pillow_open(data, fmt)
        exif = im.info.get("exif")
        if exif is None and fmt == "png":
            exif = _png_exif_chunk(data)  # eXIf after IDAT: Pillow would load pixels to find it
        raw = _orientation_from_exif_bytes(exif) if exif else None
        if raw is None and fmt == "tiff":
            raw = im.getexif().get(0x0112)  # TIFF tags are the header
        try:
            frames = getattr(im, "n_frames", 1)
        except Exception as exc:
            frames = 1
            problems.append(f"could not count frames: {exc}")
        width, height = _stored_size(im, fmt)
        info = ImageInfo(fmt, width, height, im.mode, _valid_orientation(raw, problems),
                         frames, bool(im.info.get("icc_profile")), problems)
        if fmt in ("png", "gif", "webp", "bmp") and _looks_cut_short(data, fmt):
            problems.append(f"the {fmt.upper()} file is shorter than its structure says: "
                            f"probably truncated")
    if max_pixels is not None and info.width * info.height > max_pixels:
        problems.append(
            f"declared size {info.width}x{info.height} is above the limit of {max_pixels} pixels "
            f"(decode would refuse it)")
    if info.frames > 1:
        problems.append(f"{info.frames} frames: only the first is used")
    return info


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


def _orientation_from_exif_bytes(exif: bytes) -> int | None:
    if exif.startswith(b"Exif\0\0"):
        exif = exif[6:]
    return _exif_orientation(exif, 0, len(exif))


# --------------------------------------------------------------------------
# decode
# --------------------------------------------------------------------------

def decode(data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
           min_size: MinSize = None, padded_rgb: bool = False) -> Decoded:
    """Decode ``data`` into upright, normalised pixels.

    ``min_size`` (w, h in display orientation) lets a JPEG be decoded at the
    smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides at least that
    large; other formats always decode at full size. It may also be a
    function of the upright (w, h) read from the header, returning such a
    pair or None (e.g. ``Spec.decode_hint``: the size a shrink needs depends
    on the input's aspect ratio). Raises the InputError subclasses of
    ``gpupipe.errors``; a declared size above ``max_pixels`` raises
    ImageTooLarge before any pixel is decoded.

    ``padded_rgb``: an upright RGB JPEG comes back as the RGB view of an RGBX
    buffer (same values, strides of 4 bytes a pixel), which Pillow's resampler
    maps without copying (see ``backends.numpy.resample``); 12 % faster thumbnails.
    """
    fmt = _classify(data)
    if fmt == "jpeg":
        hdr = _parse_jpeg_header(data)
        _check_size(hdr.width, hdr.height, max_pixels)
        orientation = _valid_orientation(hdr.orientation)
        if hdr.sof in _TURBO_SOF and hdr.precision == 8 and hdr.components in (1, 3):
            want = _stored_min(min_size, (hdr.width, hdr.height), orientation)
            done = _decode_turbo(data, hdr, want, padded_rgb and orientation == 1)
            if done is not None:
                pixels, scale = done
                icc = _matching_icc(hdr.icc, pixels.shape[2])
                return Decoded(_orient(pixels, orientation), fmt, icc,
                               (hdr.width, hdr.height), scale, orientation)
    return _decode_pillow(data, fmt, max_pixels, min_size)


def _stored_min(min_size: MinSize, stored: tuple[int, int],
                orientation: int) -> tuple[int, int] | None:
    """``min_size`` in the stored frame: orientations 5-8 swap w and h."""
    swap = orientation >= 5
    if callable(min_size):
        w, h = stored
        min_size = min_size(*((h, w) if swap else (w, h)))
    if not min_size:
        return None
    w, h = min_size
    return (h, w) if swap else (w, h)


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


_TRUNCATED_JPEG = re.compile(r"premature end of jpeg file|jpeg datastream contains no image", re.I)
# Junk before the final EOI marker is common in camera files and harmless:
# every scan was decoded completely, so we accept those pixels.
_HARMLESS_JPEG = re.compile(r"extraneous bytes before marker 0xd9", re.I)
# TurboJPEG refusing the header (after our own scan found it complete) means
# a layout it does not handle, e.g. unusual sampling factors: Pillow may.
_REFUSED_JPEG = re.compile(r"^tjDecompressHeader", re.I)


def _decode_turbo(data: bytes, hdr: _JpegHeader, min_stored: tuple[int, int] | None,
                  padded: bool = False) -> tuple[np.ndarray, int] | None:
    """simplejpeg decode straight into a new array, at DCT scale 1/s.

    None when TurboJPEG refuses the file's layout (the caller tries Pillow).
    """
    s = _pick_scale(hdr.width, hdr.height, min_stored)
    kw = {"colorspace": "GRAY" if hdr.components == 1 else ("RGBX" if padded else "RGB"), "strict": True}
    if s > 1:
        # Asking for exactly ceil(size / s) makes TurboJPEG choose scale 1/s
        # (it picks the smallest of its n/8 factors that reaches the minimum).
        kw["min_width"] = -(-hdr.width // s)
        kw["min_height"] = -(-hdr.height // s)
    try:
        try:
            pixels = simplejpeg.decode_jpeg(data, **kw)
        except ValueError as exc:
            if not _HARMLESS_JPEG.search(str(exc)):
                raise
            pixels = simplejpeg.decode_jpeg(data, **{**kw, "strict": False})
    except ValueError as exc:
        msg = str(exc)
        if _REFUSED_JPEG.search(msg):
            return None
        if _TRUNCATED_JPEG.search(msg):
            raise TruncatedImage(f"truncated JPEG: the file ends before the image does ({msg})") from exc
        detail = re.sub(r"^corrupt jpeg data:\s*", "", msg, flags=re.I)
        raise CorruptImage(f"corrupt JPEG data: {detail}") from exc
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    elif pixels.shape[2] == 4:
        pixels = pixels[:, :, :3]                 # RGB view of the RGBX buffer
    return pixels, s


def _decode_pillow(data: bytes, fmt: str, max_pixels: int | None, min_size: MinSize) -> Decoded:
    """The general path: every non-hot-path JPEG and every other format."""
    im = _pillow_open(data, fmt)
    stored = _stored_size(im, fmt)
    _check_size(stored[0], stored[1], max_pixels)
    icc = im.info.get("icc_profile") or None
    exif = im.info.get("exif")
    if exif is None and fmt == "png":
        exif = _png_exif_chunk(data)      # an eXIf chunk may follow the pixel data
    raw = _orientation_from_exif_bytes(exif) if exif else None
    if raw is None and fmt == "tiff":
        raw = im.getexif().get(0x0112)    # TIFF tags are part of the header
    orientation = to_apply = _valid_orientation(raw)
    scale = 1
    if fmt == "jpeg":
        s = _pick_scale(stored[0], stored[1], _stored_min(min_size, stored, orientation))
        if s > 1:
            im.draft(im.mode, (stored[0] // s, stored[1] // s))
            scale = min((1, 2, 4, 8), key=lambda k: abs(stored[0] / k - im.size[0]))
    pixels = None
    if fmt == "png" and _is_16bit_colour_png(data):
        pixels = _decode_png16_colour(data)
    if pixels is None:
        _pillow_load(im, fmt, data)
        if fmt == "tiff" and 0x0112 not in im.tag_v2:
            to_apply = 1     # Pillow's TIFF loader transposes itself and drops the tag
        pixels, icc = _to_array(im, icc)
    icc = _matching_icc(icc, pixels.shape[2])
    return Decoded(_orient(pixels, to_apply), fmt, icc, stored, scale, orientation)


def _stored_size(im: Image.Image, fmt: str) -> tuple[int, int]:
    """(w, h) as stored. Pillow reports a TIFF's size already turned by its
    Orientation tag, so read the TIFF's own width and length tags."""
    if fmt == "tiff":
        w, h = im.tag_v2.get(256), im.tag_v2.get(257)
        if isinstance(w, int) and isinstance(h, int):
            return w, h
    return im.size


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


def _from16(a: np.ndarray) -> np.ndarray:
    """round(v * 255 / 65535) exactly: v / 257 never lands on .5 (257 is odd)."""
    return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _stretch(a: np.ndarray) -> np.ndarray:
    """Map the finite range of ``a`` linearly onto 0..255 (NaN -> 0)."""
    a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _to_array(im: Image.Image, icc: bytes | None) -> tuple[np.ndarray, bytes | None]:
    """Pillow image (any mode) -> uint8 HWC array in L/LA/RGB/RGBA, and the ICC
    profile that still describes it (converting from CMYK consumes it)."""
    mode = im.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        pass
    elif mode == "1":
        im = im.convert("L")                      # 0/1 -> 0/255
    elif mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or im.has_transparency_data else "RGB")
    elif mode in ("RGBa", "La"):
        im = im.convert(mode.upper())             # un-premultiply
    elif mode == "CMYK":
        im, icc = _cmyk_to_rgb(im, icc), None
    elif mode.startswith("I;16"):
        return _from16(np.asarray(im))[:, :, None], icc
    elif mode == "I":
        a = np.asarray(im)
        if a.min() >= 0 and a.max() <= 255:
            out = a.astype(np.uint8)              # 8-bit data stored in a 32-bit mode
        elif a.min() >= 0 and a.max() <= 65535:
            out = _from16(a)                      # 16-bit data (the usual source of "I")
        else:
            out = _stretch(a)
        return out[:, :, None], icc
    elif mode == "F":
        a = np.asarray(im)
        finite = a[np.isfinite(a)]
        if finite.size and finite.min() >= 0 and finite.max() <= 1:
            out = np.clip(np.rint(np.nan_to_num(a) * 255.0), 0, 255).astype(np.uint8)
        else:
            out = _stretch(a)
        return out[:, :, None], icc
    else:                                          # YCbCr, LAB, HSV, RGBX, ...
        try:
            im = im.convert("RGBA" if "A" in mode else "RGB")
        except ValueError as exc:
            raise UnsupportedFormat(f"unsupported colour mode {mode}: {exc}") from exc
    a = np.asarray(im)
    if a.ndim == 2:
        a = a[:, :, None]
    return a, icc


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """Through the embedded CMYK profile when there is one (what viewers do),
    else Pillow's plain formula."""
    if icc and icc[16:20] == b"CMYK":
        try:
            from PIL import ImageCms
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # a broken profile should not cost the image
            pass
    return im.convert("RGB")


def _matching_icc(icc: bytes | None, channels: int) -> bytes | None:
    """Keep a profile only if its colour space fits the pixels (GRAY for L/LA,
    RGB for RGB/RGBA): a CMYK or mismatched profile would mis-colour output."""
    if not icc or len(icc) < 20:
        return None
    space = icc[16:20]
    if (space == b"GRAY" and channels <= 2) or (space == b"RGB " and channels >= 3):
        return icc
    return None


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation with NumPy views, then one contiguous copy."""
    if orientation == 2:
        a = a[:, ::-1]
    elif orientation == 3:
        a = a[::-1, ::-1]
    elif orientation == 4:
        a = a[::-1]
    elif orientation == 5:
        a = a.swapaxes(0, 1)                      # transpose
    elif orientation == 6:
        a = np.rot90(a, -1)                       # 90 degrees clockwise
    elif orientation == 7:
        a = a[::-1, ::-1].swapaxes(0, 1)          # transverse
    elif orientation == 8:
        a = np.rot90(a, 1)                        # 90 degrees counter-clockwise
    # Pillow hands out read-only arrays; the engine may work in place. An upright
    # RGB view of a padded RGBX buffer (``padded_rgb``) stays as it is.
    if orientation in (2, 3, 4, 5, 6, 7, 8) or not a.flags.writeable or (
            not a.flags.c_contiguous and a.base is None):
        a = np.array(a, order="C", copy=True)
    return a


# --------------------------------------------------------------------------
# encode
# --------------------------------------------------------------------------

_OUT_ALIASES = {"jpeg": "jpeg", "jpg": "jpeg", "jpe": "jpeg", "jfif": "jpeg",
                "png": "png", "webp": "webp", "avif": "avif"}
_EXTENSION = {"jpeg": "jpg", "png": "png", "webp": "webp", "avif": "avif"}


def available_formats() -> tuple[str, ...]:
    """Output formats this installation can write."""
    out = ["jpeg", "png"]
    if features.check("webp"):
        out.append("webp")
    if features.check("avif"):
        out.append("avif")
    return tuple(out)


def normalise_format(name: str) -> str:
    """"JPG", ".jpeg", "Jpeg" -> "jpeg". UsageError for unknown/unavailable names."""
    key = str(name).strip().lower().lstrip(".")
    fmt = _OUT_ALIASES.get(key)
    valid = ", ".join(f + (" (jpg)" if f == "jpeg" else "") for f in available_formats())
    if fmt is None:
        raise UsageError(f"unknown output format {name!r}; choose one of: {valid}")
    if fmt not in available_formats():
        raise UsageError(f"output format {fmt!r} needs a Pillow built with {fmt.upper()} support, "
                         f"which this one lacks; choose one of: {valid}")
    return fmt


def extension_for(format: str) -> str:
    """File extension (no dot) for an output format: "jpeg" -> "jpg"."""
    return _EXTENSION[normalise_format(format)]


def encode(pixels: np.ndarray, *, format: str, quality: int = 85,
           background: tuple[int, int, int] = (255, 255, 255),
           icc_profile: bytes | None = None) -> bytes:
    """Encode uint8 HWC pixels (C = 1..4) as ``format``; returns the file bytes.

    ``quality`` (1-100) drives jpeg/webp/avif; PNG is lossless and uses zlib
    level ``PNG_COMPRESS_LEVEL`` (1, the fastest; measurements there). JPEG
    has no alpha, so LA/RGBA are composited onto ``background`` first (L/LA
    onto its luma). Only an ICC profile that fits the pixels is written; no
    other metadata (EXIF, XMP, comments) is.
    """
    fmt = normalise_format(format)
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise UsageError(f"quality must be an integer from 1 to 100, got {quality!r}")
    a = _check_pixels(pixels)
    if fmt == "jpeg" and a.shape[2] in (2, 4):
        a = _flatten(a, background)
    if fmt == "webp" and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)               # WebP has no grey mode
    elif fmt in ("webp", "avif") and a.shape[2] == 2:
        a = a[:, :, [0, 0, 0, 1]]                 # LA -> RGBA: neither writer takes LA
    icc = _matching_icc(icc_profile, a.shape[2])
    if fmt == "jpeg":
        # libjpeg-turbo straight from the array: no Pillow copy (4 bytes a pixel) and
        # 1.4-2x faster than Image.save; the ICC profile goes in as APP2 segments.
        colorspace = "GRAY" if a.shape[2] == 1 else "RGB"
        data = simplejpeg.encode_jpeg(a, quality=int(quality), colorspace=colorspace, colorsubsampling="420")
        return _with_icc(data, icc) if icc else data
    im = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)  # mode from the shape
    opts: dict = {}
    if icc:
        opts["icc_profile"] = icc
    buf = io.BytesIO()
    if fmt == "png":
        im.save(buf, "PNG", compress_level=PNG_COMPRESS_LEVEL, **opts)
    elif fmt == "webp":
        im.save(buf, "WEBP", quality=int(quality), method=4, **opts)
    else:
        im.save(buf, "AVIF", quality=int(quality), **opts)
    return buf.getvalue()


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


def _check_pixels(pixels: np.ndarray) -> np.ndarray:
    a = np.asarray(pixels)
    if a.dtype != np.uint8:
        raise UsageError(f"pixels must be uint8, got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or not 1 <= a.shape[2] <= 4 or a.shape[0] == 0 or a.shape[1] == 0:
        raise UsageError(f"pixels must be HxWxC with C in 1..4, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _flatten(a: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Composite LA/RGBA onto an opaque background: out = c*a + bg*(1-a),
    in float32, rounded half-to-even (DESIGN.md §4)."""
    bg = np.asarray(background, np.float32).reshape(-1)[:3]
    if a.shape[2] == 2:
        bg = np.float32(np.rint(0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]))[None]
    colour = a[:, :, :-1].astype(np.float32)
    alpha = a[:, :, -1:].astype(np.float32) * np.float32(1 / 255)
    out = colour * alpha + bg * (np.float32(1) - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def pil_to_array(im: Image.Image) -> np.ndarray:
    """A Pillow image of any mode as a writable uint8 HWC array in L/LA/RGB/RGBA.

    The same normalisation ``decode`` applies (no EXIF orientation: an
    in-memory image is taken as it is).
    """
    pixels, _icc = _to_array(im, None)
    return _orient(pixels, 1)
