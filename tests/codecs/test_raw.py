"""Camera RAW inputs through LibRaw (rawpy), on real RAW files the tests make: DNGs written with
pidng from a real photo's Bayer mosaic. A damaged one fails alone; a JPEG named .nef is a JPEG;
without the [raw] extra a RAW file is reported unsupported with the pip command, never skipped."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gpupipe
from gpupipe import codecs

from tests.support.blocked import env_without
from tests.support.cli import EXAMPLES

rawpy = pytest.importorskip("rawpy", reason="the [raw] extra (rawpy) is not installed")
pidng = pytest.importorskip("pidng.core", reason="pidng (writes the test DNGs) is not installed")


@pytest.fixture(scope="module")
def elsewhere():
    """Decodes in a spawned process. LibRaw demosaics with OpenMP, and GNU OpenMP is not fork-safe:
    once this (pytest's) process has run it, the workers a later run forks would hang in it. A
    gpupipe run never decodes in its own process, so its workers are safe (docs/usage.md)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield lambda data, **how: pool.submit(_decode, data, **how).result()


def _decode(data: bytes, **how):
    decoded = codecs.decode(data, **how)
    return decoded.format, decoded.pixels, codecs.probe(data, name=how.get("name"))


# XYZ (D65) to linear sRGB, as DNG's ColorMatrix1 rationals: the camera's space is sRGB's.
SRGB_FROM_XYZ = [[round(v * 10000), 10000] for v in (3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415,
                                                       0.0557, -0.2040, 1.0570)]


def bayer_dng(path: Path, photo: Path = EXAMPLES / "Landscape_1.jpg", orientation: int = 1) -> np.ndarray:
    """A 12-bit RGGB DNG of a real photo's mosaic (each site keeps its colour's value); the photo."""
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation

    rgb = np.asarray(Image.open(photo).convert("RGB"))
    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    rgb = rgb[:h, :w]
    mosaic = np.empty((h, w), np.uint16)
    mosaic[0::2, 0::2], mosaic[0::2, 1::2] = rgb[0::2, 0::2, 0], rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2], mosaic[1::2, 1::2] = rgb[1::2, 0::2, 1], rgb[1::2, 1::2, 2]
    tags = DNGTags()
    for tag, value in ((Tag.ImageWidth, w), (Tag.ImageLength, h), (Tag.TileWidth, w), (Tag.TileLength, h),
                       (Tag.Orientation, orientation), (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 16),
                       (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
                       (Tag.CFARepeatPatternDim, [2, 2]), (Tag.CFAPattern, CFAPattern.RGGB), (Tag.BlackLevel, 0),
                       (Tag.WhiteLevel, 4095), (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
                       (Tag.ColorMatrix1, SRGB_FROM_XYZ),              # the sensor "sees" linear sRGB
                       (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]), (Tag.Make, "gpupipe"), (Tag.Model, "test"),
                       (Tag.DNGVersion, DNGVersion.V1_4), (Tag.DNGBackwardVersion, DNGVersion.V1_2)):
        tags.set(tag, value)
    writer = RAW2DNG()
    writer.options(tags, path="", compress=False)
    writer.convert(mosaic * 16, filename=str(path.with_suffix("")))
    if path.suffix != ".dng":
        path.with_suffix(".dng").rename(path)
    return rgb


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def test_a_dng_demosaics_into_the_photo_it_was_made_from(tmp_path: Path, elsewhere) -> None:
    photo = bayer_dng(tmp_path / "photo.dng")
    data = (tmp_path / "photo.dng").read_bytes()
    assert codecs.sniff(data) == "tiff"                                  # the bytes alone say TIFF …
    fmt, pixels, info = elsewhere(data, name="photo.dng")               # … the name says RAW
    assert fmt == "raw" and pixels.shape == photo.shape
    assert (info.format, info.width, info.height) == ("raw", photo.shape[1], photo.shape[0])
    for channel in range(3):
        assert correlation(pixels[..., channel], photo[..., channel]) > 0.9


def test_the_cameras_orientation_is_applied(tmp_path: Path, elsewhere) -> None:
    photo = bayer_dng(tmp_path / "turned.dng", orientation=6)            # held on its side
    _, pixels, _ = elsewhere((tmp_path / "turned.dng").read_bytes(), name="turned.dng")
    assert pixels.shape == (photo.shape[1], photo.shape[0], 3)
    assert correlation(pixels[..., 1], np.rot90(photo[..., 1], -1)) > 0.9


def test_a_leading_shrink_demosaics_at_half_size(tmp_path: Path, elsewhere) -> None:
    bayer_dng(tmp_path / "photo.dng")
    data = (tmp_path / "photo.dng").read_bytes()
    assert elsewhere(data, name="photo.dng", min_size=(600, 400))[1].shape == (600, 900, 3)
    assert elsewhere(data, name="photo.dng", min_size=(1000, 700))[1].shape == (1200, 1800, 3)
    spec = gpupipe.Spec.single([gpupipe.ops.Thumbnail(300)], format="png")
    result = gpupipe.run(tmp_path / "photo.dng", tmp_path / "out", spec, backend="cpu", stall_timeout=60)
    assert result.exit_code == 0 and Image.open(tmp_path / "out" / "photo.png").size == (300, 200)
    assert result.outcomes[0].format == "raw"


def test_raw_files_are_found_and_bad_ones_fail_alone(tmp_path: Path) -> None:
    src = tmp_path / "card"
    src.mkdir()
    bayer_dng(src / "IMG_0001.DNG")
    bayer_dng(src / "DSC_0002.NEF")                        # a DNG under a Nikon name: LibRaw reads its content
    good = (src / "IMG_0001.DNG").read_bytes()
    (src / "IMG_0003.CR2").write_bytes(good[:4096])        # cut short
    (src / "IMG_0004.ARW").write_bytes(b"II*\x00" + os.urandom(4000))      # a TIFF header, then noise
    (src / "IMG_0005.nef").write_bytes((EXAMPLES / "Landscape_1.jpg").read_bytes())   # a JPEG by another name
    result = gpupipe.run(src, tmp_path / "out", [gpupipe.ops.Thumbnail(64)], backend="cpu", stall_timeout=60)
    by_name = {Path(o.path).name: o for o in result.outcomes}
    assert result.summary.discovered == 5                   # every one found by its extension
    assert by_name["IMG_0001.DNG"].status == by_name["DSC_0002.NEF"].status == "ok"
    assert by_name["IMG_0005.nef"].status == "ok" and by_name["IMG_0005.nef"].format == "jpeg"
    for name in ("IMG_0003.CR2", "IMG_0004.ARW"):
        outcome = by_name[name]
        assert outcome.status == "failed" and outcome.error_class in ("truncated", "corrupt", "unsupported"), \
            (name, outcome.error_class, outcome.message)


def test_without_the_extra_raw_files_are_unsupported_with_the_pip_command(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    bayer_dng(src / "photo.dng")
    run = ("import gpupipe, json\n"
           f"r = gpupipe.run({str(src)!r}, {str(tmp_path / 'out')!r}, [gpupipe.ops.Thumbnail(64)], backend='cpu')\n"
           "print(json.dumps([[o.status, o.error_class, o.message] for o in r.outcomes]))")
    done = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True,
                          env=env_without(("rawpy",), tmp_path / "block"))
    assert done.returncode == 0, done.stderr
    (outcome,) = json.loads(done.stdout)
    assert outcome[:2] == ["failed", "unsupported"] and "pip install 'gpupipe[raw]'" in outcome[2]


def test_a_raw_photo_exported_to_16_bit_tiff_keeps_16_bits(tmp_path: Path) -> None:
    """A studio's export: every output holds 16 bits (TIFF, PNG), so the photo is demosaiced to 16
    bits and written so; a JPEG export demosaics at 8 (rounding once is all JPEG can keep)."""
    import tifffile

    (tmp_path / "in").mkdir()
    bayer_dng(tmp_path / "in" / "IMG_0001.dng")
    deep = gpupipe.run(tmp_path / "in", tmp_path / "tiff", gpupipe.Spec.single([], format="tiff"),
                       backend="cpu", stall_timeout=60)
    assert deep.exit_code == 0
    pixels = tifffile.imread(tmp_path / "tiff" / "IMG_0001.tif")
    assert pixels.dtype == np.uint16 and len(np.unique(pixels)) > 256
    flat = gpupipe.run(tmp_path / "in", tmp_path / "jpeg", gpupipe.Spec.single([], format="jpeg"),
                       backend="cpu", stall_timeout=60)
    assert flat.exit_code == 0
    with Image.open(tmp_path / "jpeg" / "IMG_0001.jpg") as im:
        jpeg = np.asarray(im.convert("RGB"))
    assert correlation(jpeg[..., 1], (pixels[..., 1] >> 8)) > 0.99
