"""Encode HWC pixels (uint8 or uint16) as jpeg/png/webp/avif/tiff, and name the output formats."""

from __future__ import annotations

import functools
import io

import numpy as np
import simplejpeg

from gpupipe import pixels as contract
from gpupipe.errors import ImageTooLarge, UsageError

from ..records import dataclass
from .formats import BY_NAME, _writable, normalise_format
from .jpeg import _with_icc
from .modes import _matching_icc
from .png import encode_png16
from .tiff import encode_tiff
from .webp import _with_icc as _webp_with_icc

#: zlib level for PNG output. Measured on Kodak photos (768x512 and 256x171)
#: with Pillow: level 1 encodes 2-3.5x faster than zlib's default 6 (28 vs
#: 96-148 ms at 768x512) and the files are -6 % to +10 % the size; on a
#: flat graphic with text, +4 % for 1.6x speed. Level 1 is also OpenCV's
#: default. PNG output of photos is bulky either way; speed wins.
PNG_COMPRESS_LEVEL = 1



def encode(pixels: np.ndarray, *, format: str, quality: int = 85,
           background: tuple[int, int, int] = (255, 255, 255),
           icc_profile: bytes | None = None) -> bytes:
    """Encode HWC pixels (uint8 or uint16, C = 1..4) as ``format``; returns the file bytes.

    ``quality`` (1-100) drives jpeg/webp/avif; PNG is lossless and uses zlib
    level ``PNG_COMPRESS_LEVEL`` (1, the fastest; measurements there); TIFF is lossless
    (deflate). JPEG has no alpha, so LA/RGBA are composited onto ``background`` first (L/LA
    onto its luma). 16-bit pixels are written 16-bit to the formats that hold it (PNG, TIFF)
    and rounded to 8 bits for the others (``pixels.to_8bit``), after any compositing.
    Only an ICC profile that fits the pixels is written; no other metadata (EXIF, XMP,
    comments) is.
    """
    fmt = normalise_format(format)
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise UsageError(f"quality must be an integer from 1 to 100, got {quality!r}")
    a = _check_pixels(pixels)
    most, (height, width) = BY_NAME[fmt].max_side, a.shape[:2]
    if most is not None and max(width, height) > most:      # the codec's own error would read as a bug
        raise ImageTooLarge(f"{fmt.upper()} holds at most {most} pixels a side, and this output is "
                            f"{width}x{height}: make it smaller (--resize) or choose another --format")
    if fmt == "jpeg" and a.shape[2] in (2, 4):
        a = _flatten(a, background)
    if a.dtype != np.uint8 and not BY_NAME[fmt].sixteen_bit:
        a = contract.to_8bit(a)
    if fmt == "webp" and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)               # WebP has no grey mode
    elif fmt in ("webp", "avif") and a.shape[2] == 2:
        a = a[:, :, [0, 0, 0, 1]]                 # LA -> RGBA: neither writer takes LA
    icc = _matching_icc(icc_profile, a.shape[2])
    if fmt == "tiff":
        return encode_tiff(a, icc)
    if fmt == "png" and a.dtype == np.uint16:
        return encode_png16(a, icc, PNG_COMPRESS_LEVEL)
    if fmt == "jpeg":
        # libjpeg-turbo straight from the array: no Pillow copy (4 bytes a pixel) and
        # 1.4-2x faster than Image.save; the ICC profile goes in as APP2 segments.
        colorspace = "GRAY" if a.shape[2] == 1 else "RGB"
        data = simplejpeg.encode_jpeg(a, quality=int(quality), colorspace=colorspace, colorsubsampling="420")
        return _with_icc(data, icc) if icc else data
    if fmt == "webp":
        return _encode_webp(a, int(quality), icc)
    from PIL import Image                   # loaded only for the formats Pillow writes
    im = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)  # mode from the shape
    opts: dict = {}
    if icc:
        opts["icc_profile"] = icc
    buf = io.BytesIO()
    if fmt == "png":
        im.save(buf, "PNG", compress_level=PNG_COMPRESS_LEVEL, **opts)
    else:
        im.save(buf, "AVIF", quality=int(quality), **opts)
    return buf.getvalue()


def _encode_webp(a: np.ndarray, quality: int, icc: bytes | None) -> bytes:
    """RGB or RGBA pixels as a lossy WebP (libwebp's method 4), with the ICC profile if any."""
    if _opencv_writes_pillows_webp():
        data = _opencv_webp(a, quality)
        data = _webp_with_icc(data, icc) if icc else data
        if data is not None:
            return data
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "WEBP", quality=quality, method=4, **({"icc_profile": icc} if icc else {}))
    return buf.getvalue()


