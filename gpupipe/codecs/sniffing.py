"""Name an image format from its first bytes.

``sniff`` recognises the formats ``decode`` reads (``READ_FORMATS``) and, so
that errors can say "unsupported format: PSD" instead of "not an image", a
list of formats it does not read. ``_classify`` turns that answer into the
readable format or the InputError that says why the bytes are not one.
"""

from __future__ import annotations

import struct

from gpupipe.errors import EmptyInput, NotAnImage, UnsupportedFormat

# READ_FORMATS: the formats ``decode`` reads (formats.py). ``sniff`` also names others so that
# callers can say "unsupported format: PSD" instead of "not an image".
from .formats import BY_EXTENSION, READ_FORMATS, unavailable  # noqa: F401  (READ_FORMATS: re-exported)


# The first bytes of camera RAW formats that are not TIFF containers (the decoding is codecs.raw's).
RAW_SIGNATURES = (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00", b"FUJIFILMCCD-RAW")


def looks_raw(head: bytes) -> bool:
    """A TIFF container or a RAW signature: what a file named .nef, .cr2 … must start with."""
    return head[:4] in (b"II*\x00", b"MM\x00*") or head.startswith(RAW_SIGNATURES)


def format_from_name(name: str) -> str:
    """The format a file name (or a relative path: an extension never holds "/") suggests, before
    its bytes are read; PNG when it suggests none."""
    return BY_EXTENSION.get(name.rpartition(".")[2].lower() if "." in name else "", "png")

# How an unsupported format is named in messages ("unsupported format: PSD").
_LABEL = {
    "heif": "HEIC/HEIF", "avif": "AVIF", "dicom": "DICOM", "raw": "camera RAW", "jxl": "JPEG XL", "jp2": "JPEG 2000",
    "psd": "PSD (Photoshop)", "ico": "ICO", "cur": "CUR (cursor)", "icns": "ICNS",
    "svg": "SVG", "pdf": "PDF", "eps": "EPS/PostScript", "pbm": "PBM", "pgm": "PGM",
    "ppm": "PPM", "pam": "PAM", "qoi": "QOI", "exr": "OpenEXR", "dds": "DDS",
    "hdr": "Radiance HDR", "xcf": "XCF (GIMP)", "cr3": "CR3 (Canon raw)",
}

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
    if h[128:132] == b"DICM":
        return "dicom"     # Part 10: a 128-byte preamble (which may look like a TIFF header), then DICM
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
    if h[:2] == b"BM" and 6 <= len(h) < 18 and struct.unpack_from("<I", h, 2)[0] > len(h):
        return "bmp"       # cut before its DIB header: the file size it declares says it is a BMP cut short
    return _sniff_unsupported(h)


def _sniff_unsupported(h: bytes) -> str | None:
    """Image formats we recognise only to name them in an error."""
    if h[4:8] == b"ftyp" and len(h) >= 12:
        size = struct.unpack_from(">I", h, 0)[0]
        brands = {h[8:12]} | {h[i:i + 4] for i in range(16, min(size, len(h)) - 3, 4)}
        if brands & {b"avif", b"avis"}:
            return "avif"
        if brands & _HEIF_BRANDS:
            return "heif"
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


def _classify(data: bytes, name: str | None = None) -> str:
    """The readable format of ``data``, or the InputError that says why not. ``name``, the file's
    name, decides only what bytes cannot: a RAW photo inside a TIFF container (looks_raw)."""
    if not data:
        raise EmptyInput("empty file (0 bytes)")
    fmt = sniff(data[:1024])
    if fmt in ("tiff", None) and name is not None and format_from_name(name) == "raw" and looks_raw(data[:64]):
        fmt = "raw"
    if fmt is None:
        # Say what the file is not, never what it holds: its first bytes may be
        # a secret (a config file named .jpg) and messages go to logs and the journal.
        raise NotAnImage(f"not an image: no known image signature ({len(data)} bytes)")
    if fmt not in READ_FORMATS:
        raise UnsupportedFormat(f"unsupported format: {_LABEL.get(fmt, fmt.upper())}")
    missing = unavailable(fmt)
    if missing is not None:
        raise UnsupportedFormat(f"unsupported format here: {_LABEL.get(fmt, fmt.upper())} ({missing})")
    return fmt
