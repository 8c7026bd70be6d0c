"""HEIC/HEIF (pillow-heif), AVIF (Pillow) and DICOM (pydicom) inputs, on real files: iPhone-style
HEICs written from real photos, pydicom's own DICOM test files; damaged ones fail alone, with a
class; without the extra a file is reported unsupported with the pip command, never skipped."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

import gpupipe
from gpupipe import codecs
from gpupipe.errors import CorruptImage, TruncatedImage, UnsupportedFormat

from tests.support import REPO_ROOT
from tests.support.blocked import env_without
from tests.support.cli import EXAMPLES

pillow_heif = pytest.importorskip("pillow_heif", reason="the [heif] extra (pillow-heif) is not installed")
pydicom = pytest.importorskip("pydicom", reason="the [medical] extra (pydicom) is not installed")
from pydicom.data import get_testdata_file  # noqa: E402


def heic_of(path: Path) -> bytes:
    """A real photo as an iPhone-style HEIC, its EXIF orientation carried over."""
    pillow_heif.register_heif_opener()
    with Image.open(path) as im:
        buffer = io.BytesIO()
        im.save(buffer, "HEIF", quality=92, exif=im.info.get("exif", b""))
    return buffer.getvalue()


def dicom_file(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ------------------------------------------------------------------------ HEIC

def test_a_heic_photo_decodes_upright_like_its_jpeg() -> None:
    """Portrait_6.jpg is stored sideways with EXIF orientation 6: the HEIC made from it decodes
    upright, once (pillow-heif applies the rotation and clears the tag), close to the JPEG's pixels."""
    data = heic_of(EXAMPLES / "Portrait_6.jpg")
    assert codecs.sniff(data) == "heif"
    heic = codecs.decode(data).pixels
    jpeg = codecs.decode((EXAMPLES / "Portrait_6.jpg").read_bytes()).pixels
    assert heic.shape == jpeg.shape == (1800, 1200, 3)
    assert mean_difference(heic, jpeg) < 3                       # lossy both, same picture, same way up
    info = codecs.probe(data)
    assert (info.format, info.width * info.height) == ("heif", 1800 * 1200)


