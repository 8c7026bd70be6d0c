"""The image formats gpupipe knows, in one table.

Everything about a format that is not codec code is read from here: which files the scan
picks by name, the format a name suggests, the names accepted for ``--format``, the extension
outputs are named with, the format an output keeps when none is asked for, and the docs' table
of formats. Adding a format touches this table, its codec and its tests.
"""

from __future__ import annotations

import functools
import importlib.util

from ..errors import UsageError, did_you_mean
from ..records import dataclass

#: The most pixels an input may declare unless told otherwise (--max-pixels): Pillow's own hard
#: decompression-bomb limit (2 x Image.MAX_IMAGE_PIXELS).
DEFAULT_MAX_PIXELS = 178_956_970


@dataclass(frozen=True)
class Format:
    """One image format: its names, what gpupipe does with it and what it holds."""

    name: str
    extensions: tuple[str, ...]        # the first names outputs; all are recognised on inputs
    read: bool                         # decode reads it
    write: bool                        # encode writes it (where Pillow has ``pillow_feature``)
    alpha: bool                        # it holds an alpha channel (else alpha is flattened onto the background)
    sixteen_bit: bool                  # gpupipe reads and writes its 16-bit images at 16 bits (else 8: rounded)
    max_side: int | None = None        # the largest width or height it holds (None: none an image reaches)
    pillow_feature: str | None = None  # PIL.features name this build must have to read or write it
    module: str | None = None          # the module that reads it, from an optional extra ...
    extra: str | None = None           # ... pip install 'gpupipe[extra]'


FORMATS = (
    Format("jpeg", ("jpg", "jpeg", "jpe", "jfif"), read=True, write=True, alpha=False, sixteen_bit=False,
           max_side=65500),                                     # libjpeg-turbo's JPEG_MAX_DIMENSION
    Format("png", ("png",), read=True, write=True, alpha=True, sixteen_bit=True),
    Format("gif", ("gif",), read=True, write=False, alpha=True, sixteen_bit=False),
    Format("webp", ("webp",), read=True, write=True, alpha=True, sixteen_bit=False, max_side=16383,
           pillow_feature="webp"),
    Format("bmp", ("bmp", "dib"), read=True, write=False, alpha=False, sixteen_bit=False),
    Format("tiff", ("tif", "tiff"), read=True, write=True, alpha=True, sixteen_bit=True),
    Format("avif", ("avif",), read=True, write=True, alpha=True, sixteen_bit=False, max_side=65536,
           pillow_feature="avif"),
    Format("heif", ("heic", "heif", "hif"), read=True, write=False, alpha=True, sixteen_bit=False,
           module="pillow_heif", extra="heif"),
    Format("dicom", ("dcm", "dicom"), read=True, write=False, alpha=False, sixteen_bit=False, module="pydicom",
           extra="medical"),
    # Camera RAW: mostly TIFF containers, so the name decides (codecs/raw.py).
    Format("raw", ("dng", "cr2", "nef", "nrw", "arw", "srf", "sr2", "orf", "rw2", "raf", "pef", "srw", "3fr",
                   "erf", "kdc", "mrw", "iiq", "rwl", "x3f"), read=True, write=False, alpha=False,
           sixteen_bit=False, module="rawpy", extra="raw"),
)
BY_NAME = {f.name: f for f in FORMATS}
READ_FORMATS = tuple(f.name for f in FORMATS if f.read)
# An input's extension (no dot, lower case) -> the format its name suggests.
BY_EXTENSION = {ext: f.name for f in FORMATS if f.read for ext in f.extensions}
# What the scan picks by name (without --all-files).
IMAGE_EXTENSIONS = frozenset("." + ext for ext in BY_EXTENSION)
# Names --format and spec files accept -> the format.
WRITE_NAMES = {alias: f.name for f in FORMATS if f.write for alias in (f.name, *f.extensions)}


@functools.cache
def unavailable(name: str) -> str | None:
    """Why format ``name`` cannot be read here (its extra is not installed, Pillow lacks it), or None."""
    known = BY_NAME[name]
    if known.module is not None and not _importable(known.module):
        return f"reading {name.upper()} needs {known.module}: pip install 'gpupipe[{known.extra}]'"
    if known.pillow_feature is not None:
        from PIL import features
        if not features.check(known.pillow_feature):
            return f"this Pillow was built without {known.pillow_feature.upper()}"
    return None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def extension(name: str) -> str:
    """The extension outputs of format ``name`` are named with: "jpeg" -> "jpg"."""
    return BY_NAME[name].extensions[0]


def kept(input_format: str) -> str:
    """The output format of an input that keeps its format: its own if gpupipe writes it, else PNG."""
    known = BY_NAME.get(input_format)
    return input_format if known is not None and known.write else "png"


@functools.cache          # asked for every file written; Pillow's features cannot change in a process
def _writable(fmt: str) -> bool:
    """Whether this installation can write ``fmt``: its Pillow plugin is loaded only when asked (a
    run writing JPEGs never loads Pillow's WebP and AVIF codecs, 2-3 ms of its start)."""
    known = BY_NAME[fmt]
    if not known.write or known.pillow_feature is None:
        return known.write
    from PIL import features
    return features.check(known.pillow_feature)


def available_formats() -> tuple[str, ...]:
    """Output formats this installation can write."""
    return tuple(f.name for f in FORMATS if _writable(f.name))


def normalise_format(name: str) -> str:
    """"JPG", ".jpeg", "Jpeg" -> "jpeg". UsageError for unknown/unavailable names."""
    key = str(name).strip().lower().lstrip(".")
    fmt = WRITE_NAMES.get(key)
    if fmt is not None and _writable(fmt):
        return fmt
    valid = ", ".join(f + (" (jpg)" if f == "jpeg" else "") for f in available_formats())
    if fmt is None:
        raise UsageError(f"unknown output format {name!r}{did_you_mean(key, WRITE_NAMES)}; choose one of: {valid}")
    raise UsageError(f"output format {fmt!r} needs a Pillow built with {fmt.upper()} support, "
                     f"which this one lacks; choose one of: {valid}")


@functools.lru_cache(maxsize=None)
def extension_for(format: str) -> str:
    """File extension (no dot) for an output format: "jpeg" -> "jpg". Cached: asked for every
    input's every output, from a handful of names."""
    return extension(normalise_format(format))
