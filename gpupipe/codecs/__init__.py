"""Decode image bytes into pixel arrays and encode pixel arrays into files.

Contract (docs/design.md §4): pixels are ``uint8`` HWC, C-contiguous, with 1 (L),
2 (LA), 3 (RGB) or 4 (RGBA) channels. Decoding applies the EXIF orientation
(pixels come out upright), normalises every mode to one of those four, takes
the first frame of animations and refuses a declared size above ``max_pixels``
before a single pixel is decoded. Encoding writes jpeg/png/webp (and avif where
Pillow has it), flattens alpha for jpeg and keeps only the ICC profile.

The package is split by job; this module re-exports the public API:

    formats      the table of formats: names, extensions, read/write, alpha, 16-bit
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
    decoding     ``decode``, ``Decoded``, ``DEFAULT_MAX_PIXELS``; ``defer_jpeg``, ``DeferredJpeg``
                 (a JPEG checked here, its pixels left to a device decoder)
    probing      ``probe``, ``ImageInfo``, ``header_size``
    encoding     ``encode``, output formats and extensions, alpha flattening;
                 ``EncodedImage`` (a result a device encoded) and ``with_icc_profile``

(The modules are not named after the functions they hold, so that
``gpupipe.codecs.decode`` is always the function: callers and tests use and
monkeypatch it through this package.)
"""

from __future__ import annotations

from .decoding import (  # noqa: F401  (MinSize: a public type)
    DEFAULT_MAX_PIXELS, Decoded, DeferredJpeg, MinSize, decode, decode_deferred_on_host, defer_jpeg)
from .encoding import (  # noqa: F401  (EncodedImage, with_icc_profile: for the engine)
    PNG_COMPRESS_LEVEL,  # noqa: F401  (documented constant)
    _flatten,  # noqa: F401  (tests check alpha flattening directly)
    EncodedImage,
    available_formats,
    encode,
    extension_for,
    normalise_format,
    with_icc_profile,
)
from .modes import pil_to_array
from .probing import ImageInfo, header_size, probe
from .sniffing import READ_FORMATS, format_from_name, sniff

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
