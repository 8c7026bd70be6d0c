"""Describe an image from its header alone (``probe``, for ``gpupipe inspect``; ``header_size``,
for the engine's memory budget)."""

from __future__ import annotations

from dataclasses import field

from ..records import dataclass
from .formats import DEFAULT_MAX_PIXELS
from .jpeg import _parse_jpeg_header
from .orientation import _orientation_from_exif_bytes, _valid_orientation
from .pillow import _looks_cut_short, _pillow_open, _stored_size
from .png import _png_exif_chunk
from .sniffing import _classify
from .webp import _webp_size


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
    bits: int = 8              # bits a sample as the file stores them (PNG/TIFF depth, JPEG precision,
                               # DICOM Bits Stored): 16-bit PNGs and TIFFs are processed at 16 (gpupipe.pixels)


def probe(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str | None = None) -> ImageInfo:
    """Describe an image from its header alone (for ``gpupipe inspect``).

    Raises EmptyInput / NotAnImage / UnsupportedFormat / CorruptImage /
    TruncatedImage when even the header cannot be read. A size above
    ``max_pixels`` and other things a decode would trip on (an end marker
    missing, a bad orientation value) are listed in ``problems`` instead.
    """
    fmt = _classify(data, name)
    problems: list[str] = []
    if fmt == "raw":
        head = _rare_header(fmt, data)
        info = ImageInfo(fmt, head.width, head.height, "RGB", 1, 1, False, problems)
    elif fmt == "dicom":
        head = _rare_header(fmt, data)
        mode = "L" if head.photometric.startswith("MONOCHROME") else "RGB"
        info = ImageInfo(fmt, head.width, head.height, mode, 1, head.frames, False, problems, head.bits)
    elif fmt == "jpeg":
        hdr = _parse_jpeg_header(data)
        problems += hdr.problems
        info = ImageInfo(fmt, hdr.width, hdr.height,
                         {1: "L", 3: "RGB", 4: "CMYK"}.get(hdr.components, f"{hdr.components} components"),
                         _valid_orientation(hdr.orientation, problems), 1, hdr.icc is not None, problems,
                         hdr.precision)
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
                         frames, bool(im.info.get("icc_profile")), problems, _stored_bits(data, fmt, im))
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


def _stored_bits(data: bytes, fmt: str, im) -> int:
    """Bits a sample in a PNG (IHDR's depth) or TIFF (BitsPerSample); 8 for the other formats."""
    if fmt == "png" and len(data) > 24:
        return data[24]
    if fmt == "tiff":
        bits = im.tag_v2.get(258, 8)
        return max(bits) if isinstance(bits, tuple) else int(bits)
    return 8


def _rare_header(fmt: str, data: bytes):
    """A camera RAW's or a DICOM's header (``fmt``: "raw" or "dicom"): their modules load on first
    use, as in decoding.decode, so a run of other formats never loads them."""
    if fmt == "raw":
        from . import raw
        return raw.header(data)
    from . import dicom
    return dicom.header(data)


def header_size(data: bytes, name: str | None = None) -> tuple[int, int]:
    """(width, height) as stored, from the header alone; the InputError ``probe`` raises when even
    the header cannot be read. A JPEG's comes from gpupipe's own marker walk, without the
    Pillow parse ``probe`` adds for the frame count: the engine asks this for every input."""
    fmt = _classify(data, name)
    if fmt == "jpeg":
        hdr = _parse_jpeg_header(data)
        return hdr.width, hdr.height
    if fmt in ("raw", "dicom"):
        head = _rare_header(fmt, data)
        return head.width, head.height
    if fmt == "webp" and (declared := _webp_size(data)):
        return declared          # Pillow would refuse a size above its own limit here
    info = probe(data, max_pixels=None, name=name)
    return info.width, info.height