def test_heic_files_are_found_processed_and_broken_ones_fail_alone(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "IMG_0001.HEIC").write_bytes(heic_of(EXAMPLES / "Landscape_1.jpg"))
    good = heic_of(EXAMPLES / "Portrait_6.jpg")
    (src / "IMG_0002.heic").write_bytes(good)
    broken = bytearray(good)
    broken[40:4000] = bytes(3960)                                # its boxes zeroed: the structure is gone
    (src / "IMG_0003.heic").write_bytes(bytes(broken))
    (src / "IMG_0004.heic").write_bytes(good[: len(good) // 3])  # cut short
    result = gpupipe.run(src, tmp_path / "out", gpupipe.Spec.single([gpupipe.ops.Thumbnail(300)], format="jpeg"),
                         backend="cpu")
    by_name = {Path(o.path).name: o for o in result.outcomes}
    assert result.summary.discovered == 4
    assert by_name["IMG_0001.HEIC"].status == by_name["IMG_0002.heic"].status == "ok"
    assert Image.open(tmp_path / "out" / "IMG_0002.jpg").size == (200, 300)       # portrait: upright
    for name in ("IMG_0003.heic", "IMG_0004.heic"):
        assert by_name[name].status == "failed" and by_name[name].error_class in ("corrupt", "truncated"), \
            (name, by_name[name].error_class, by_name[name].message)


# ------------------------------------------------------------------------ AVIF

@pytest.mark.skipif(not features.check("avif"), reason="this Pillow was built without AVIF")
def test_avif_is_read_as_well_as_written() -> None:
    with Image.open(EXAMPLES / "Landscape_1.jpg") as im:
        buffer = io.BytesIO()
        im.save(buffer, "AVIF", quality=90)
    decoded = codecs.decode(buffer.getvalue())
    assert decoded.format == "avif"
    reference = codecs.decode((EXAMPLES / "Landscape_1.jpg").read_bytes()).pixels
    assert decoded.pixels.shape == reference.shape and mean_difference(decoded.pixels, reference) < 3


# ------------------------------------------------------------------------ DICOM

def test_a_ct_without_a_window_is_stretched_over_its_own_range() -> None:
    """CT_small.dcm (pydicom's test file): 16-bit, rescale intercept -1024, no window: its
    Hounsfield values are mapped from their minimum to their maximum, black to white."""
    data = dicom_file("CT_small.dcm")
    decoded = codecs.decode(data)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.floor((hu - hu.min()) / (hu.max() - hu.min()) * 255 + 0.5).astype(np.uint8)
    assert decoded.format == "dicom" and decoded.pixels.shape == (128, 128, 1)
    assert np.array_equal(decoded.pixels[..., 0], expected)


def test_an_mr_takes_the_window_the_file_names() -> None:
    """MR_small.dcm names Window Center 600 and Width 1600: the result agrees with pydicom's own
    windowing (to 16 bits) brought to 8 bits, within one level."""
    from pydicom.pixels import apply_voi_lut

    decoded = codecs.decode(dicom_file("MR_small.dcm")).pixels[..., 0]
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    windowed = apply_voi_lut(ds.pixel_array, ds).astype(np.float64)
    bits = int(ds.BitsStored)                       # pydicom's output range: the stored type's
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.PixelRepresentation else (0, 2 ** bits - 1)
    assert np.abs(decoded.astype(np.int32) - np.round((windowed - low) / (high - low) * 255)).max() <= 1
    assert decoded.min() > 0                          # the window, not the range: nothing at black


def test_multi_frame_colour_and_palette_files() -> None:
    two = dicom_file("SC_rgb_rle_2frame.dcm")
    assert codecs.decode(two).pixels.shape == (100, 100, 3)
    assert "2 frames: only the first is used" in codecs.probe(two).problems
    rgb = codecs.decode(dicom_file("examples_rgb_color.dcm")).pixels
    assert rgb.shape == (240, 320, 3) and rgb.std() > 10
    palette = pydicom.dcmread(get_testdata_file("examples_palette.dcm"))
    assert codecs.decode(dicom_file("examples_palette.dcm")).pixels.shape == (palette.Rows, palette.Columns, 3)


def test_dicom_that_cannot_be_read_fails_with_a_class() -> None:
    with pytest.raises(TruncatedImage, match="truncated or damaged DICOM pixel data"):
        codecs.decode(dicom_file("MR_truncated.dcm"))
    data = dicom_file("CT_small.dcm")
    with pytest.raises((TruncatedImage, CorruptImage)):
        codecs.decode(data[: len(data) // 2])
    if not _has_jpeg_ls():
        with pytest.raises(UnsupportedFormat, match="unsupported DICOM encoding JPEG-LS"):
            codecs.decode(dicom_file("JPEGLSNearLossless_16.dcm"))


def _has_jpeg_ls() -> bool:
    from pydicom.pixels.decoders import JPEGLSNearLosslessDecoder
    return JPEGLSNearLosslessDecoder.is_available


def test_a_folder_of_dicom_files_through_the_command_line(tmp_path: Path) -> None:
    src = tmp_path / "scans"
    src.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "MR_truncated.dcm"):
        shutil.copy(get_testdata_file(name), src / name)
    done = subprocess.run([sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(tmp_path / "out"),
                           "-f", "png", "--backend", "cpu", "--report", str(tmp_path / "r.json")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 1, done.stderr                    # one of them is truncated
    files = {Path(f["path"]).name: f for f in json.loads((tmp_path / "r.json").read_text())["files"]}
    assert files["CT_small.dcm"]["status"] == files["MR_small.dcm"]["status"] == "ok"
    assert files["MR_truncated.dcm"]["error_class"] == "truncated"
    assert Image.open(tmp_path / "out" / "CT_small.png").mode == "L"


# ------------------------------------------------------------------------ without the extras

def test_without_the_extra_such_files_are_unsupported_with_the_pip_command(tmp_path: Path) -> None:
    """In a process where pillow-heif and pydicom cannot be imported, the scan still finds those
    files and each fails as unsupported, saying which extra to install."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "photo.heic").write_bytes(heic_of(EXAMPLES / "Landscape_1.jpg"))
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "scan.dcm")
    run = ("import gpupipe, json, sys\n"
           f"r = gpupipe.run({str(src)!r}, {str(tmp_path / 'out')!r}, [gpupipe.ops.Thumbnail(64)], backend='cpu')\n"
           "print(json.dumps({o.path.rsplit('/', 1)[1]: [o.status, o.error_class, o.message] for o in r.outcomes}))")
    done = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True,
                          env=env_without(("pillow_heif", "pydicom"), tmp_path / "block"))
    assert done.returncode == 0, done.stderr
    outcomes = json.loads(done.stdout)
    assert outcomes["photo.heic"][:2] == ["failed", "unsupported"] and "gpupipe[heif]" in outcomes["photo.heic"][2]
    assert outcomes["scan.dcm"][:2] == ["failed", "unsupported"] and "gpupipe[medical]" in outcomes["scan.dcm"][2]
