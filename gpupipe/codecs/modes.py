"""Normalise any Pillow mode to L/LA/RGB/RGBA (uint8, or uint16 for 16-bit grey), and keep the
ICC profile that fits."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from gpupipe.errors import UnsupportedFormat

from .orientation import _orient, _valid_orientation

if TYPE_CHECKING:             # Pillow's images arrive as arguments: a JPEG run never loads PIL.Image
    from PIL import Image


def _stretch(a: np.ndarray) -> np.ndarray:
    """Map the finite range of ``a`` linearly onto 0..255 (NaN -> 0)."""
    a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _to_array(im: Image.Image, icc: bytes | None) -> tuple[np.ndarray, bytes | None]:
    """Pillow image (any mode) -> HWC array in L/LA/RGB/RGBA, and the ICC profile that still
    describes it (converting from CMYK consumes it). 16-bit grey stays 16-bit (uint16); every
    other mode comes out uint8."""
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
        return np.asarray(im).astype(np.uint16)[:, :, None], icc     # native byte order
    elif mode == "I":
        a = np.asarray(im)
        if a.min() >= 0 and a.max() <= 255:
            out = a.astype(np.uint8)              # 8-bit data stored in a 32-bit mode
        elif a.min() >= 0 and a.max() <= 65535:
            out = a.astype(np.uint16)             # 16-bit data (the usual source of "I")
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


def pil_to_array(im: Image.Image, exif_orientation: bool = False) -> np.ndarray:
    """A Pillow image of any mode as a writable uint8 HWC array in L/LA/RGB/RGBA: the same
    normalisation ``decode`` applies, and with ``exif_orientation`` its EXIF Orientation tag
    applied as ``decode`` applies it (an invalid tag counts as none)."""
    pixels, _icc = _to_array(im, None)
    orientation = _valid_orientation(im.getexif().get(0x0112)) if exif_orientation else 1
    return _orient(pixels, orientation)
