"""NumPy backend colour ops: grayscale, brightness, contrast."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from gpupipe.backends.numpy.color import brightness, contrast, grayscale
from gpupipe.errors import ProcessingError

CHANNELS = [1, 2, 3, 4]


def random_image(seed: int, channels: int, height: int = 16, width: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def all_values(channels: int) -> np.ndarray:
    """Every uint8 value in every channel (alpha reversed so it differs from colour)."""
    v = np.arange(256, dtype=np.uint8)
    img = np.stack([v] * channels, axis=-1)[None]
    if channels in (2, 4):
        img[..., -1] = v[::-1]
    return img


# --- grayscale ----------------------------------------------------------------


def test_grayscale_shapes_and_alpha():
    rgb, rgba = random_image(1, 3), random_image(2, 4)
    assert grayscale(rgb).shape == (16, 16, 1)
    out = grayscale(rgba)
    assert out.shape == (16, 16, 2)
    np.testing.assert_array_equal(out[..., 1], rgba[..., 3])
    np.testing.assert_array_equal(out[..., 0], grayscale(rgba[..., :3])[..., 0])
    for channels in (1, 2):
        img = random_image(3, channels)
        out = grayscale(img)
        np.testing.assert_array_equal(out, img)
        assert not np.shares_memory(out, img)


def test_grayscale_expanded_back_is_grey_and_matches_pillow():
    img = random_image(4, 3, 64, 64)
    grey = grayscale(img)
    expanded = np.repeat(grey, 3, axis=2)
    assert (expanded[..., 0] == expanded[..., 1]).all() and (expanded[..., 1] == expanded[..., 2]).all()
    pil = np.asarray(Image.fromarray(img).convert("L"))
    assert np.abs(grey[..., 0].astype(int) - pil).max() <= 1


def test_grayscale_exact_values():
    img = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [10, 20, 30], [0, 0, 0]]], np.uint8)
    # 76.245 -> 76, 149.685 -> 150, 29.07 -> 29, 255, 18.15 -> 18, 0
    assert grayscale(img)[0, :, 0].tolist() == [76, 150, 29, 255, 18, 0]


# --- brightness / contrast ------------------------------------------------------


@pytest.mark.parametrize("channels", CHANNELS)
def test_brightness_clamps_and_keeps_alpha(channels):
    img = all_values(channels)
    colour = slice(0, channels - 1) if channels in (2, 4) else slice(0, channels)
    for value, expected in [(40, np.clip(np.arange(256) + 40, 0, 255)), (-100, np.clip(np.arange(256) - 100, 0, 255))]:
        out = brightness(img, value)
        assert (out[0, :, colour] == expected[:, None]).all()
        if channels in (2, 4):
            np.testing.assert_array_equal(out[..., -1], img[..., -1])
    assert (brightness(img, 255)[..., colour] == 255).all()
    assert (brightness(img, -255)[..., colour] == 0).all()
    np.testing.assert_array_equal(brightness(img, 0), img)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (2, 2), (5, 1), (3, 300)])
def test_a_whole_brightness_gives_its_tables_bytes(dtype, shape):
    """A whole offset is one saturating add, not a lookup per value: the same bytes as the table,
    for every whole value, channel count and depth, down to images of a few values."""
    from gpupipe.backends.numpy.color import _apply_to_colour, brightness_table
    top = np.iinfo(dtype).max
    for channels in CHANNELS:
        img = np.random.default_rng(channels).integers(0, top + 1, (*shape, channels), dtype=dtype)
        img.reshape(-1)[:2] = (0, top)[: img.size]
        for value in (*range(-255, 256, 7), -255, -1, 1, 255, 12.0):
            got = brightness(img, value)
            want = _apply_to_colour(img, brightness_table(value, dtype))
            assert got.dtype == dtype and got.flags.c_contiguous
            np.testing.assert_array_equal(got, want, err_msg=f"{channels} channels, {value}")


def test_brightness_hand_computed_and_half_even():
    img = np.array([[[10, 250, 0, 128]]], np.uint8)
    assert brightness(img, 10).tolist() == [[[20, 255, 10, 128]]]
    # 10 + 0.5 = 10.5 -> 10 and 11 + 0.5 = 11.5 -> 12 (round half to even)
    assert brightness(np.array([[[10, 11, 0]]], np.uint8), 0.5).tolist() == [[[10, 12, 0]]]


@pytest.mark.parametrize("channels", CHANNELS)
def test_contrast_clamps_and_keeps_alpha(channels):
    img = all_values(channels)
    colour = slice(0, channels - 1) if channels in (2, 4) else slice(0, channels)
    x = np.arange(256, dtype=np.float32)
    for factor in (0.0, 0.5, 1.0, 1.25, 2.0, 3.7):
        out = contrast(img, factor)
        expected = np.clip(np.rint((x - 128) * np.float32(factor) + 128), 0, 255)
        assert (out[0, :, colour] == expected[:, None]).all(), factor
        if channels in (2, 4):
            np.testing.assert_array_equal(out[..., -1], img[..., -1])


def test_contrast_hand_computed():
    img = np.array([[[0, 100, 128, 200, 255, 77]]], np.uint8).reshape(1, 2, 3)
    # (x-128)*2+128: -128->0, 72, 128, 272->255, 510->255, 26
    assert contrast(img, 2).reshape(-1).tolist() == [0, 72, 128, 255, 255, 26]
    # (x-128)*0.5+128: 64, 114, 128, 164, 191.5->192, 102.5->102 (half to even)
    assert contrast(img, 0.5).reshape(-1).tolist() == [64, 114, 128, 164, 192, 102]
    assert (contrast(img, 0) == 128).all()


@pytest.mark.parametrize("call", [
    lambda img: brightness(img, 256),
    lambda img: brightness(img, -255.5),
    lambda img: brightness(img, float("nan")),
    lambda img: brightness(img, "10"),
    lambda img: contrast(img, -0.1),
    lambda img: contrast(img, float("inf")),
    lambda img: grayscale(img.astype(np.float32)),
    lambda img: grayscale(img[..., 0]),
])
def test_bad_parameters_raise(call):
    with pytest.raises(ProcessingError):
        call(random_image(5, 3, 2, 2))


def test_inputs_are_not_modified():
    img = random_image(6, 4)
    before = img.copy()
    for out in (grayscale(img), brightness(img, 30), contrast(img, 1.5)):
        assert not np.shares_memory(out, img)
    np.testing.assert_array_equal(img, before)


