"""Decode image bytes into pixel arrays and encode pixel arrays into files.

Contract (docs/design.md §4): pixels are ``uint8`` HWC, C-contiguous, with 1 (L),
2 (LA), 3 (RGB) or 4 (RGBA) channels. Decoding applies the EXIF orientation
(pixels come out upright), normalises every mode to one of those four, takes
the first frame of animations and refuses a declared size above ``max_pixels``
before a single pixel is decoded. Encoding writes jpeg/png/webp (and avif where
Pillow has it), flattens alpha for jpeg and keeps only the ICC profile.

The package is split by job; this module re-exports the public API:

    formats      the table of formats: names, extensions, read/write, alpha, 16-bit; the
                 output formats this installation writes (``normalise_format``, ``extension_for``);
                 ``DEFAULT_MAX_PIXELS``
    sniffing     format signatures, ``sniff``, ``READ_FORMATS``, unsupported formats
    jpeg         marker scan (size, EXIF orientation, ICC), TurboJPEG decode,
                 APP2 ICC insertion; why simplejpeg is the hot path (measured)
    orientation  read, validate and apply the EXIF orientation
    png          PNG chunk walking, CRC and row-count checks, the 16-bit colour PNG path
    tiff         tells a short deflate strip from a damaged one (after a failed load)
    webp         the WebP canvas size from the first chunk (checked before Pillow opens it)
    pillow       Pillow open/load with failures mapped to InputErrors (refused while
                 Pillow's LOAD_TRUNCATED_IMAGES is on)
    modes        mode normalisation to L/LA/RGB/RGBA, ICC matching, ``pil_to_array``
    decoding     ``decode``, ``Decoded``; ``defer_jpeg``, ``DeferredJpeg``
                 (a JPEG checked here, its pixels left to a device decoder)
    probing      ``probe``, ``ImageInfo``, ``header_size``
    encoding     ``encode``, alpha flattening;
                 ``EncodedImage`` (a result a device encoded) and ``with_icc_profile``

(The modules are not named after the functions they hold, so that
``gpupipe.codecs.decode`` is always the function: callers and tests use and
monkeypatch it through this package. The names of the modules that need NumPy load
on first use.)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .formats import DEFAULT_MAX_PIXELS, available_formats, extension_for, normalise_format
from .sniffing import READ_FORMATS, format_from_name, sniff

# The pixel side (NumPy, simplejpeg, Pillow) loads on first use (PEP 562): the run's own process
# finds, plans and names outputs with the format table and the signatures alone, and a command
# that reads no pixels (``--help``, ``ops``) never loads NumPy (50 ms of its start).
_PIXEL_SIDE = {
    "Decoded": "decoding", "DeferredJpeg": "decoding", "MinSize": "decoding",
    "decode": "decoding", "decode_deferred_on_host": "decoding", "defer_jpeg": "decoding",
    "PNG_COMPRESS_LEVEL": "encoding", "_flatten": "encoding", "EncodedImage": "encoding", "encode": "encoding",
    "with_icc_profile": "encoding", "pil_to_array": "modes",
    "ImageInfo": "probing", "header_size": "probing", "probe": "probing",
}


def __getattr__(name: str):
    module = _PIXEL_SIDE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value          # asked once: later look-ups (and monkeypatches) find it here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PIXEL_SIDE})


if TYPE_CHECKING:
    from .decoding import (Decoded, DeferredJpeg, MinSize, decode, decode_deferred_on_host,  # noqa: F401
                           defer_jpeg)
    from .encoding import PNG_COMPRESS_LEVEL, EncodedImage, _flatten, encode, with_icc_profile  # noqa: F401
    from .modes import pil_to_array  # noqa: F401
    from .probing import ImageInfo, header_size, probe  # noqa: F401

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "READ_FORMATS",
    "Decoded",
    "ImageInfo",
    "available_formats",
    "decode",
    "encode",
    "extension_for",
    "format_from_name",
    "header_size",
    "normalise_format",
    "pil_to_array",
    "probe",
    "sniff",
]
