"""NumPy-backend watermarks: placement, marks, blend formula (docs/design.md §4)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from gpupipe.backends.numpy import composite as C
from gpupipe.errors import ProcessingError

MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def rng_img(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def opaque_mark(h, w, seed=1):
    m = rng_img((h, w, 4), seed)
    m[..., 3] = 255
    return m


# --- placement -------------------------------------------------------------------

def test_placement_examples_from_spec():
    assert C.placements(100, 100, 20, 10, "bottom-right", 0) == [(80, 90)]
    assert C.placements(100, 100, 20, 10, "center", 0) == [(40, 45)]


@pytest.mark.parametrize("position, expected", [
    ("top-left", (16, 16)), ("top-right", (154, 16)), ("bottom-left", (16, 64)),
    ("bottom-right", (154, 64)), ("center", (85, 40)),
])
def test_every_position(position, expected):
    assert C.placements(200, 100, 30, 20, position, 16) == [expected]


def test_tile_grid():
    spots = C.placements(100, 50, 30, 20, "tile", 5)
    assert spots == [(x, y) for y in (5, 30) for x in (5, 40, 75)]


@pytest.mark.parametrize("W, H, w, h, m", [(100, 100, 20, 10, 0), (97, 61, 13, 7, 0), (50, 40, 60, 50, 0),
                                           (100, 70, 30, 20, 4)])
def test_tile_covers_image(W, H, w, h, m):
    spots = C.placements(W, H, w, h, "tile", m)
    cover = np.zeros((H, W), bool)
    for x, y in spots:
        cover[max(y, 0):y + h, max(x, 0):x + w] = True
    if m == 0:
        assert cover.all()
    # the grid runs on until the next step would start past the image
    xs, ys = sorted({x for x, _ in spots}), sorted({y for _, y in spots})
    assert xs[0] == ys[0] == m and xs[-1] < W <= xs[-1] + w + m and ys[-1] < H <= ys[-1] + h + m


def test_bad_placement_parameters():
    for bad in [dict(position="middle"), dict(margin=-1), dict(margin=1.5), dict(w=0)]:
        kw = dict(W=10, H=10, w=2, h=2, position="center", margin=0) | bad
        with pytest.raises(ProcessingError):
            C.placements(**kw)


def test_default_text_size():
    assert C.default_text_size(100, 100) == 12
    assert C.default_text_size(2000, 1000) == 40
    assert C.default_text_size(1600, 1063) == 43


# --- blending ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("position", C.POSITIONS)
def test_opacity_zero_is_unchanged(mode, position):
    img = rng_img((40, 50, MODES[mode]))
    out = C.watermark(img, opaque_mark(12, 9), position, 3, opacity=0)
    assert np.array_equal(out, img) and out is not img


@pytest.mark.parametrize("mode", MODES)
def test_opacity_one_opaque_mark_gives_mark_pixels(mode):
    img = rng_img((40, 50, MODES[mode]))
    mark = opaque_mark(12, 9)
    before = img.copy()
    out = C.watermark(img, mark, "bottom-right", 4, opacity=1)
    assert np.array_equal(img, before), "input was modified"
    region = out[40 - 12 - 4:40 - 4, 50 - 9 - 4:50 - 4]
    if mode in ("RGB", "RGBA"):
        assert np.array_equal(region[..., :3], mark[..., :3])
    else:
        luma = np.rint(mark[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114])
        assert np.abs(region[..., 0].astype(int) - luma).max() <= 0
    if mode in ("LA", "RGBA"):
        assert (region[..., -1] == 255).all()
    outside = np.ones((40, 50), bool)
    outside[40 - 12 - 4:40 - 4, 50 - 9 - 4:50 - 4] = False
    assert np.array_equal(out[outside], img[outside])


def test_blend_formula_hand_computed():
    mark = np.array([[[200, 50, 0, 128]]], np.uint8)
    # a = 128/255 * 0.5 = 0.25098; 100 + 100a = 125.1, 150 - 100a = 124.9, 200 - 200a = 149.8
    rgb = np.array([[[100, 150, 200]]], np.uint8)
    assert C.watermark(rgb, mark, "top-left", 0, 0.5).tolist() == [[[125, 125, 150]]]
    # base alpha 100 -> 100 + a * 155 = 138.9
    rgba = np.array([[[100, 150, 200, 100]]], np.uint8)
    assert C.watermark(rgba, mark, "top-left", 0, 0.5).tolist() == [[[125, 125, 150, 139]]]
    # luma(mark) = 0.299*200 + 0.587*50 = 89.15; 100 - 10.85a = 97.28; alpha 0 + 255a = 64
    la = np.array([[[100, 0]]], np.uint8)
    assert C.watermark(la, mark, "top-left", 0, 0.5).tolist() == [[[97, 64]]]
    assert C.watermark(la[..., :1].copy(), mark, "top-left", 0, 0.5).tolist() == [[[97]]]


def reference_watermark(img, mark, position, margin, opacity):
    """Per-placement float64 loop, straight from the contract."""
    out = img.astype(np.float64)
    H, W, n = img.shape
    h, w = mark.shape[:2]
    col = mark[..., :3].astype(np.float64)
    if n in (1, 2):
        col = col @ np.array([[0.299], [0.587], [0.114]])
    nc = n - (n in (2, 4))
    for x, y in C.placements(W, H, w, h, position, margin):
        for yy in range(max(y, 0), min(y + h, H)):
            for xx in range(max(x, 0), min(x + w, W)):
                a = mark[yy - y, xx - x, 3] / 255 * opacity
                out[yy, xx, :nc] = img[yy, xx, :nc] * (1 - a) + col[yy - y, xx - x] * a
                if nc < n:
                    out[yy, xx, -1] = img[yy, xx, -1] + a * (255 - img[yy, xx, -1].astype(float))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@settings(max_examples=40, deadline=None)
@given(H=st.integers(1, 30), W=st.integers(1, 30), h=st.integers(1, 40), w=st.integers(1, 40),
       mode=st.sampled_from(list(MODES)), position=st.sampled_from(C.POSITIONS),
       margin=st.integers(0, 8), opacity=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_matches_reference_loop(H, W, h, w, mode, position, margin, opacity, seed):
    img = rng_img((H, W, MODES[mode]), seed)
    mark = rng_img((h, w, 4), seed + 1)
    out = C.watermark(img, mark, position, margin, opacity)
    assert out.dtype == np.uint8 and out.shape == img.shape and out.flags.c_contiguous
    assert np.abs(out.astype(int) - reference_watermark(img, mark, position, margin, opacity)).max() <= 1


@pytest.mark.parametrize("position", C.POSITIONS)
def test_mark_larger_than_image_is_clipped(position):
    img = rng_img((30, 20, 3))
    mark = opaque_mark(50, 70)
    out = C.watermark(img, mark, position, 0, 1.0)
    x, y = C.placements(20, 30, 70, 50, position, 0)[0]
    assert np.array_equal(out, mark[-y:-y + 30, -x:-x + 20, :3])


def test_mark_entirely_outside_is_a_no_op():
    img = rng_img((10, 10, 3))
    assert np.array_equal(C.watermark(img, opaque_mark(4, 4), "top-left", 50, 1.0), img)


def test_non_contiguous_base():
    img = rng_img((40, 60, 4))[::2, ::-1]
    mark = opaque_mark(5, 5)
    out = C.watermark(img, mark, "tile", 2, 0.7)
    assert out.flags.c_contiguous
    assert np.array_equal(out, C.watermark(np.ascontiguousarray(img), mark, "tile", 2, 0.7))


@pytest.mark.parametrize("call", [
    lambda i, m: C.watermark(i, m, opacity=1.5), lambda i, m: C.watermark(i, m, opacity=-0.1),
    lambda i, m: C.watermark(i, m, opacity=float("nan")), lambda i, m: C.watermark(i, m, opacity="x"),
    lambda i, m: C.watermark(i, m, position="nowhere"), lambda i, m: C.watermark(i, m, margin=-3),
    lambda i, m: C.watermark(i, m[..., :3].copy()), lambda i, m: C.watermark(i, m.astype(np.float32)),
    lambda i, m: C.watermark(i[..., 0], m), lambda i, m: C.watermark(i, m[:0]),
])
def test_bad_watermark_parameters(call):
    with pytest.raises(ProcessingError):
        call(rng_img((10, 10, 3)), opaque_mark(3, 3))


# --- text --------------------------------------------------------------------------

def test_render_text_mask_and_cache():
    mark = C.render_text("gpupipe", 24, (10, 20, 30))
    assert mark.dtype == np.uint8 and mark.ndim == 3 and mark.shape[2] == 4
    assert 0.5 * 24 <= mark.shape[0] <= 1.5 * 24 and mark.shape[1] > mark.shape[0]
    assert (mark[..., :3] == (10, 20, 30)).all()
    alpha = mark[..., 3]
    assert alpha.max() == 255 and (alpha == 0).any()
    assert alpha[0].any() and alpha[-1].any()  # tight vertically
    assert C.render_text("gpupipe", 24, [10, 20, 30]) is mark
    assert C.render_text("gpupipe", 24, (10, 20, 31)) is not mark
    with pytest.raises(ValueError):
        mark[0, 0, 0] = 1  # read-only: the cache cannot be corrupted


def test_render_text_no_clipped_glyphs():
    mark = C.render_text("Wjy/fg", 40, font=DEJAVU) if os.path.exists(DEJAVU) else C.render_text("Wjy/fg", 40)
    from PIL import ImageDraw, ImageFont
    font = ImageFont.truetype(DEJAVU, 40) if os.path.exists(DEJAVU) else ImageFont.load_default(size=40)
    big = Image.new("L", (400, 200))
    ImageDraw.Draw(big).text((100, 60), "Wjy/fg", font=font, fill=255)
    assert int(mark[..., 3].astype(int).sum()) == int(np.asarray(big).astype(int).sum())


def test_render_text_height_scales_with_size():
    small, large = C.render_text("Hello", 12), C.render_text("Hello", 48)
    assert 3 <= large.shape[0] / small.shape[0] <= 5


@pytest.mark.parametrize("args", [("", 12), ("x", 0), ("x", 2.5), ("x", True), ("x", 12, (1, 2)),
                                  ("x", 12, (0, 0, 256)), ("x", 12, "white"), ("x", 12, (0, 0, 0), "/no/font.ttf"),
                                  (None, 12)])
def test_render_text_bad_parameters(args):
    with pytest.raises(ProcessingError):
        C.render_text(*args)


# --- image marks --------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["RGBA", "RGB", "LA", "L", "P"])
def test_load_mark_converts_and_caches(tmp_path, mode):
    path = tmp_path / f"mark_{mode}.png"
    src = Image.new("RGBA", (7, 5), (200, 100, 50, 128)).convert(mode)
    src.save(path)
    mark = C.load_mark(path)
    assert mark.shape == (5, 7, 4) and mark.dtype == np.uint8
    assert np.array_equal(mark, np.asarray(src.convert("RGBA")))
    assert C.load_mark(str(path)) is mark and not mark.flags.writeable
    # a rewritten file (new mtime) is read again
    Image.new("RGBA", (3, 3), (0, 0, 0, 255)).save(path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert C.load_mark(path).shape == (3, 3, 4)


def test_load_mark_errors(tmp_path):
    with pytest.raises(ProcessingError):
        C.load_mark(tmp_path / "missing.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ProcessingError):
        C.load_mark(junk)


def test_scale_mark():
    mark = np.zeros((40, 80, 4), np.uint8)
    mark[:, :40] = (255, 255, 255, 255)  # right half transparent black
    small = C.scale_mark(mark, 20)
    assert small.shape == (10, 20, 4) and not small.flags.writeable
    assert C.scale_mark(mark.copy(), 20) is small  # cached by content
    vis = small[..., 3] > 0
    # premultiplied resampling: transparent black lends no darkness to visible pixels
    assert (small[vis][:, :3] >= 250).all()
    assert np.array_equal(C.scale_mark(mark, 80), mark)
    with pytest.raises(ProcessingError):
        C.scale_mark(mark, 0)
    with pytest.raises(ProcessingError):
        C.scale_mark(mark[..., :3], 10)


def test_text_watermark_end_to_end():
    img = np.zeros((120, 200, 3), np.uint8)
    size = C.default_text_size(200, 120)
    mark = C.render_text("(c) gpupipe", size)
    out = C.watermark(img, mark, "bottom-right", 8, 0.5)
    h, w = mark.shape[:2]
    region = out[120 - 8 - h:120 - 8, 200 - 8 - w:200 - 8]
    assert region.max() == 128  # white at half opacity over black: 127.5 rounds to even
    assert out.sum() == region.sum()
