"""Random op chains on random images of every mode: every valid chain runs, sizes are
what the ops promise, and the result is a well-formed image (no op trips over another's output)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import gpupipe
from gpupipe import ops
from gpupipe.errors import ProcessingError
from gpupipe.ops import chain_output_size

OP_STRATEGIES = [
    st.builds(ops.Resize, st.integers(1, 80), st.integers(1, 80),
              mode=st.sampled_from(["exact", "fit", "fill", "pad"]),
              filter=st.sampled_from(["nearest", "bilinear", "bicubic", "lanczos3"]), upscale=st.booleans()),
    st.builds(ops.Resize, width=st.integers(1, 80)),
    st.builds(ops.Thumbnail, st.integers(1, 64)),
    st.builds(ops.Crop, st.integers(0, 5), st.integers(0, 5), st.integers(1, 20), st.integers(1, 20)),
    st.builds(ops.CenterCrop, st.integers(1, 20), st.integers(1, 20)),
    st.builds(ops.Rotate, st.sampled_from([90, 180, 270])),
    st.builds(ops.Flip, st.sampled_from(["h", "v"])),
    st.just(ops.Grayscale()),
    st.builds(ops.Brightness, st.integers(-255, 255)),
    st.builds(ops.Contrast, st.floats(0, 4)),
    st.builds(ops.BoxBlur, st.integers(1, 4)),
    st.builds(ops.GaussianBlur, st.floats(0.3, 4)),
    st.builds(ops.Sharpen, st.floats(0, 3)),
    st.builds(ops.Unsharp, st.floats(0.3, 3), st.floats(0, 2), st.floats(0, 20)),
    st.builds(ops.Edges, st.sampled_from(["sobel", "laplacian"])),
    st.just(ops.Emboss()),
    st.builds(ops.Convolve, st.just(((1, 2, 1), (2, 4, 2), (1, 2, 1)))),
    st.builds(ops.Convolve, st.just(((0, -1, 0), (-1, 4, -1), (0, -1, 0))), offset=st.just(128.0)),
    st.builds(ops.Watermark, text=st.just("gp"), position=st.sampled_from(ops.POSITIONS),
              margin=st.integers(0, 8), opacity=st.floats(0, 1), size=st.integers(4, 24)),
]


@st.composite
def images(draw):
    h, w = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    c = draw(st.sampled_from([1, 2, 3, 4]))
    seed = draw(st.integers(0, 2**31))
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(images(), st.lists(st.one_of(OP_STRATEGIES), min_size=1, max_size=4))
def test_random_chains_run_and_keep_their_promises(image: np.ndarray, chain: list[ops.Op]) -> None:
    height, width, channels = image.shape
    try:
        expected = chain_output_size(chain, width, height)
    except ProcessingError:
        expected = None                          # e.g. a crop outside this image: apply must refuse too
    event("refused" if expected is None else "applied")
    if expected is None:
        try:
            gpupipe.apply(chain, image)
        except ProcessingError:
            return
        raise AssertionError("apply accepted a chain whose sizes say it cannot apply")
    out = gpupipe.apply(chain, image)
    gray = any(isinstance(op, ops.Grayscale) for op in chain)
    has_alpha = channels in (2, 4)
    expected_channels = (2 if has_alpha else 1) if gray or channels <= 2 else channels
    # A single-channel result comes back H×W, unless the input was H×W×1 (apply's rule).
    assert out.dtype == np.uint8 and out.ndim == (2 if expected_channels == 1 and channels != 1 else 3)
    assert (out.shape[1], out.shape[0]) == expected
    assert (out.shape[2] if out.ndim == 3 else 1) == expected_channels
    image_copy = image.copy()
    gpupipe.apply(chain, image)
    assert np.array_equal(image, image_copy)      # inputs are never modified
