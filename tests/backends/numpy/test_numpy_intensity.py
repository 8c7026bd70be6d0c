"""Intensity ops (window, normalize, equalize) against scikit-image's exposure module and DICOM's
window formula, at both depths, on a real photo and an X-ray-like 12-bit image."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import exposure

from gpupipe import codecs, ops, pixels
from gpupipe.backends.numpy import apply_op, intensity

from tests.support.cli import EXAMPLES


def photo(dtype=np.uint8) -> np.ndarray:
    img = codecs.decode((EXAMPLES / "Landscape_1.jpg").read_bytes()).pixels[::4, ::4]
    if dtype == np.uint8:
        return np.ascontiguousarray(img)
    ramp = np.linspace(0, 250, img.shape[1]).astype(np.uint32)[None, :, None]
    return (img.astype(np.uint32) * 257 + ramp).clip(0, 65535).astype(np.uint16)


def xray() -> np.ndarray:
    """12-bit values 1000-3000 in 16 bits, as detectors store them."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:300, 0:240]
    values = 1000 + 2000 * (0.5 + 0.5 * np.sin(x / 30.0) * np.cos(y / 45.0)) + rng.normal(0, 30, (300, 240))
    return values.clip(1000, 3000).astype(np.uint16)[:, :, None]


def within_one(got: np.ndarray, want: np.ndarray, share: float = 0.99) -> None:
    diff = np.abs(got.astype(np.int64) - np.asarray(want, np.float64).round().astype(np.int64))
    assert diff.max() <= 1 and (diff == 0).mean() >= share, (diff.max(), (diff == 0).mean())


# --- window ---------------------------------------------------------------------------------------

def dicom_window(x: np.ndarray, center: float, width: float, top: int) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out as the standard does."""
    x = x.astype(np.float64)
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * top
    y = np.where(x <= center - 0.5 - (width - 1) / 2, 0, y)
    return np.where(x > center - 0.5 + (width - 1) / 2, top, y)


@pytest.mark.parametrize("bits", [None, 8, 16])
def test_window_is_dicoms_linear_window(bits):
    img = xray()
    out = apply_op(img, ops.Window(2000, 1200, bits=bits))
    top = 255 if bits == 8 else 65535
    assert out.dtype == (np.uint8 if bits == 8 else np.uint16)
    assert np.array_equal(out, np.rint(dicom_window(img, 2000, 1200, top)).astype(out.dtype))
    # and scikit-image's rescale of DICOM's range [c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2]
    reference = exposure.rescale_intensity(img.astype(np.float64), in_range=(1400, 2599), out_range=(0.0, top))
    within_one(out, reference, share=0.999)


def test_an_x_ray_windowed_to_8_bits_uses_every_level():
    """The issue's X-ray, 1000-3000 in 16 bits: its own window spreads it over all 256 levels."""
    out = apply_op(xray(), ops.Window(2000, 2001, bits=8))
    assert out.dtype == np.uint8 and len(np.unique(out)) == 256


def test_window_keeps_alpha_at_the_new_depth():
    rgba = np.dstack([photo(np.uint16), np.full(photo().shape[:2], 40000, np.uint16)])
    out = apply_op(rgba, ops.Window(30000, 20000, bits=8))
    assert out.dtype == np.uint8 and (out[..., 3] == pixels.to_8bit(np.uint16(40000))).all()
    eight = np.dstack([photo(), np.full(photo().shape[:2], 77, np.uint8)])
    assert (apply_op(eight, ops.Window(128, 100, bits=16))[..., 3] == 77 * 257).all()


# --- normalize ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_percentiles_from_the_histogram_are_numpys(dtype):
    img = photo(dtype)
    cumulative = np.cumsum(intensity.histogram(img))
    for q in (0, 0.5, 1, 2, 37.3, 50, 98, 99.9, 100):
        assert intensity.percentile(cumulative, q) == pytest.approx(np.percentile(img, q), abs=1e-9)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("low,high", [(1, 99), (2, 98), (0, 100), (10, 60)])
def test_normalize_is_scikit_images_percentile_stretch(dtype, low, high):
    img = photo(dtype)
    top = pixels.maximum(dtype)
    p_low, p_high = np.percentile(img, (low, high))
    reference = exposure.rescale_intensity(img.astype(np.float64), in_range=(p_low, p_high), out_range=(0.0, top))
    out = apply_op(img, ops.Normalize(low, high))
    assert out.dtype == img.dtype
    within_one(out, reference, share=0.999)


def test_normalize_stretches_an_x_ray_over_the_whole_range():
    out = apply_op(xray(), ops.Normalize(0.5, 99.5))
    assert out.min() == 0 and out.max() == 65535
    assert len(np.unique(out)) > 1500


