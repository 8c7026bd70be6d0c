"""``decode``: image bytes -> upright HWC pixels in L/LA/RGB/RGBA (uint8, or uint16 for 16-bit
PNG and TIFF: ``gpupipe.pixels``).

8-bit baseline/progressive grey and YCbCr JPEGs take the simplejpeg hot path
(why, with measurements: ``jpeg``); every other JPEG and every other format
goes through Pillow. Either way the EXIF orientation is applied, every mode
is normalised (``modes``), animations give their first frame and a declared
size above ``max_pixels`` is refused before a single pixel is decoded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gpupipe.errors import ImageTooLarge, InputError

from ..records import dataclass
from .jpeg import (
    _TURBO_SOF, _check_cmyk_complete, _check_room_for_blocks, _decode_turbo, _parse_jpeg_header, _pick_scale)
from .formats import DEFAULT_MAX_PIXELS
from .modes import _matching_icc, _to_array
from .orientation import _orient, _orientation_from_exif_bytes, _valid_orientation
from .pillow import _pillow_load, _pillow_open, _stored_size
from .png import (
    _check_png_chunks, _check_png_rows, _decode_png16, _is_16bit_png, _png_exif_chunk)
from .tiff import _decode_tiff16, _is_16bit_colour_tiff
from .sniffing import _classify
from .webp import _webp_size

#: ``decode(min_size=...)``: (w, h), a function of the upright (w, h), or None.
MinSize = tuple[int, int] | Callable[[int, int], "tuple[int, int] | None"] | None


@dataclass
class Decoded:
    """Upright pixels plus what the encoder and the report need to know."""

    pixels: np.ndarray         # uint8 or uint16, HWC, C-contiguous, C in 1..4 (or a DeferredJpeg: defer_jpeg)
    format: str                # source format, e.g. "jpeg"
    icc_profile: bytes | None  # only when it matches the output channels
    stored_size: tuple[int, int]  # (w, h) in the file, before scaling/orientation
    scale: int = 1             # DCT reduction used: 1, 2, 4 or 8
    orientation: int = 1       # the EXIF orientation that was applied
    # The pixels are measurements: value = slope · pixel + intercept (a DICOM decoded with
    # values=True); None: the pixels are what they show.
    rescale: tuple[float, float] | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(w, h) of ``pixels``."""
        return self.pixels.shape[1], self.pixels.shape[0]

    @property
    def mode(self) -> str:
        return ("L", "LA", "RGB", "RGBA")[self.pixels.shape[2] - 1]


