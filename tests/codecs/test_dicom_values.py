"""DICOM's measured values through window, normalize and equalize: a spec whose chains start by
reading values decodes a grey DICOM to its values (16 bits, with the rescale line), and a window
is read in the file's own units (Hounsfield units for a CT), on pydicom's real test files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import gpupipe
from gpupipe import codecs, ops
from gpupipe.spec import Spec

from tests.support.cli import gp

pydicom = pytest.importorskip("pydicom", reason="the [medical] extra (pydicom) is not installed")
from pydicom.data import get_testdata_file  # noqa: E402


def dataset(name: str):
    return pydicom.dcmread(get_testdata_file(name))


def measured(name: str) -> np.ndarray:
    """The file's values as DICOM defines them: stored values through the rescale line."""
    ds = dataset(name)
    return ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))


def window_of(values: np.ndarray, center: float, width: float, top: int) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1's linear window, as the standard writes it, rounded."""
    y = ((values - (center - 0.5)) / (width - 1) + 0.5) * top
    y = np.where(values <= center - 0.5 - (width - 1) / 2, 0, y)
    return np.rint(np.where(values > center - 0.5 + (width - 1) / 2, top, y))


def run_on(tmp_path: Path, names: list[str], *flags: str) -> Path:
    src = tmp_path / "scans"
    src.mkdir(exist_ok=True)
    for name in names:
        (src / name).write_bytes(Path(get_testdata_file(name)).read_bytes())
    out = tmp_path / "out"
    done = gp("run", src, "-o", out, "-f", "png", "--quiet", *flags)
    assert done.exit_code == 0, done.output
    return out


def test_values_decode_keeps_every_stored_value_and_says_how_to_read_them():
    decoded = codecs.decode(Path(get_testdata_file("CT_small.dcm")).read_bytes(), values=True)
    assert decoded.pixels.dtype == np.uint16 and decoded.rescale is not None
    slope, intercept = decoded.rescale
    assert np.array_equal(decoded.pixels[..., 0] * slope + intercept, measured("CT_small.dcm"))
    assert codecs.decode(Path(get_testdata_file("CT_small.dcm")).read_bytes()).rescale is None


@pytest.mark.parametrize("center,width", [(40, 400), (-600, 1500), (300, 1)])    # soft tissue, lung, a threshold
def test_a_ct_window_is_in_hounsfield_units(tmp_path, center, width):
    out = run_on(tmp_path, ["CT_small.dcm"], "--window", f"{center},{width}", "--window-bits", "8")
    got = cv2.imread(str(out / "CT_small.png"), cv2.IMREAD_UNCHANGED)
    want = window_of(measured("CT_small.dcm"), center, width, 255)
    assert got.dtype == np.uint8
    diff = np.abs(got.astype(int) - want)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_a_window_after_a_resize_still_reads_hounsfield_units_and_16_bits_stay(tmp_path):
    out = run_on(tmp_path, ["CT_small.dcm"], "--resize", "64x64", "--window", "40,400")
    got = cv2.imread(str(out / "CT_small.png"), cv2.IMREAD_UNCHANGED)
    assert got.dtype == np.uint16 and got.shape == (64, 64)
    values = measured("CT_small.dcm")[::2, ::2]                   # near enough for a check of the units
    want = window_of(values, 40, 400, 65535)
    assert np.abs(got.astype(float) - want).mean() < 0.05 * 65535


def test_normalize_and_equalize_read_the_values_not_the_files_window(tmp_path):
    """MR_small names a window (600/1600): the display decode uses it; normalize stretches the
    measured values' own 1st-99th percentiles instead."""
    out = run_on(tmp_path, ["MR_small.dcm"], "--normalize")
    got = cv2.imread(str(out / "MR_small.png"), cv2.IMREAD_UNCHANGED)
    values = measured("MR_small.dcm")
    low, high = np.percentile(values, (1, 99))
    want = np.clip(np.rint((values - low) / (high - low) * 65535), 0, 65535)
    assert got.dtype == np.uint16 and np.abs(got.astype(float) - want).max() <= 1


def test_monochrome1_shows_its_low_values_white(tmp_path):
    """A MONOCHROME1 file (X-rays often are): the window's high end shows black, as a viewer shows it."""
    ds = dataset("MR_small.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    src = tmp_path / "scans"
    src.mkdir()
    ds.save_as(src / "inverted.dcm")
    (src / "plain.dcm").write_bytes(Path(get_testdata_file("MR_small.dcm")).read_bytes())
    done = gp("run", src, "-o", tmp_path / "out", "-f", "png", "--quiet", "--window", "600,1600", "--window-bits", "8")
    assert done.exit_code == 0, done.output
    plain = cv2.imread(str(tmp_path / "out" / "plain.png"), cv2.IMREAD_UNCHANGED).astype(int)
    inverted = cv2.imread(str(tmp_path / "out" / "inverted.png"), cv2.IMREAD_UNCHANGED).astype(int)
    assert np.abs(inverted - (255 - plain)).max() <= 1


def test_a_spec_with_a_chain_that_does_not_read_values_decodes_for_display():
    spec = Spec.from_dict({"variant": [{"name": "w", "ops": [{"op": "window", "center": 40, "width": 400}]},
                                       {"name": "t", "ops": [{"op": "thumbnail", "size": 64}]}]})
    assert not spec.reads_measured_values
    assert Spec.single([ops.Crop(0, 0, 10, 10), ops.Equalize()]).reads_measured_values
    assert not Spec.single([ops.Brightness(10), ops.Window(40, 400)]).reads_measured_values


def test_the_api_and_a_batch_mixing_dicom_and_photos(tmp_path):
    """A batch holding a CT (values, its own rescale) and a 16-bit photo PNG: each gets its window
    in its own units, processed apart (engine.process groups by depth and rescale)."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "ct.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    ramp = (np.arange(128 * 128, dtype=np.uint32).reshape(128, 128) * 3).astype(np.uint16)
    cv2.imwrite(str(src / "ramp.png"), ramp)
    spec = Spec.single([ops.Window(40, 400, bits=8)], format="png")
    result = gpupipe.run(src, tmp_path / "out", spec)
    assert result.exit_code == 0
    ct = cv2.imread(str(tmp_path / "out" / "ct.png"), cv2.IMREAD_UNCHANGED).astype(int)
    assert np.abs(ct - window_of(measured("CT_small.dcm"), 40, 400, 255)).max() <= 1
    png = cv2.imread(str(tmp_path / "out" / "ramp.png"), cv2.IMREAD_UNCHANGED).astype(int)
    assert np.abs(png - window_of(ramp.astype(float), 40, 400, 255)).max() <= 1