def test_normalize_leaves_a_flat_image_as_it_is():
    flat = np.full((5, 7, 3), 99, np.uint8)
    assert np.array_equal(apply_op(flat, ops.Normalize()), flat)


# --- equalize -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_equalize_is_scikit_images_equalize_hist(dtype):
    img = photo(dtype)
    top = pixels.maximum(dtype)
    reference = exposure.equalize_hist(img, nbins=top + 1) * top
    out = apply_op(img, ops.Equalize())
    assert out.dtype == img.dtype
    within_one(out, reference, share=0.999)


def test_equalize_flattens_the_histogram():
    out = apply_op(xray(), ops.Equalize())
    hist = np.histogram(out, bins=16, range=(0, 65536))[0]
    assert hist.min() > 0.5 * hist.mean() and hist.max() < 1.5 * hist.mean()


@pytest.mark.parametrize("op", [ops.Window(100, 50), ops.Normalize(), ops.Equalize()], ids=str)
def test_alpha_is_left_alone_and_the_input_untouched(op):
    img = np.dstack([photo(), np.arange(photo().size // 3).reshape(photo().shape[:2]).astype(np.uint8)])
    before = img.copy()
    out = apply_op(img, op)
    assert np.array_equal(out[..., 3], img[..., 3]) and np.array_equal(img, before)


# --- CLAHE ----------------------------------------------------------------------------------------

def grey_photos() -> list[np.ndarray]:
    """Real photos, grey, 8-bit: the example landscape and portrait, cut to whole tiles of 8."""
    out = []
    for name in ("Landscape_1.jpg", "Portrait_6.jpg"):
        grey = codecs.decode((EXAMPLES / name).read_bytes()).pixels[::2, ::2, 1]
        out.append(np.ascontiguousarray(grey[:grey.shape[0] // 8 * 8, :grey.shape[1] // 8 * 8]))
    return out


@pytest.mark.parametrize("clip_limit,tiles", [(0.01, 8), (0.03, 4), (1.0, 8)])
def test_clahe_is_opencvs_within_a_level(clip_limit, tiles):
    """OpenCV's CLAHE (clipLimit counts in multiples of a uniform bin: 256 × ours), on sides that are
    whole tiles (OpenCV pads the others)."""
    import cv2
    for grey in grey_photos():
        ours = apply_op(grey[:, :, None], ops.Equalize(clahe=True, clip_limit=clip_limit, tiles=tiles))[..., 0]
        theirs = cv2.createCLAHE(clipLimit=clip_limit * 256, tileGridSize=(tiles, tiles)).apply(grey)
        diff = np.abs(ours.astype(int) - theirs.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.25, (diff.max(), diff.mean())


def test_clahe_is_close_to_scikit_images():
    """scikit-image's equalize_adapthist is the same algorithm with other details (its values
    rescaled to 14 bits in 252 bins, its result stretched to the full range): it differs from
    OpenCV's by as much as from ours. Stated tolerance: mean |Δ| ≤ 4.5 levels, correlation ≥ 0.995."""
    for grey in grey_photos():
        ours = apply_op(grey[:, :, None], ops.Equalize(clahe=True))[..., 0].astype(float)
        theirs = exposure.equalize_adapthist(grey, clip_limit=0.01) * 255
        assert np.abs(ours - theirs).mean() <= 4.5
        assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] >= 0.995


def test_clahe_at_16_bits_and_on_colour():
    deep = photo(np.uint16)
    out = apply_op(deep, ops.Equalize(clahe=True))
    assert out.dtype == np.uint16 and out.shape == deep.shape
    eight = apply_op(pixels.to_8bit(deep), ops.Equalize(clahe=True))
    # the same tiles, bins (a 16-bit value's high byte) and maps: within a level of the 8-bit result
    assert np.abs(pixels.to_8bit(out).astype(int) - eight.astype(int)).mean() < 1.0


def test_clahe_lifts_local_contrast_an_equalisation_of_the_whole_misses():
    """A ramp from black to white with faint noise on it: its histogram is flat already, so
    equalising the whole changes little; CLAHE stretches each tile's narrow range, and the noise
    (the local detail) with it, as far as the clip limit allows."""
    rng = np.random.default_rng(3)
    ramp = np.tile(np.linspace(10, 245, 256), (128, 1)) + rng.normal(0, 1.5, (128, 256))
    img = np.clip(np.rint(ramp), 0, 255).astype(np.uint8)[:, :, None]
    detail = lambda out: out[..., 0].astype(float).std(axis=0).mean()      # noqa: E731  (down each column)
    local = apply_op(img, ops.Equalize(clahe=True, clip_limit=0.05, tiles=8))
    whole = apply_op(img, ops.Equalize())
    assert detail(local) > 2 * detail(whole)
