"""WebP output: always Pillow's bytes, whichever libwebp wrapper writes them.

gpupipe writes WebP through OpenCV's libwebp call where it gives Pillow's bytes (a check made once
per process; see codecs.encoding._opencv_writes_pillows_webp), and adds an ICC profile to it as
libwebp's muxer does in Pillow. These tests hold both to Pillow's own output, on real photos.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from gpupipe import codecs
from gpupipe.codecs import encoding, webp

from tests.support import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "photos"
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
PROFILES = [None, SRGB, SRGB + b"!"]          # none, then a real profile of even and of odd length (padding)


def pillow_webp(pixels: np.ndarray, quality: int, icc: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "WEBP", quality=quality, method=4, **({"icc_profile": icc} if icc else {}))
    return buf.getvalue()


def images() -> list[tuple[str, np.ndarray]]:
    """Real photos at a few sizes, with and without alpha (some of it transparent, or all opaque)."""
    with Image.open(EXAMPLES / "Landscape_1.jpg") as im:
        im.draft("RGB", (450, 300))
        photo = np.asarray(im.convert("RGB"))
    with Image.open(EXAMPLES / "chapel.png") as im:
        chapel = np.asarray(im.convert("RGB"))
    rgba = np.dstack([photo, np.tile(np.linspace(0, 255, photo.shape[1], dtype=np.uint8), (photo.shape[0], 1))])
    opaque = np.dstack([chapel, np.full(chapel.shape[:2], 255, np.uint8)])
    return [("photo", photo), ("chapel", chapel), ("photo with graded alpha", rgba),
            ("opaque rgba", opaque), ("1x1", photo[:1, :1].copy()), ("1x1 rgba", rgba[:1, :1].copy()),
            ("odd strip", np.ascontiguousarray(photo[:3, :257]))]


@pytest.mark.parametrize("name,pixels", images(), ids=[name for name, _ in images()])
def test_webp_output_is_pillows_bytes(name: str, pixels: np.ndarray) -> None:
    for icc in PROFILES:
        for quality in (1, 80, 100):
            assert codecs.encode(pixels, format="webp", quality=quality, icc_profile=icc) == \
                pillow_webp(pixels, quality, icc), (name, icc and len(icc), quality)


@pytest.mark.parametrize("name,pixels", images(), ids=[name for name, _ in images()])
def test_a_profile_is_added_as_libwebps_muxer_adds_it(name: str, pixels: np.ndarray) -> None:
    """Independent of OpenCV: Pillow's WebP without a profile, plus the profile, is Pillow's with it."""
    for icc in [*PROFILES[1:], b"odd", b"even"]:
        assert webp._with_icc(pillow_webp(pixels, 80), icc) == pillow_webp(pixels, 80, icc), (name, len(icc))


def test_an_unknown_layout_gets_no_profile_here() -> None:
    """A lossless WebP (VP8L) is not a layout the writer adds profiles to: Pillow then writes it."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "WEBP", lossless=True)
    assert buf.getvalue()[12:16] == b"VP8L"
    assert webp._with_icc(buf.getvalue(), SRGB) is None


def test_opencvs_writer_is_chosen_exactly_where_it_writes_pillows_bytes() -> None:
    """The once-per-process check answers for every image, not only its probe: where it chose
    OpenCV, OpenCV's bytes (with a profile added here) are Pillow's on real photos too; where it
    chose Pillow, OpenCV's differ somewhere here (or it cannot write WebP at all)."""
    def same(pixels: np.ndarray, icc: bytes | None) -> bool:
        try:
            data = encoding._opencv_webp(pixels, 80)
        except Exception:
            return False
        return (webp._with_icc(data, icc) if icc else data) == pillow_webp(pixels, 80, icc)

    cases = [*(("probe", probe) for probe in encoding._webp_probes()), *images()]     # its own probes too
    agree = all(same(pixels, icc) for _, pixels in cases for icc in PROFILES)
    assert encoding._opencv_writes_pillows_webp() == agree