def _check_size(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(
            f"image too large: declared size {width}x{height} "
            f"({width * height / 1e6:.1f} megapixels) is above the limit of "
            f"{max_pixels / 1e6:.1f} megapixels (--max-pixels {max_pixels})")


def decode(data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
           min_size: MinSize = None, name: str | None = None, values: bool = False,
           raw_bits: int = 8, jpeg: str = "turbo") -> Decoded:
    """Decode ``data`` into upright, normalised pixels.

    ``min_size`` (w, h in display orientation) lets a JPEG be decoded at the
    smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides at least that
    large; other formats always decode at full size. It may also be a
    function of the upright (w, h) read from the header, returning such a
    pair or None (e.g. ``Spec.decode_hint``: the size a shrink needs depends
    on the input's aspect ratio). Raises the InputError subclasses of
    ``gpupipe.errors``; a declared size above ``max_pixels`` raises
    ImageTooLarge before any pixel is decoded. ``name`` (the file's name) tells a camera RAW
    photo from the TIFF its bytes look like; every other format is known by its bytes alone.
    ``values``: a grey DICOM gives its measured values (16-bit, with ``Decoded.rescale``) rather
    than its display window (``dicom``). ``raw_bits``: the depth a camera RAW photo is demosaiced
    to, 8 or 16 (``Spec.output_bits``: 16 when every output holds it). ``jpeg``: "turbo" (the hot
    path below) or "pillow" (every JPEG through Pillow: ``--decoder pillow``).
    """
    fmt = _classify(data, name)
    def check_size(width: int, height: int) -> None:
        _check_size(width, height, max_pixels)
    if fmt == "raw":
        from . import raw as camera_raw            # rare formats load on first use (2 modules, 1 ms of a start)
        pixels = camera_raw.decode(data, check_size=check_size, min_size=min_size, bits=raw_bits)
        return Decoded(pixels, fmt, None, (pixels.shape[1], pixels.shape[0]))
    if fmt == "dicom":
        from . import dicom
        pixels, stored, rescale = dicom.decode(data, check_size, values)
        return Decoded(pixels, fmt, None, stored, rescale=rescale)
    if fmt == "jpeg":
        hdr = _parse_jpeg_header(data)
        _check_size(hdr.width, hdr.height, max_pixels)
        _check_room_for_blocks(data, hdr)
        orientation = _valid_orientation(hdr.orientation)
        if hdr.sof in _TURBO_SOF and hdr.precision == 8 and hdr.components in (1, 3) and jpeg == "turbo":
            want = _stored_min(min_size, (hdr.width, hdr.height), orientation)
            done = _decode_turbo(data, hdr, want)
            if done is not None:
                pixels, scale = done
                icc = _matching_icc(hdr.icc, pixels.shape[2])
                return Decoded(_orient(pixels, orientation), fmt, icc,
                               (hdr.width, hdr.height), scale, orientation)
        elif hdr.sof in _TURBO_SOF and hdr.precision == 8 and hdr.components == 4:
            _check_cmyk_complete(data)
    return _decode_pillow(data, fmt, max_pixels, min_size)


@dataclass
class DeferredJpeg:
    """A JPEG left for a device decoder (nvJPEG through nvImageCodec) to turn into pixels.

    Its header was checked here exactly as ``decode`` checks it (size limit, orientation), so
    the upright shape is known and the engine can batch, budget and plan with it as with an
    array (``shape``, ``nbytes``). ``decode_on_host`` gives the pixels ``decode`` gives: a
    backend without a JPEG decoder, or a file the device decoder refuses, takes that path.
    """

    data: bytes
    shape: tuple[int, int, int]          # upright (h, w, c), as decode() would return it
    orientation: int
    host_pixels: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        h, w, c = self.shape
        return h * w * c

    def decode_on_host(self) -> np.ndarray:
        """decode()'s pixels, once (kept: a batch retried after a failure does not decode again)."""
        if self.host_pixels is None:
            self.host_pixels = decode(self.data, max_pixels=None).pixels
        return self.host_pixels


def decode_deferred_on_host(images: list, positions) -> dict[int, InputError]:
    """``decode_on_host`` for the DeferredJpeg items at ``positions`` of ``images`` (others are
    skipped); the InputError of each one that cannot be decoded, by position."""
    failed = {}
    for position in positions:
        image = images[position]
        if isinstance(image, DeferredJpeg):
            try:
                image.decode_on_host()
            except InputError as exc:
                failed[position] = exc
    return failed


_EOI = b"\xff\xd9"


def defer_jpeg(data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               min_size: MinSize = None) -> Decoded | None:
    """``decode``'s result with a ``DeferredJpeg`` for pixels, when a device decoder can make
    them: an 8-bit grey or YCbCr JPEG (baseline, extended or progressive) that ``decode``
    would decode at full size (no DCT shrink-on-load: the CPU's 1/8-scale decode beats
    decoding every pixel anywhere) and whose data ends with the end-of-image marker (nvJPEG
    does not report a truncated file the way libjpeg-turbo does). None for everything else,
    which ``decode`` handles; a broken header raises what ``decode`` raises."""
    if _classify(data) != "jpeg":
        return None
    hdr = _parse_jpeg_header(data)
    _check_size(hdr.width, hdr.height, max_pixels)
    _check_room_for_blocks(data, hdr)
    if not (hdr.sof in _TURBO_SOF and hdr.precision == 8 and hdr.components in (1, 3)):
        return None
    if not data.rstrip(b"\0").endswith(_EOI):
        return None
    orientation = _valid_orientation(hdr.orientation)
    if _pick_scale(hdr.width, hdr.height, _stored_min(min_size, (hdr.width, hdr.height), orientation)) != 1:
        return None
    h, w = (hdr.width, hdr.height) if orientation >= 5 else (hdr.height, hdr.width)
    deferred = DeferredJpeg(data, (h, w, hdr.components), orientation)
    return Decoded(deferred, "jpeg", _matching_icc(hdr.icc, hdr.components),  # type: ignore[arg-type]
                   (hdr.width, hdr.height), 1, orientation)


def _last_row(im) -> bytes:
    """The bottom row of a loaded Pillow image, in its own mode's bytes."""
    return im.crop((0, im.height - 1, im.width, im.height)).tobytes()


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


def _decode_pillow(data: bytes, fmt: str, max_pixels: int | None, min_size: MinSize) -> Decoded:
    """The general path: every non-hot-path JPEG and every other format."""
    if fmt == "webp" and (declared := _webp_size(data)):
        _check_size(*declared, max_pixels)     # before Pillow's own limit and libwebp's canvas
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
    if fmt == "png":
        _check_png_chunks(data)
        if _is_16bit_png(data):
            pixels = _decode_png16(data)
            if pixels is not None:
                _check_png_rows(data, pixels[-1].tobytes())
    elif fmt == "tiff" and _is_16bit_colour_tiff(im):
        pixels = _decode_tiff16(data, im)
        to_apply = 1                          # OpenCV's TIFF decoder applies the orientation itself
    if pixels is None:
        _pillow_load(im, fmt, data)
        if fmt == "png":
            _check_png_rows(data, _last_row(im))
        if fmt == "tiff" and 0x0112 not in im.tag_v2:
            to_apply = 1     # Pillow's TIFF loader transposes itself and drops the tag
        pixels, icc = _to_array(im, icc)
    icc = _matching_icc(icc, pixels.shape[2])
    return Decoded(_orient(pixels, to_apply), fmt, icc, stored, scale, orientation)
