"""EXIF orientation: read the tag, validate it, apply it to pixels."""

from __future__ import annotations

import struct

import numpy as np


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


def _orientation_from_exif_bytes(exif: bytes) -> int | None:
    if exif.startswith(b"Exif\0\0"):
        exif = exif[6:]
    return _exif_orientation(exif, 0, len(exif))


def _valid_orientation(raw: int | None, problems: list[str] | None = None) -> int:
    if raw is None or raw == 1:
        return 1
    if 2 <= raw <= 8:
        return raw
    if problems is not None:
        problems.append(f"invalid EXIF orientation {raw}; treated as 1 (upright)")
    return 1


def _orient(a: np.ndarray, orientation: int, xp=np) -> np.ndarray:
    """Apply an EXIF orientation with views, then one contiguous copy. ``xp``: the array module
    (NumPy, or CuPy for pixels decoded on the GPU)."""
    if orientation == 2:
        a = a[:, ::-1]
    elif orientation == 3:
        a = a[::-1, ::-1]
    elif orientation == 4:
        a = a[::-1]
    elif orientation == 5:
        a = a.swapaxes(0, 1)                      # transpose
    elif orientation == 6:
        a = xp.rot90(a, -1)                       # 90 degrees clockwise
    elif orientation == 7:
        a = a[::-1, ::-1].swapaxes(0, 1)          # transverse
    elif orientation == 8:
        a = xp.rot90(a, 1)                        # 90 degrees counter-clockwise
    if xp is not np:
        return xp.ascontiguousarray(a)
    # Pillow hands out read-only arrays; the engine may work in place.
    if orientation in (2, 3, 4, 5, 6, 7, 8) or not a.flags.writeable or not a.flags.c_contiguous:
        a = np.array(a, order="C", copy=True)
    return a
