"""DICOM (medical images) through pydicom, the ``[medical]`` extra.

A DICOM file's pixels are measurements, not display values: ``decode`` applies the modality
LUT (Rescale Slope/Intercept: CT values in Hounsfield units), then the file's own display
window (Window Center/Width, the radiologist's window/level), or, when the file names none,
the frame's own range, and maps that to 8 bits (grey; colour files as RGB). MONOCHROME1
(black is the highest value) is inverted so black is black.

``decode(values=True)`` (a spec whose chains start by reading values: window, normalize,
equalize) gives a grey file's measured values instead, losslessly in 16 bits, with the line that
turns a pixel into its value: ``value = slope · pixel + intercept``. Stored values are kept as
they are (a signed file's are offset by 32768, a MONOCHROME1 file's turned round so that white is
white, the line saying so); a file whose values do not fit 16 bits, or colour, is decoded for
display as above. A multi-frame file gives its first
frame; ``header`` says how many there are (``gpupipe inspect`` lists it). Compressed transfer
syntaxes pydicom cannot decode here (JPEG 2000, JPEG-LS without their plug-ins) fail as
``unsupported``, naming the syntax.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np

from ..errors import CorruptImage, TruncatedImage, UnsupportedFormat
from ..records import dataclass


@dataclass(frozen=True)
class DicomHeader:
    """What a DICOM dataset declares of its image, read without its pixel data."""

    width: int
    height: int
    frames: int
    photometric: str
    transfer_syntax: str
    bits: int = 8                  # Bits Stored


def header(data: bytes) -> DicomHeader:
    """Size, frames and encoding from the dataset's elements, without its pixel data."""
    ds = _read(data, stop_before_pixels=True)
    width, height = _size(ds)
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    return DicomHeader(width, height, _frames(ds), str(ds.get("PhotometricInterpretation", "MONOCHROME2")),
                       getattr(syntax, "name", str(syntax)), int(ds.get("BitsStored", 8) or 8))


Rescale = tuple[float, float]           # (slope, intercept): value = slope · pixel + intercept


def decode(data: bytes, check_size: Callable[[int, int], None],
           values: bool = False) -> tuple[np.ndarray, tuple[int, int], Rescale | None]:
    """The first frame as display pixels, H×W×1 (grey) or H×W×3 (colour) uint8, and its size;
    ``check_size(width, height)`` refuses a size before any pixel is decoded. ``values``: a grey
    frame's measured values in uint16 instead, with their rescale (else None: display pixels)."""
    ds = _read(data)
    size = _size(ds)
    check_size(*size)
    frame = _decoded_frame(ds)
    if values:
        measured = _measured(ds, frame)
        if measured is not None:
            return measured[0], size, measured[1]
    return _pixels(ds, frame), size, None


def _decoded_frame(ds) -> np.ndarray:
    try:
        return _first_frame(ds)
    except (NotImplementedError, RuntimeError) as exc:     # no handler for its compression here
        syntax = ds.file_meta.get("TransferSyntaxUID")
        raise UnsupportedFormat(f"unsupported DICOM encoding {getattr(syntax, 'name', syntax)}: pydicom cannot "
                                f"decode it here ({_first_line(exc)})") from None
    except (ValueError, EOFError) as exc:
        raise TruncatedImage(f"truncated or damaged DICOM pixel data: {_first_line(exc)}") from None


def _measured(ds, frame: np.ndarray) -> tuple[np.ndarray, Rescale] | None:
    """A grey integer frame as uint16 pixels and the line to its values, or None (colour, a
    modality LUT table, values beyond 16 bits)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if frame.ndim != 2 or frame.dtype.kind not in "iu" or "ModalityLUTSequence" in ds \
            or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    slope = _first_number(ds.get("RescaleSlope")) or 1.0
    intercept = _first_number(ds.get("RescaleIntercept")) or 0.0
    stored = frame.astype(np.int64)
    if frame.dtype.kind == "i":
        stored += 32768                                   # offset binary: int16 fits uint16
        intercept -= 32768 * slope
    if stored.min() < 0 or stored.max() > 65535:
        return None
    if photometric == "MONOCHROME1":                      # stored turned round: white is white
        stored = 65535 - stored
        slope, intercept = -slope, intercept + 65535 * slope
    return np.ascontiguousarray(stored.astype(np.uint16)[:, :, None]), (float(slope), float(intercept))


def _pixels(ds, frame: np.ndarray) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        return _to_8bit(apply_color_lut(frame, ds), np.iinfo(np.uint16).max)
    if frame.ndim == 3:                                    # RGB (pydicom converts YCbCr)
        return _to_8bit(frame, (1 << int(ds.get("BitsStored", 8))) - 1)
    values = apply_modality_lut(frame, ds).astype(np.float64)
    low, high = _window(ds, values)
    grey = _linear_window(values, low, high)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return grey[:, :, None]


def _read(data: bytes, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise CorruptImage(f"corrupt DICOM: {_first_line(exc)}") from None
    except (EOFError, OSError) as exc:
        raise TruncatedImage(f"truncated DICOM: {_first_line(exc)}") from None
    except Exception as exc:                   # pydicom reports a broken dataset with many types
        raise CorruptImage(f"corrupt DICOM: {exc.__class__.__name__}: {_first_line(exc)}") from None


def _size(ds) -> tuple[int, int]:
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if not rows or not columns:
        raise CorruptImage("corrupt DICOM: no Rows/Columns: not an image dataset")
    return int(columns), int(rows)


def _frames(ds) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _first_frame(ds) -> np.ndarray:
    from pydicom.pixels import pixel_array

    return pixel_array(ds, index=0) if _frames(ds) > 1 else ds.pixel_array


def _window(ds, values: np.ndarray) -> tuple[float, float]:
    """The display window as [low, high] in modality values: the file's first Window Center and
    Width (DICOM PS3.3 C.11.2.1.2), else the frame's own range."""
    center, width = _first_number(ds.get("WindowCenter")), _first_number(ds.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        return center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    return float(values.min()), float(values.max())


def _first_number(value) -> float | None:
    """A window element's first value (it may hold several), or None."""
    if value is not None and not isinstance(value, (str, bytes, int, float)):
        value = value[0] if len(value) else None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _linear_window(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """[low, high] onto 0-255, rounded to nearest; below low is 0, above high is 255."""
    if high <= low:
        return np.where(values > low, 255, 0).astype(np.uint8)
    scaled = (values - low) / (high - low) * 255.0
    return np.clip(np.floor(scaled + 0.5), 0, 255).astype(np.uint8)


def _to_8bit(pixels: np.ndarray, top: int) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    return np.clip(np.floor(pixels.astype(np.float64) * (255.0 / max(top, 1)) + 0.5), 0, 255).astype(np.uint8)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n", 1)[0][:300]
