"""The image formats gpupipe knows, in one table.

Everything about a format that is not codec code is read from here: which files the scan
picks by name, the format a name suggests, the names accepted for ``--format``, the extension
outputs are named with, the format an output keeps when none is asked for, and the docs' table
of formats. Adding a format touches this table, its codec and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    name: str
    extensions: tuple[str, ...]        # the first names outputs; all are recognised on inputs
    read: bool                         # decode reads it
    write: bool                        # encode writes it (where Pillow has ``pillow_feature``)
    alpha: bool                        # it holds an alpha channel (else alpha is flattened onto the background)
    sixteen_bit: bool                  # it can hold 16 bits a channel (gpupipe reads and writes 8 today)
    pillow_feature: str | None = None  # PIL.features name this build must have to write it


FORMATS = (
    Format("jpeg", ("jpg", "jpeg", "jpe", "jfif"), read=True, write=True, alpha=False, sixteen_bit=False),
    Format("png", ("png",), read=True, write=True, alpha=True, sixteen_bit=True),
    Format("gif", ("gif",), read=True, write=False, alpha=True, sixteen_bit=False),
    Format("webp", ("webp",), read=True, write=True, alpha=True, sixteen_bit=False, pillow_feature="webp"),
    Format("bmp", ("bmp", "dib"), read=True, write=False, alpha=False, sixteen_bit=False),
    Format("tiff", ("tif", "tiff"), read=True, write=False, alpha=True, sixteen_bit=True),
    Format("avif", ("avif",), read=False, write=True, alpha=True, sixteen_bit=False, pillow_feature="avif"),
)
BY_NAME = {f.name: f for f in FORMATS}
READ_FORMATS = tuple(f.name for f in FORMATS if f.read)
# An input's extension (no dot, lower case) -> the format its name suggests.
BY_EXTENSION = {ext: f.name for f in FORMATS if f.read for ext in f.extensions}
# What the scan picks by name (without --all-files).
IMAGE_EXTENSIONS = frozenset("." + ext for ext in BY_EXTENSION)
# Names --format and spec files accept -> the format.
WRITE_NAMES = {alias: f.name for f in FORMATS if f.write for alias in (f.name, *f.extensions)}


def extension(name: str) -> str:
    """The extension outputs of format ``name`` are named with: "jpeg" -> "jpg"."""
    return BY_NAME[name].extensions[0]


def kept(input_format: str) -> str:
    """The output format of an input that keeps its format: its own if gpupipe writes it, else PNG."""
    known = BY_NAME.get(input_format)
    return input_format if known is not None and known.write else "png"