def _opencv_webp(a: np.ndarray, quality: int) -> bytes:
    import cv2
    bgr = cv2.cvtColor(a, cv2.COLOR_RGB2BGR if a.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, data = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {a.shape[1]}x{a.shape[0]} WebP")
    return data.tobytes()


def webp_writer() -> str:
    """Which call writes WebP here, in words (``gpupipe doctor``)."""
    if not _writable("webp"):
        return "none: this Pillow cannot write WebP"
    from PIL import features
    version = features.version("webp")
    if _opencv_writes_pillows_webp():
        return f"libwebp {version} through OpenCV (it writes Pillow's bytes here)"
    return f"libwebp {version} through Pillow (OpenCV's would write other bytes)"


@functools.cache
def _opencv_writes_pillows_webp() -> bool:
    """Whether OpenCV's WebP encoder writes Pillow's bytes here, checked once per process.

    Both call libwebp's encoder with the same settings, but Pillow first copies the pixels into an
    image of its own (four bytes a pixel) and then assembles the file with libwebp's muxer: 1.4 ms
    more on an ImageNet-size photo (8 % of its encode), 4 % at 1600 px (docs/benchmarks.md). Where the two wheels bundle the same libwebp, their bytes are the same;
    an ICC profile, which OpenCV cannot write, is added as libwebp's muxer adds it in Pillow
    (``webp._with_icc``). Where they differ, Pillow's writes every WebP: the format's bytes are
    always Pillow's."""
    from PIL import Image
    for pixels in _webp_probes():
        for icc in (None, b"a stand-in of odd length!"):      # 25 bytes: the chunk is padded
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, "WEBP", quality=80, method=4, **({"icc_profile": icc} if icc else {}))
            try:
                data = _opencv_webp(pixels, 80)
            except Exception:                  # an OpenCV built without WebP: Pillow's it is
                return False
            if (_webp_with_icc(data, icc) if icc else data) != buf.getvalue():
                return False
    return True


def _webp_probes() -> tuple[np.ndarray, np.ndarray]:
    """The check's images: a 32x24 pattern with detail, with alpha and without."""
    ramp = np.arange(24 * 32 * 4, dtype=np.uint32).reshape(24, 32, 4)
    probe = ((ramp * 2654435761) >> 24).astype(np.uint8)
    return probe, np.ascontiguousarray(probe[:, :, :3])


@dataclass(frozen=True)
class EncodedImage:
    """A result already encoded where its pixels are (a GPU backend's nvJPEG): the file bytes
    of one variant, less the ICC profile, which ``with_icc_profile`` adds as ``encode`` would.
    Only L and RGB results are encoded this way (JPEG has no alpha: the host flattens those)."""

    data: bytes
    format: str
    channels: int

    @property
    def nbytes(self) -> int:
        return len(self.data)


def with_icc_profile(encoded: EncodedImage, icc_profile: bytes | None) -> bytes:
    """The file bytes of ``encoded`` with the profile ``encode`` would have written (one that
    fits the channels), as APP2 segments."""
    icc = _matching_icc(icc_profile, encoded.channels)
    return _with_icc(encoded.data, icc) if icc else encoded.data


def _check_pixels(pixels: np.ndarray) -> np.ndarray:
    a = np.asarray(pixels)
    if a.dtype not in contract.DTYPES:
        raise UsageError(f"pixels must be uint8 or uint16, got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or not 1 <= a.shape[2] <= 4 or a.shape[0] == 0 or a.shape[1] == 0:
        raise UsageError(f"pixels must be HxWxC with C in 1..4, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _flatten(a: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Composite LA/RGBA onto an opaque background: out = c*a + bg*(1-a),
    in float32, rounded half-to-even (docs/design.md §4), at the pixels' depth (the 0-255
    background scaled by it)."""
    bg = np.asarray(background, np.float32).reshape(-1)[:3]
    if a.shape[2] == 2:
        bg = np.float32(np.rint(0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]))[None]
    bg = bg * np.float32(contract.value_scale(a.dtype))
    colour = a[:, :, :-1].astype(np.float32)
    alpha = a[:, :, -1:].astype(np.float32) * np.float32(1 / contract.maximum(a.dtype))
    out = colour * alpha + bg * (np.float32(1) - alpha)
    return contract.store(out, a.dtype)
