"""The CUDA backend's host side (gpupipe/backends/cuda/plans.py) for every op, run on the CPU.

Each op is planned for a mixed batch exactly as the CuPy backend plans it — descriptors,
resample tables, filter taps, watermark marks, launch order, scratch buffers — and the
program runs through the unchanged kernels/*.cu under AddressSanitizer (kernelcheck).
The result must equal the NumPy backend: bit for bit where docs/design.md §4 says so, within
parity (max |Δ| ≤ 1, ≥ 99.9 % of values equal) for the float filters. Only the device
transfers and the launches themselves are left for the GPU tests (tests/backends/cuda/test_gpu.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from gpupipe import ops
from gpupipe.backends.cuda.plans import colour_table, compose_tables, plan_op, plan_table
from gpupipe.backends.numpy import apply_op
from gpupipe.spec import Spec

from tests.support import kernelcheck as kc

test_under_asan = kc.asan_test(__file__)

SHAPES = [(1, 1), (1, 9), (7, 1), (2, 3), (5, 4), (13, 17), (32, 24), (3, 40), (41, 29)]
EXAMPLES = kc.ROOT / "examples" / "photos"

EXACT = [
    ops.Grayscale(), ops.Brightness(37.5), ops.Brightness(-80), ops.Contrast(1.7), ops.Contrast(0.25),
    ops.Window(100, 80), ops.Window(120, 150, bits=16), ops.Window(30000, 20000, bits=8),
    ops.Normalize(), ops.Normalize(10, 60), ops.Equalize(), ops.Equalize(clahe=True, tiles=3),
    ops.Equalize(clahe=True, clip_limit=0.2, tiles=8),
    ops.Rotate(90), ops.Rotate(180), ops.Rotate(270), ops.Flip("horizontal"), ops.Flip("vertical"),
    ops.Crop(0, 0, 1, 1), ops.CenterCrop(1, 1),
    ops.Resize(9, 6), ops.Resize(3, 50, filter="bilinear"), ops.Resize(20, 20, filter="nearest"),
    ops.Resize(10, 10, mode="fit", filter="bicubic"), ops.Resize(8, 5, mode="fill"),
    ops.Resize(12, 12, mode="pad", background=(10, 200, 30, 128)), ops.Resize(width=7),
    ops.Resize(6, 6, mode="fit", upscale=False), ops.Thumbnail(16), ops.Thumbnail(1),
    ops.Emboss(), ops.Edges("laplacian"), ops.Sharpen(1.0),
    ops.Convolve(((1, 2, 1), (2, 4, 2), (1, 2, 1))),                     # rank 1: two passes
    ops.Convolve(((0, -1, 0), (-1, 4, -1), (0, -1, 0)), divisor=3.0, offset=10.0),
    ops.Watermark(text="© gp", size=6, position="bottom-right", margin=1, opacity=0.6),
    ops.Watermark(text="x", size=5, position="tile", margin=2, opacity=1.0),
    ops.Watermark(image=str(EXAMPLES / "chapel.png"), scale=0.5, position="center", opacity=0.4),
]
PARITY = [
    ops.GaussianBlur(0.8), ops.GaussianBlur(3.0), ops.GaussianBlur(22.0), ops.BoxBlur(2), ops.Sharpen(0.5), ops.Edges("sobel"),
    ops.Unsharp(1.2, 1.5, 0), ops.Unsharp(2.0, 0.7, 4.0),
    ops.Convolve(((0.1, 0.2, 0.1), (0.2, 0.4, 0.25), (0.1, 0.2, 0.3))),
]


FILTERS = (ops.GaussianBlur, ops.BoxBlur, ops.Sharpen, ops.Unsharp, ops.Edges, ops.Emboss, ops.Convolve)


def check(got, want, what, exact):
    assert [g.shape for g in got] == [w.shape for w in want], what
    assert [g.dtype for g in got] == [w.dtype for w in want], what
    diff = np.concatenate([np.abs(g.astype(np.int64) - w.astype(np.int64)).ravel() for g, w in zip(got, want)])
    worst, equal = int(diff.max()), float((diff == 0).mean())
    if exact:
        assert worst == 0, f"{what}: max |Δ| {worst}, {100 * (1 - equal):.3f} % of values differ"
    # Parity: off by one level at most. At 16 bits float32's error on sums of values up to 65535
    # reaches a rounding boundary 257 times as often, for a step 257 times as small: 99 % equal.
    share = 0.999 if got[0].dtype == np.uint8 else 0.99
    assert worst <= 1 and equal >= share, f"{what}: max |Δ| {worst}, {100 * equal:.3f} % equal"


def runnable(op, images):
    """The images this op applies to (the engine drops the others before the backend sees them)."""
    keep = []
    for img in images:
        try:
            op.output_size(img.shape[1], img.shape[0])
            keep.append(img)
        except Exception:
            pass
    return keep


class TestPlans:
    __test__ = kc.INNER

    def setup_class(self):
        kc.require_asan_loaded()

    @pytest.mark.parametrize("op", EXACT + PARITY, ids=lambda op: repr(op)[:60])
    def test_op_matches_the_numpy_backend(self, op):
        images = runnable(op, kc.mixed_batch(11, SHAPES))
        assert images, "the batch must hold images this op applies to"
        got = kc.run_program(plan_op(op, [i.shape for i in images]), images)
        check(got, [apply_op(i, op) for i in images], repr(op), exact=op in EXACT)

    @pytest.mark.parametrize("op", EXACT + PARITY, ids=lambda op: repr(op)[:60])
    def test_op_matches_the_numpy_backend_at_16_bits(self, op):
        """The _u16 twins and the byte-moving kernels on 16-bit batches. Exact as at 8 bits, except
        the filters on translucent images: c * alpha needs 32 bits there, which float32 rounds, so
        their sums are parity (docs/design.md §4), like the float filters'."""
        images = runnable(op, kc.mixed_batch(15, SHAPES, dtype=np.uint16))
        program = plan_op(op, [i.shape for i in images], np.uint16)
        assert program.dtype == np.uint16
        got = kc.run_program(program, images)
        check(got, [apply_op(i, op) for i in images], repr(op), exact=op in EXACT and not isinstance(op, FILTERS))

    @pytest.mark.parametrize("op", [op for op in EXACT if isinstance(op, FILTERS)], ids=lambda op: repr(op)[:60])
    def test_integer_filters_are_exact_at_16_bits_without_translucency(self, op):
        images = kc.mixed_batch(16, SHAPES, channels=(1, 3), dtype=np.uint16)
        opaque = [np.dstack([i, np.full(i.shape[:2], 65535, np.uint16)]) for i in kc.mixed_batch(17, SHAPES, channels=(1, 3), dtype=np.uint16)]
        for batch in (images, opaque):
            got = kc.run_program(plan_op(op, [i.shape for i in batch], np.uint16), batch)
            check(got, [apply_op(i, op) for i in batch], repr(op), exact=True)

    @pytest.mark.parametrize("op", [ops.GaussianBlur(0.8), ops.GaussianBlur(3.0), ops.GaussianBlur(5.0),
                                    ops.Unsharp(1.0, 1.0, 0), ops.Unsharp(1.2, 1.5, 0), ops.Unsharp(2.0, 0.7, 4.0)],
                             ids=lambda op: repr(op)[:60])
    def test_8_bit_gaussians_are_exact_without_translucency(self, op):
        """Taps of whole 256ths (filters.gaussian_taps) sum exactly on both backends: the plans give the
        NumPy backend's bytes on images without translucency, unsharp storing its blur first."""
        plain = kc.mixed_batch(18, SHAPES, channels=(1, 3))
        opaque = [np.dstack([i, np.full(i.shape[:2], 255, np.uint8)]) for i in kc.mixed_batch(19, SHAPES, channels=(1, 3))]
        for batch in (plain, opaque):
            got = kc.run_program(plan_op(op, [i.shape for i in batch]), batch)
            check(got, [apply_op(i, op) for i in batch], repr(op), exact=True)

    @pytest.mark.parametrize("grid,block", [((1, 1), 1), ((5, 3), 7), ((64, 16), 64)])
    def test_launch_shapes_do_not_matter(self, grid, block):
        images = kc.mixed_batch(12, SHAPES[:6])
        for op in (ops.Resize(5, 7), ops.GaussianBlur(1.1), ops.Rotate(90), ops.Watermark(text="w", size=4)):
            got = kc.run_program(plan_op(op, [i.shape for i in images]), images, grid=grid, block=block)
            check(got, [apply_op(i, op) for i in images], f"{op!r} grid {grid}x{block}",
                  exact=not isinstance(op, ops.GaussianBlur))

    def test_each_image_alone_in_exact_buffers(self):
        """Alone, an access outside the image is outside its buffer: ASan reports it."""
        for img in kc.mixed_batch(13, SHAPES):
            for op in (ops.Resize(4, 3, mode="fill"), ops.Resize(9, 9, mode="pad"), ops.Unsharp(1.0, 1.0, 0),
                       ops.Edges("sobel"), ops.Watermark(text="ab", size=7, position="top-left", margin=0)):
                got = kc.run_program(plan_op(op, [img.shape]), [img])
                check(got, [apply_op(img, op)], f"{op!r} alone on {img.shape}",
                      exact=not isinstance(op, (ops.Unsharp, ops.Edges)))

    @pytest.mark.parametrize("op", [op for op in EXACT + PARITY if isinstance(op, FILTERS)],
                             ids=lambda op: repr(op)[:60])
    def test_opaque_alpha_filters_exactly_like_no_alpha(self, op):
        """The alpha rule: an RGBA image whose alpha is 255 everywhere gives the RGB image's colour,
        bit for bit (the kernels' own arithmetic, no tolerance). Caught the translucency flags
        left unzeroed: opaque images took the premultiplied path, off by one to three levels."""
        rgb = [kc.random_image(np.random.default_rng(seed), h, w, 3) for seed, (h, w) in enumerate(SHAPES)]
        rgba = [np.dstack([i, np.full(i.shape[:2], 255, np.uint8)]) for i in rgb]
        plain = kc.run_program(plan_op(op, [i.shape for i in rgb]), rgb)
        opaque = kc.run_program(plan_op(op, [i.shape for i in rgba]), rgba)
        for p, o in zip(plain, opaque):
            assert np.array_equal(p, o[..., :3]) and (o[..., 3] == 255).all(), repr(op)

    def test_consecutive_colour_ops_fuse_into_one_launch(self):
        """As the CuPy backend defers them: brightness/contrast runs compose into one table."""
        images = kc.mixed_batch(14, SHAPES)
        for run in ([ops.Brightness(40), ops.Contrast(1.8)], [ops.Contrast(0.3), ops.Brightness(-12.5),
                                                               ops.Contrast(2.5), ops.Brightness(7)]):
            table = None
            for op in run:
                table = compose_tables(table, colour_table(op))
            program = plan_table(table, [i.shape for i in images])
            assert [launch.kernel for launch in program.launches] == ["gp_lut"]
            want = images
            for op in run:
                want = [apply_op(w, op) for w in want]
            check(kc.run_program(program, images), want, f"fused {run}", exact=True)
        deep = kc.mixed_batch(18, SHAPES, dtype=np.uint16)
        table = compose_tables(colour_table(ops.Brightness(-20), np.uint16), colour_table(ops.Contrast(1.4), np.uint16))
        program = plan_table(table, [i.shape for i in deep])
        assert [launch.kernel for launch in program.launches] == ["gp_lut_u16"]
        want = [apply_op(apply_op(i, ops.Brightness(-20)), ops.Contrast(1.4)) for i in deep]
        check(kc.run_program(program, deep), want, "fused at 16 bits", exact=True)

    @pytest.mark.parametrize("seed", range(24))
    def test_random_chains_match_the_numpy_backend(self, seed):
        """As tests/backends/cuda/test_gpu.py's random chains, here through the kernels on the CPU: exact ops in
        any order on a random mixed batch, then at most one float filter (its ±1 is not amplified).
        Each op is planned for the shapes the previous one left, as the CuPy backend plans it.
        Every fourth seed runs at 16 bits (only pixel moves and pointwise ops before the filter there:
        an exact filter on translucent 16-bit images is parity, and a chain would amplify it)."""
        rng = np.random.default_rng(seed)
        dtype = np.uint16 if seed % 4 == 3 else np.uint8
        exact = [op for op in EXACT if not isinstance(op, (ops.Crop, ops.CenterCrop))
                 and (dtype == np.uint8 or not isinstance(op, FILTERS))]
        chain = [exact[i] for i in rng.integers(0, len(exact), int(rng.integers(1, 5)))]
        filtered = rng.random() < 0.5
        if filtered:
            chain.append(PARITY[int(rng.integers(0, len(PARITY)))])
        images = [kc.random_image(rng, int(rng.integers(1, 40)), int(rng.integers(1, 40)), int(rng.integers(1, 5)),
                                  dtype) for _ in range(6)]
        want = list(images)
        for op in chain:
            images = kc.run_program(plan_op(op, [i.shape for i in images], images[0].dtype), images, grid=(7, 3),
                                    block=32)
            want = [apply_op(w, op) for w in want]
        check(images, want, f"seed {seed}: chain {chain}", exact=not filtered)

    def test_a_real_photo_through_a_chain(self):
        from PIL import Image
        photo = np.asarray(Image.open(EXAMPLES / "Landscape_1.jpg").convert("RGB").reduce(8))
        chain = Spec.single([ops.Resize(160, 120, mode="fill"), ops.Sharpen(), ops.Grayscale(),
                             ops.Watermark(text="gpupipe", size=12)]).variants[0].ops
        images, want = [photo, photo[:50, :70].copy()], [photo, photo[:50, :70].copy()]
        for op in chain:
            images = kc.run_program(plan_op(op, [i.shape for i in images]), images, grid=(64, 2), block=64)
            want = [apply_op(w, op) for w in want]
            check(images, want, f"chain at {op!r}", exact=True)


