"""Camera RAW photos (DNG, CR2, NEF, ARW, ORF, RW2, RAF …) through LibRaw (rawpy, the ``[raw]`` extra).

Most RAW formats are TIFF containers, so their bytes alone say "TIFF" (and Pillow would read the
small preview inside): a file is taken as RAW when its name has a RAW extension and its bytes are
a TIFF container or a known RAW signature. ``decode`` demosaics with the camera's white balance
into sRGB at 8 bits, or 16 when asked (every output holds 16 bits), the camera's orientation applied; when the chain starts with a shrink that
leaves at least twice the target size from a half-size image, it demosaics at half size
(LibRaw's ``half_size``: each 2×2 Bayer block becomes one pixel, four times less work).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Callable

from ..errors import CorruptImage, TruncatedImage, UnsupportedFormat
from ..records import dataclass

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class RawHeader:
    """A camera RAW photo's upright size and orientation, as LibRaw reads them."""

    width: int          # upright, after the camera's orientation
    height: int
    flip: int           # LibRaw's flip code (0: none, 3: 180°, 5/6: 90° turns)


def header(data: bytes) -> RawHeader:
    with _opened(data) as raw:
        return RawHeader(*_upright(raw.sizes), raw.sizes.flip)


def _upright(sizes) -> tuple[int, int]:
    """(width, height) once the camera's orientation is applied (flips 5 and 6 turn it 90°)."""
    return (sizes.height, sizes.width) if sizes.flip in (5, 6) else (sizes.width, sizes.height)


def decode(data: bytes, *, check_size: Callable[[int, int], None],
           min_size: tuple[int, int] | Callable[[int, int], tuple[int, int] | None] | None,
           bits: int = 8) -> np.ndarray:
    """The photo as upright sRGB pixels, H×W×3 uint8 (uint16 with ``bits`` 16); ``check_size(width,
    height)`` refuses a size before the demosaic."""
    import rawpy

    with _opened(data) as raw:
        upright = _upright(raw.sizes)
        check_size(*upright)
        wanted = min_size(*upright) if callable(min_size) else min_size
        half = wanted is not None and wanted[0] * 2 <= upright[0] and wanted[1] * 2 <= upright[1]
        try:
            return raw.postprocess(use_camera_wb=True, output_bps=bits, half_size=half,
                                   output_color=rawpy.ColorSpace.sRGB)
        except (rawpy.LibRawIOError, rawpy.LibRawDataError) as exc:
            raise TruncatedImage(f"truncated or damaged RAW data: {exc}") from None
        except rawpy.LibRawError as exc:
            raise CorruptImage(f"corrupt RAW file: {exc.__class__.__name__}: {exc}") from None


class _opened:
    """rawpy's reader over the bytes, LibRaw's complaints as gpupipe's errors."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __enter__(self):
        import rawpy

        try:
            self.raw = rawpy.imread(io.BytesIO(self.data))
        except rawpy.LibRawFileUnsupportedError:
            raise UnsupportedFormat("unsupported format: not a RAW file LibRaw reads (a camera it does not know, "
                                    "or not a RAW file at all)") from None
        except (rawpy.LibRawIOError, rawpy.LibRawDataError) as exc:
            raise TruncatedImage(f"truncated or damaged RAW file: {exc}") from None
        except rawpy.LibRawError as exc:
            raise CorruptImage(f"corrupt RAW file: {exc.__class__.__name__}: {exc}") from None
        return self.raw

    def __exit__(self, *exc) -> None:
        self.raw.close()
