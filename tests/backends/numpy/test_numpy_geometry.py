"""NumPy backend geometry: crop, center_crop, rotate, flip, pad."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpupipe.backends.numpy.geometry import center_crop, crop, flip, pad, rotate
from gpupipe.errors import ProcessingError

CHANNELS = [1, 2, 3, 4]


def numbered(height: int, width: int, channels: int) -> np.ndarray:
    """Every pixel distinct (mod 256 per channel), so moves are easy to check."""
    return (np.arange(height * width * channels) % 251).astype(np.uint8).reshape(height, width, channels)


def check_new(out: np.ndarray, img: np.ndarray) -> None:
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    assert not np.shares_memory(out, img)


# --- crop ---------------------------------------------------------------------


@pytest.mark.parametrize("channels", CHANNELS)
def test_crop_exact_pixels(channels):
    img = numbered(7, 9, channels)
    out = crop(img, 2, 3, 4, 2)
    np.testing.assert_array_equal(out, img[3:5, 2:6])
    check_new(out, img)
    np.testing.assert_array_equal(crop(img, 0, 0, 9, 7), img)  # the whole image


@pytest.mark.parametrize(
    "rect",
    [
        (-1, 0, 2, 2), (0, -1, 2, 2), (8, 0, 2, 2), (0, 6, 2, 2), (0, 0, 10, 7),
        (0, 0, 9, 8), (0, 0, 0, 3), (0, 0, 3, 0), (9, 7, 1, 1),
    ],
)
def test_crop_outside_raises(rect):
    with pytest.raises(ProcessingError, match="outside|at least"):
        crop(numbered(7, 9, 3), *rect)


def test_crop_rejects_non_integers():
    with pytest.raises(ProcessingError):
        crop(numbered(7, 9, 3), 1.5, 0, 2, 2)


def test_center_crop_offsets():
    img = numbered(8, 11, 3)
    np.testing.assert_array_equal(center_crop(img, 4, 3), img[2:5, 3:7])  # ((11-4)//2, (8-3)//2)
    np.testing.assert_array_equal(center_crop(img, 11, 8), img)
    with pytest.raises(ProcessingError, match="does not fit"):
        center_crop(img, 12, 3)
    with pytest.raises(ProcessingError, match="does not fit"):
        center_crop(img, 3, 9)


# --- rotate / flip ------------------------------------------------------------


@pytest.mark.parametrize("channels", CHANNELS)
def test_rotate_90_clockwise(channels):
    img = numbered(3, 5, channels)
    out = rotate(img, 90)
    assert out.shape == (5, 3, channels)  # width and height swap
    np.testing.assert_array_equal(out[0, -1], img[0, 0])  # top-left -> top-right
    np.testing.assert_array_equal(out[-1, -1], img[0, -1])  # top-right -> bottom-right
    np.testing.assert_array_equal(out[0, 0], img[-1, 0])  # bottom-left -> top-left
    check_new(out, img)


def test_rotate_180_and_270():
    img = numbered(3, 5, 3)
    np.testing.assert_array_equal(rotate(img, 180), img[::-1, ::-1])
    r270 = rotate(img, 270)
    assert r270.shape == (5, 3, 3)
    np.testing.assert_array_equal(r270[-1, 0], img[0, 0])  # top-left -> bottom-left
    np.testing.assert_array_equal(r270, rotate(rotate(rotate(img, 90), 90), 90))
    np.testing.assert_array_equal(rotate(img, 180), rotate(rotate(img, 90), 90))


@settings(max_examples=30, deadline=None)
@given(height=st.integers(1, 9), width=st.integers(1, 9), channels=st.sampled_from(CHANNELS))
def test_rotate_four_times_is_identity(height, width, channels):
    img = numbered(height, width, channels)
    out = img
    for _ in range(4):
        out = rotate(out, 90)
    np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("degrees", [0, 45, -90, 360, 90.5, "90", True])
def test_rotate_other_angles_raise(degrees):
    with pytest.raises(ProcessingError, match="90, 180 or 270"):
        rotate(numbered(2, 3, 1), degrees)


@pytest.mark.parametrize("channels", CHANNELS)
def test_flips(channels):
    img = numbered(3, 4, channels)
    h = flip(img, "horizontal")
    np.testing.assert_array_equal(h[:, 0], img[:, -1])
    np.testing.assert_array_equal(h, img[:, ::-1])
    v = flip(img, "vertical")
    np.testing.assert_array_equal(v[0], img[-1])
    np.testing.assert_array_equal(v, img[::-1])
    np.testing.assert_array_equal(flip(h, "horizontal"), img)
    check_new(h, img)
    check_new(v, img)
    with pytest.raises(ProcessingError, match="horizontal or vertical"):
        flip(img, "diagonal")


# --- pad ----------------------------------------------------------------------


# Background (200, 100, 50, 7): luma 0.299*200 + 0.587*100 + 0.114*50 = 124.2 -> 124.
@pytest.mark.parametrize("channels,fill", [(1, [124]), (2, [124, 7]), (3, [200, 100, 50]), (4, [200, 100, 50, 7])])
def test_pad_places_and_fills(channels, fill):
    img = numbered(2, 3, channels)
    out = pad(img, 7, 5, 1, 2, (200, 100, 50, 7))
    assert out.shape == (5, 7, channels)
    np.testing.assert_array_equal(out[2:4, 1:4], img)
    outside = np.ones((5, 7), bool)
    outside[2:4, 1:4] = False
    assert (out[outside] == np.array(fill, np.uint8)).all()
    check_new(out, img)


def test_pad_luma_extremes():
    # 0.299*R + 0.587*G + 0.114*B for (1, 0, 1) is 0.413 -> 0; for white it is 255.
    assert pad(numbered(1, 1, 1), 2, 1, 0, 0, (255, 255, 255, 0))[0, 1, 0] == 255
    assert pad(numbered(1, 1, 1), 2, 1, 0, 0, (1, 0, 1, 0))[0, 1, 0] == 0


def test_pad_exact_fit_and_corners():
    img = numbered(2, 3, 4)
    np.testing.assert_array_equal(pad(img, 3, 2, 0, 0, (0, 0, 0, 0)), img)
    out = pad(img, 5, 4, 2, 2, (9, 8, 7, 6))  # bottom-right corner
    np.testing.assert_array_equal(out[2:, 2:], img)
    assert (out[0, 0] == [9, 8, 7, 6]).all()


@pytest.mark.parametrize("args", [(4, 4, 2, 0), (4, 4, 0, 3), (4, 4, -1, 0), (2, 2, 0, 0)])
def test_pad_not_fitting_raises(args):
    with pytest.raises(ProcessingError, match="does not fit"):
        pad(numbered(2, 3, 3), *args, (0, 0, 0, 255))


@pytest.mark.parametrize("background", [(0, 0, 0), (0, 0, 0, 256), (0, 0, -1, 0), (0.5, 0, 0, 0), None])
def test_pad_bad_background_raises(background):
    with pytest.raises(ProcessingError, match="background"):
        pad(numbered(2, 3, 3), 4, 4, 0, 0, background)


def test_inputs_are_not_modified():
    img = numbered(4, 5, 4)
    before = img.copy()
    crop(img, 1, 1, 2, 2)
    center_crop(img, 3, 3)
    rotate(img, 90)
    flip(img, "vertical")
    pad(img, 9, 9, 1, 1, (1, 2, 3, 4))
    np.testing.assert_array_equal(img, before)
