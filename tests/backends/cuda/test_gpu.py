"""The CuPy backend on a real CUDA device against the NumPy backend (docs/design.md §4, issue 3).

Parity: max |Δ| ≤ 1 and ≥ 99.9 % of values equal for every op, bit-exact where the
NumPy contract is integer (resize, geometry, colour, integer filters, watermark); in
modes L/LA/RGB/RGBA, odd sizes (1×1, 1×N, N×1, 20000×20) and random op chains.
Skipped, with the reason, where no CUDA device is usable (checked at run time).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpupipe
from gpupipe import codecs, ops
from gpupipe.backends import cuda_unavailable_reason
from gpupipe.backends.numpy import NumpyBackend, apply_op
from gpupipe.engine.process import process_batch
from gpupipe.spec import Spec

from tests.support.badfiles import make_bad_inputs
from tests.support.corpus import CORPUS, copies
from tests.backends.cuda.test_kernels_plans import EXACT, FILTERS, PARITY, check, runnable
from tests.support import REPO_ROOT

REASON = cuda_unavailable_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"no usable CUDA device: {REASON}")]

EXAMPLES = REPO_ROOT / "examples" / "photos"
SIZES = [(1, 1), (1, 37), (41, 1), (3, 5), (20000, 20), (20, 20000), (333, 517), (1024, 768)]


@pytest.fixture(scope="module")
def gpu():
    from gpupipe.backends.cuda.backend import CupyBackend
    backend = CupyBackend()
    yield backend
    backend.close()


def images_in_every_mode(seed: int, dtype=np.uint8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    out = []
    for h, w in SIZES:
        for c in (1, 2, 3, 4):
            img = rng.integers(0, top + 1, (h, w, c), dtype=dtype)
            if c in (2, 4) and (h * w) % 2:
                img[..., -1] = top                      # some opaque alpha images: the no-alpha path
            out.append(img)
    return out


def on_gpu(backend, op, images):
    return backend.download(backend.apply(backend.upload(images), op))


@pytest.mark.parametrize("op", EXACT + PARITY, ids=lambda op: repr(op)[:60])
def test_every_op_matches_the_numpy_backend(gpu, op):
    images = runnable(op, images_in_every_mode(1))
    check(on_gpu(gpu, op, images), [apply_op(i, op) for i in images], repr(op), exact=op in EXACT)


@pytest.mark.parametrize("op", EXACT + PARITY, ids=lambda op: repr(op)[:60])
def test_every_op_matches_the_numpy_backend_at_16_bits(gpu, op):
    """The _u16 kernels (test_kernels_plans: exact but for filters on translucent images)."""
    images = runnable(op, images_in_every_mode(3, np.uint16))
    got = on_gpu(gpu, op, images)
    assert all(g.dtype == np.uint16 for g in got)
    check(got, [apply_op(i, op) for i in images], repr(op), exact=op in EXACT and not isinstance(op, FILTERS))


def test_a_batch_of_both_depths_is_processed_a_depth_at_a_time(gpu):
    eight, sixteen = images_in_every_mode(4)[:8], images_in_every_mode(5, np.uint16)[:8]
    mixed = [img for pair in zip(eight, sixteen) for img in pair]
    spec = Spec.single([ops.Resize(31, 17), ops.Brightness(12), ops.Rotate(90)])
    got = process_batch(gpu, list(mixed), spec)
    want = process_batch(NumpyBackend(), list(mixed), spec)
    for g, w in zip(got, want):
        assert g[0].dtype == w[0].dtype and np.array_equal(g[0], w[0])


def test_subset_and_a_batch_of_one(gpu):
    images = images_in_every_mode(2)[:12]
    batch = gpu.upload(images)
    picked = gpu.download(gpu.subset(batch, [0, 5, 11]))
    assert all(np.array_equal(a, b) for a, b in zip(picked, [images[0], images[5], images[11]]))
    one = gpu.download(gpu.apply(gpu.upload(images[7:8]), ops.Rotate(90)))
    assert np.array_equal(one[0], apply_op(images[7], ops.Rotate(90)))


SAFE_OPS = st.sampled_from([op for op in EXACT if not isinstance(op, (ops.Crop, ops.CenterCrop))])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chain=st.lists(SAFE_OPS, min_size=1, max_size=4), last=st.sampled_from([None, *PARITY]),
       seed=st.integers(0, 2**16))
def test_random_chains_match_the_numpy_backend(gpu, chain, last, seed):
    """Exact ops in any order, at most one float filter at the end (its ±1 must not be amplified)."""
    spec = Spec.single(chain + ([last] if last is not None else []))
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (int(rng.integers(1, 90)), int(rng.integers(1, 90)), int(rng.integers(1, 5))),
                           dtype=np.uint8) for _ in range(6)]
    got = process_batch(gpu, list(images), spec)
    want = process_batch(NumpyBackend(), list(images), spec)
    pairs = [(g[0], w[0]) for g, w in zip(got, want)]
    assert [isinstance(g, np.ndarray) for g, _ in pairs] == [isinstance(w, np.ndarray) for _, w in pairs]
    arrays = [(g, w) for g, w in pairs if isinstance(w, np.ndarray)]
    if arrays:
        check([g for g, _ in arrays], [w for _, w in arrays], f"chain {spec.variants[0].ops}", exact=last is None)


def test_a_batch_over_the_memory_cap_is_split(tmp_path):
    from gpupipe.backends.cuda.backend import CupyBackend
    small = CupyBackend(memory_limit=64 * 2**20)
    try:
        rng = np.random.default_rng(3)
        images = [rng.integers(0, 256, (2000, 3000, 3), dtype=np.uint8) for _ in range(6)]   # 108 MB
        from gpupipe.engine.process import process_fitting
        spec = Spec.single([ops.GaussianBlur(1.0), ops.Thumbnail(256)])
        got = process_fitting(small, images, spec, None, NumpyBackend())
        want = process_batch(NumpyBackend(), list(images), spec)
        check([g[0] for g in got], [w[0] for w in want], "split batch", exact=False)
    finally:
        small.close()


def test_gpu_and_cpu_runs_write_the_same_files(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for photo in EXAMPLES.iterdir():
        if photo.suffix.lower() in (".jpg", ".png"):
            shutil.copy(photo, src / photo.name)
    spec = gpupipe.Spec((gpupipe.Variant((ops.Thumbnail(256),), name="thumb", format="png"),
                         gpupipe.Variant((ops.Resize(800, 600, mode="fill"), ops.Grayscale(),
                                          ops.Watermark(text="© gpupipe")), name="web", format="png")))
    cpu = gpupipe.run(src, tmp_path / "cpu", spec, backend="cpu")
    gpu = gpupipe.run(src, tmp_path / "gpu", spec, backend="gpu")       # decode on the CPU: the default
    assert gpu.summary.backend.startswith("gpu") and gpu.summary.processed == cpu.summary.processed > 0
    files = sorted(p.relative_to(tmp_path / "cpu") for p in (tmp_path / "cpu").rglob("*.png"))
    for rel in files:
        assert (tmp_path / "gpu" / rel).read_bytes() == (tmp_path / "cpu" / rel).read_bytes(), rel


def test_gpu_worker_processes_each_with_its_own_context_write_the_cpus_files(tmp_path):
    """The CLI in a process of its own (CUDA never opened in it): four forked workers, each with
    its own CUDA context, write exactly the CPU run's files."""
    import json
    import subprocess
    import sys
    src = tmp_path / "in"
    for copy in range(4):
        (src / str(copy)).mkdir(parents=True)
        for photo in EXAMPLES.iterdir():
            if photo.suffix.lower() in (".jpg", ".png"):
                shutil.copy(photo, src / str(copy) / photo.name)
    runs = {}
    for backend in ("cpu", "gpu"):
        report = tmp_path / f"{backend}.json"
        done = subprocess.run([sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(tmp_path / backend),
                               "--backend", backend, "-j", "4", "--thumbnail", "256", "--sharpen", "-f", "png",
                               "--report", str(report), "--quiet"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        runs[backend] = json.loads(report.read_text())["summary"]
    assert runs["gpu"]["backend"].startswith("gpu (CuPy") and "4 worker processes" in runs["gpu"]["backend"]
    assert runs["gpu"]["processed"] == runs["cpu"]["processed"] > 0
    for path in sorted((tmp_path / "cpu").rglob("*.png")):
        assert (tmp_path / "gpu" / path.relative_to(tmp_path / "cpu")).read_bytes() == path.read_bytes(), path


def test_colour_runs_are_deferred_and_fused(gpu):
    images = images_in_every_mode(4)[:16]
    batch = gpu.apply(gpu.apply(gpu.upload(images), ops.Brightness(30)), ops.Contrast(1.4))
    assert batch.pending_table is not None                       # nothing launched yet
    rotated = gpu.apply(batch, ops.Rotate(90))                   # settles the table first
    subset = gpu.subset(batch, [1, 3])
    want = [apply_op(apply_op(i, ops.Brightness(30)), ops.Contrast(1.4)) for i in images]
    check(gpu.download(batch), want, "fused colour run", exact=True)
    check(gpu.download(rotated), [apply_op(w, ops.Rotate(90)) for w in want], "then rotate", exact=True)
    check(gpu.download(subset), [want[1], want[3]], "subset of a pending batch", exact=True)


# ---------------------------------------------------------------------- JPEG decode on the GPU (nvJPEG)

DECODE_PHOTOS = sorted((CORPUS / "exif-orientation").glob("*.jpg")) + sorted((CORPUS / "pillow").glob("*.jpg"))


def _with_nvjpeg(job: str):
    """A CupyBackend with nvJPEG's decoder or encoder ("decode", "encode"), or a skip saying why
    there is none."""
    from gpupipe.backends.cuda.backend import CupyBackend
    from gpupipe.backends.cuda.jpeg import nvimgcodec_unavailable_reason
    backend = CupyBackend(**{f"jpeg_{job}": True})
    if (backend.jpeg if job == "decode" else backend.jpeg_encoder) is None:
        backend.close()
        pytest.skip(f"no GPU JPEG {job}: {nvimgcodec_unavailable_reason() or 'nvImageCodec did not start'}")
    return backend


@pytest.fixture(scope="module")
def nvjpeg():
    backend = _with_nvjpeg("decode")
    yield backend
    backend.close()


def test_nvjpeg_decodes_upright_and_close_to_libjpeg_turbo(nvjpeg, record_property):
    """Same shapes and orientation as codecs.decode; the pixels are nvJPEG's (its IDCT and chroma
    upsampling round differently), so they are compared by their mean and 99.9th-percentile
    difference: a wrong orientation or channel order is off by tens of levels on average."""
    stats, refused = [], []
    for photo in DECODE_PHOTOS:
        data = photo.read_bytes()
        deferred = codecs.defer_jpeg(data)
        if deferred is None:
            continue
        want = codecs.decode(data).pixels
        got = nvjpeg.download(nvjpeg.upload([deferred.pixels]))[0]
        assert got.shape == want.shape, photo.name
        if deferred.pixels.host_pixels is not None:     # nvJPEG refused it: decoded on the host instead
            refused.append(photo.name)
            assert np.array_equal(got, want), photo.name
            continue
        diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
        stats.append((photo.name, float(diff.mean()), int(np.percentile(diff, 99.9)), int(diff.max())))
        assert diff.mean() < 1.5 and np.percentile(diff, 99.9) <= 16, stats[-1]
    assert len(stats) >= 20 and len(refused) <= 2, (stats, refused)
    record_property("nvjpeg_vs_libjpeg_turbo", stats)
    print("nvJPEG vs libjpeg-turbo (name, mean, p99.9, max):", *stats, f"refused (host decode): {refused}",
          sep="\n  ")


def test_a_mixed_batch_of_device_and_host_images(nvjpeg):
    photos = [p.read_bytes() for p in DECODE_PHOTOS[:5]]
    deferred = [codecs.defer_jpeg(d).pixels for d in photos]
    host = [codecs.decode(d).pixels for d in photos]
    batch = [deferred[0], host[1], deferred[2], host[3], deferred[4]]
    got = nvjpeg.download(nvjpeg.upload(batch))
    assert [g.shape for g in got] == [h.shape for h in host]
    assert np.array_equal(got[1], host[1]) and np.array_equal(got[3], host[3])      # host images untouched
    for i in (0, 2, 4):
        assert np.abs(got[i].astype(np.int16) - host[i]).mean() < 1.5


def test_bad_jpegs_fail_on_the_gpu_as_on_the_cpu(nvjpeg, tmp_path):
    """Bad inputs get the CPU run's error classes, with and without --decoder nvimgcodec, except the
    one documented gap: nvJPEG decodes corrupt entropy-coded data (the test suite's corrupt.jpg:
    a whole header, random scan bytes, EOI) to noise without an error."""
    src = tmp_path / "in"
    src.mkdir()
    for kind, path in make_bad_inputs(tmp_path / "bad").items():
        if kind != "broken_symlink":
            shutil.copy(path, src / path.name)
    for photo in DECODE_PHOTOS[:6]:
        shutil.copy(photo, src / photo.name)
    spec = Spec.single([ops.Brightness(5), ops.Thumbnail(128)], format="png")
    classes = {}
    for name, options in (("cpu", {"backend": "cpu"}), ("gpu", {"backend": "gpu"}),
                          ("nvjpeg", {"backend": "gpu", "decoder": "nvimgcodec"})):
        result = gpupipe.run(src, tmp_path / name, spec, journal=False, **options)
        classes[name] = {Path(o.path).name: o.error_class for o in result.outcomes}
        assert ("nvJPEG" in result.summary.backend) == (name == "nvjpeg")
    assert classes["gpu"] == classes["cpu"] and classes["cpu"]["corrupt.jpg"] == "corrupt"
    assert {k: v for k, v in classes["nvjpeg"].items() if k != "corrupt.jpg"} == \
        {k: v for k, v in classes["cpu"].items() if k != "corrupt.jpg"}
    print("corrupt.jpg with --decoder nvimgcodec:", classes["nvjpeg"]["corrupt.jpg"] or "processed (not detected)")


def test_gpu_codecs_through_the_engine_lose_nothing(nvjpeg, tmp_path):
    """--decoder nvimgcodec --gpu-encode through the engine: every input is processed, and the outputs are
    within nvJPEG's rounding of the CPU run's."""
    src = copies(DECODE_PHOTOS, tmp_path / "in", 4)
    chain = (ops.Brightness(10), ops.GaussianBlur(2.0))
    spec = gpupipe.Spec((gpupipe.Variant(chain, name="png", format="png"),
                         gpupipe.Variant(chain, name="jpeg", format="jpeg", quality=90)))
    cpu = gpupipe.run(src, tmp_path / "cpu", spec, backend="cpu", journal=False)
    gpu = gpupipe.run(src, tmp_path / "gpu", spec, backend="gpu", decoder="nvimgcodec", gpu_encode=True, workers=8,
                      journal=False)
    assert "nvJPEG decode and encode" in gpu.summary.backend, gpu.summary.backend
    assert gpu.summary.processed == cpu.summary.processed == 4 * len(DECODE_PHOTOS)
    outputs = sorted(p.relative_to(tmp_path / "cpu") for p in (tmp_path / "cpu").rglob("*.*")
                     if p.suffix in (".png", ".jpg"))
    assert len(outputs) == 2 * 4 * len(DECODE_PHOTOS)
    for rel in outputs:
        got = codecs.decode((tmp_path / "gpu" / rel).read_bytes()).pixels
        want = codecs.decode((tmp_path / "cpu" / rel).read_bytes()).pixels
        limit = 1.5 if rel.suffix == ".png" else 3.0          # a JPEG adds its own rounding
        assert got.shape == want.shape and np.abs(got.astype(np.int16) - want).mean() < limit, rel


def test_dali_decodes_on_the_gpu_within_nvjpegs_rounding_of_the_cpu(tmp_path):
    """--decoder dali with the GPU backend: DALI decodes on the device ("mixed"); every input is
    processed, within nvJPEG's rounding of the CPU run's outputs (no leading shrink: every JPEG goes
    to DALI), and the summary says DALI decoded."""
    pytest.importorskip("nvidia.dali", reason="the [dali] extra (nvidia-dali) is not installed")
    src = copies(DECODE_PHOTOS, tmp_path / "in", 4)
    spec = gpupipe.Spec.single([ops.Sharpen(), ops.Thumbnail(128)], format="png")
    cpu = gpupipe.run(src, tmp_path / "cpu", spec, backend="cpu", journal=False)
    gpu = gpupipe.run(src, tmp_path / "gpu", spec, backend="gpu", decoder="dali", workers=4, journal=False)
    assert "DALI decode" in gpu.summary.backend, gpu.summary.backend
    assert gpu.summary.processed == cpu.summary.processed == 4 * len(DECODE_PHOTOS)
    for written in (tmp_path / "cpu").rglob("*.png"):
        got = codecs.decode((tmp_path / "gpu" / written.relative_to(tmp_path / "cpu")).read_bytes()).pixels
        want = codecs.decode(written.read_bytes()).pixels
        assert got.shape == want.shape and np.abs(got.astype(np.int16) - want).mean() < 1.5, written.name


def test_the_cli_with_gpu_codecs_exits_with_the_runs_status(nvjpeg, tmp_path):
    """Exit status 0 for a clean run and 1 when an input failed, also when nvImageCodec is loaded
    (its teardown at interpreter exit has crashed a test process: cli.main ends before it)."""
    import subprocess
    import sys
    src = tmp_path / "in"
    src.mkdir()
    for photo in DECODE_PHOTOS[:4]:
        shutil.copy(photo, src / photo.name)
    command = [sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(tmp_path / "out"), "--backend", "gpu",
               "--decoder", "nvimgcodec", "--gpu-encode", "--brightness", "10", "--thumbnail", "64", "--quiet"]
    clean = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr
    (src / "bad.jpg").write_bytes(b"\xff\xd8\xff" + bytes(100))
    failed = subprocess.run(command[:6] + [str(tmp_path / "out2")] + command[7:], capture_output=True, text=True,
                            timeout=120)
    assert failed.returncode == 1, failed.stderr


# ---------------------------------------------------------------------- JPEG encode on the GPU (nvJPEG)

@pytest.fixture(scope="module")
def nvjpeg_encoder():
    backend = _with_nvjpeg("encode")
    yield backend
    backend.close()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_nvjpeg_encodes_jpegs_as_good_as_libjpeg_turbo(nvjpeg_encoder, record_property):
    """Files libjpeg-turbo decodes strictly, to the right shape, as close to the pixels as
    libjpeg-turbo's own at the same quality (PSNR within 1 dB) and of a similar size; alpha
    images are left to the host (None)."""
    photos = [codecs.decode(p.read_bytes()).pixels for p in DECODE_PHOTOS[:10]]
    images = photos + [np.ascontiguousarray(p[:, :, :1]) for p in photos[:3]]
    images += [np.dstack([photos[0], np.full(photos[0].shape[:2], 200, np.uint8)]), photos[0][:1, :7].copy()]
    batch = nvjpeg_encoder.upload(images)
    stats = []
    for quality in (90, 60):
        files = nvjpeg_encoder.encode_jpeg(batch, list(range(len(images))), quality)
        assert files[-2] is None                                       # RGBA: the host flattens it first
        for image, encoded in zip(images[:-2] + images[-1:], files[:-2] + files[-1:]):
            if encoded is None and image.shape[0] == 1:                # a refusal the host would encode
                stats.append((quality, image.shape, "refused"))
                continue
            assert encoded is not None and encoded.channels == image.shape[2]
            back = codecs.decode(encoded.data).pixels                  # strict libjpeg-turbo
            assert back.shape == image.shape
            cpu = codecs.encode(image, format="jpeg", quality=quality)
            gain = _psnr(back, image) - _psnr(codecs.decode(cpu).pixels, image)
            ratio = len(encoded.data) / len(cpu)
            stats.append((quality, image.shape, round(gain, 2), round(ratio, 2)))
            assert gain > -1.0 and 0.5 < ratio < 2.0, stats[-1]
    record_property("nvjpeg_encode_vs_libjpeg_turbo", stats)
    print("nvJPEG encode vs libjpeg-turbo (quality, shape, PSNR gain dB, size ratio):", *stats, sep="\n  ")


def test_a_run_with_gpu_encode_writes_what_the_cpu_run_writes(nvjpeg_encoder, tmp_path):
    """Same files, outcomes and PNG bytes as a CPU run; the JPEGs are nvJPEG's, decoding to
    within a JPEG's rounding of the CPU run's."""
    src = tmp_path / "in"
    src.mkdir()
    for photo in DECODE_PHOTOS[:8]:
        shutil.copy(photo, src / photo.name)
    with_alpha = np.dstack([codecs.decode(DECODE_PHOTOS[0].read_bytes()).pixels[:300, :400],
                            np.full((300, 400), 128, np.uint8)])
    (src / "alpha.png").write_bytes(codecs.encode(with_alpha, format="png"))
    spec = gpupipe.Spec((gpupipe.Variant((ops.Resize(640, 480, mode="fit"), ops.Brightness(10)), name="web",
                                         format="jpeg", quality=90),
                         gpupipe.Variant((ops.Resize(640, 480, mode="fit"), ops.Brightness(10)), name="png",
                                         format="png")))
    cpu = gpupipe.run(src, tmp_path / "cpu", spec, backend="cpu", journal=False)
    gpu = gpupipe.run(src, tmp_path / "gpu", spec, backend="gpu", gpu_encode=True, journal=False)
    assert "nvJPEG encode" in gpu.summary.backend
    assert {Path(o.path).name: o.error_class for o in gpu.outcomes} == \
        {Path(o.path).name: o.error_class for o in cpu.outcomes}
    files = sorted(p.relative_to(tmp_path / "cpu") for p in (tmp_path / "cpu").rglob("*.*")
                   if p.suffix in (".jpg", ".png"))
    assert files and files == sorted(p.relative_to(tmp_path / "gpu") for p in (tmp_path / "gpu").rglob("*.*")
                                     if p.suffix in (".jpg", ".png"))
    for rel in files:
        got, want = (tmp_path / "gpu" / rel).read_bytes(), (tmp_path / "cpu" / rel).read_bytes()
        if rel.suffix == ".png":
            assert got == want, rel
            continue
        a, b = codecs.decode(got).pixels, codecs.decode(want).pixels
        assert a.shape == b.shape and np.abs(a.astype(np.int16) - b).mean() < 3.0, rel