def test_every_op_has_a_cuda_plan_and_is_checked_here() -> None:
    """plan_op's NotImplementedError guards an op added to the catalogue without a CUDA plan. Host
    ops (user code) run on the host between device ops, never on a backend."""
    from gpupipe.backends.cuda.plans import _PLANNERS
    device_ops = {cls for cls in ops.OP_CLASSES.values() if not issubclass(cls, ops.HostOp)}
    assert set(_PLANNERS) == device_ops and ops.Python not in device_ops
    assert {type(op) for op in EXACT + PARITY} == device_ops


def test_row_passes_go_through_shared_memory_up_to_the_apron() -> None:
    """Radii up to plans.ROW_APRON take gp_sep_rows_tiled, larger ones gp_sep_rows (both checked above)."""
    from gpupipe.backends.cuda.plans import plan_op

    def row_kernels(op):
        return [launch.kernel for launch in plan_op(op, [(4, 5, 3)]).launches if "rows" in launch.kernel]
    assert row_kernels(ops.GaussianBlur(3.0)) == ["gp_sep_rows_tiled"]
    assert row_kernels(ops.GaussianBlur(21.0)) == ["gp_sep_rows_tiled"]        # radius 63
    assert row_kernels(ops.BoxBlur(64)) == ["gp_sep_rows_tiled"]
    assert row_kernels(ops.BoxBlur(65)) == ["gp_sep_rows"]
    assert row_kernels(ops.GaussianBlur(22.0)) == ["gp_sep_rows"]              # radius 66


def test_host_constants_match_the_kernels_defines() -> None:
    """plans.py sizes grids and picks kernels by the kernels' #defines: they must agree."""
    import re

    from gpupipe.backends.cuda import plans

    defines = {name: int(value) for cu in kc.KERNELS.glob("*.cu")
               for name, value in re.findall(r"^#define (GP_\w+) (\d+)$", cu.read_text(), re.M)}
    assert (plans.TILE, plans.ROW_PIXELS, plans.COLUMN_ROWS, plans.ROW_SEGMENT, plans.ROW_APRON) == (
        defines["GP_TILE"], defines["GP_ROW_PIXELS"], defines["GP_COLUMN_ROWS"], defines["GP_ROW_SEGMENT"],
        defines["GP_ROW_APRON"])
