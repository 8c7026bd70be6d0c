"""The real photographs the tests read: tests/photos, in the repository (see its SOURCES.md).

``stills()`` are lossless RGB photos of the Kodak suite's size (768x512, or 512x768 upright),
made once per test session from the distinct photographs in tests/photos: the reference
checks for resampling and filters want photographic detail without JPEG's blocks.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

CORPUS = Path(__file__).resolve().parents[1] / "photos"
assert (CORPUS / "exif-orientation").is_dir(), f"the test photos are missing from {CORPUS}"

# One file per distinct photograph (the EXIF set holds two photos, each stored nine ways).
_STILL_SOURCES = ("exif-orientation/Landscape_1.jpg", "exif-orientation/Portrait_1.jpg", "pillow/flower.jpg",
                  "pillow/flower2.jpg", "pillow/xmp_test.jpg", "pillow/icc_profile_big.jpg", "pillow/iptc.jpg",
                  "pillow/exif-72dpi-int.jpg", "pillow/app13-multiple.jpg")


@functools.cache
def stills() -> list[str]:
    """Paths of the stills, made on first use."""
    folder = Path(tempfile.mkdtemp(prefix="gpupipe-stills-"))
    atexit.register(shutil.rmtree, folder, True)
    made = []
    for name in _STILL_SOURCES:
        with Image.open(CORPUS / name) as im:
            upright = ImageOps.exif_transpose(im.convert("RGB"))
        size = (768, 512) if upright.width >= upright.height else (512, 768)
        still = ImageOps.fit(upright, size, Image.Resampling.LANCZOS)
        path = folder / (Path(name).stem + ".png")
        still.save(path, compress_level=1)
        made.append(str(path))
    return made


def copies(photos, directory: Path, times: int) -> Path:
    """A new ``directory`` holding ``times`` copies of each photo ("<copy>-<name>"): a corpus
    big enough for batches and queues to fill."""
    directory.mkdir(parents=True)
    for copy in range(times):
        for photo in photos:
            shutil.copy(photo, directory / f"{copy}-{Path(photo).name}")
    return directory
