"""JPEGs left for a device decoder (codecs.defer_jpeg) and how the engine carries them.

A GPU backend with nvJPEG takes the compressed bytes of the JPEGs it can decode; the
engine checks their headers on the CPU first. Everything here runs without a GPU: the
header checks against ``codecs.decode`` on real photos, and the engine's handling of
deferred JPEGs through a backend that declares ``decodes_jpeg`` and decodes them on the
host (the boundary CupyBackend implements with nvJPEG; tests/test_gpu.py runs that one).
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpupipe import codecs, ops
from gpupipe.backends.numpy import NumpyBackend
from gpupipe.codecs import DeferredJpeg
from gpupipe.engine.local import LocalEngine, RunOptions
from gpupipe.engine.process import process_batch
from gpupipe.errors import CorruptImage, InputError, TruncatedImage, UndecodableImages
from gpupipe.spec import Spec

from .badfiles import EXPECTED_ERROR_CLASS, make_bad_inputs
from .corpus import CORPUS, copies

PHOTOS = sorted((CORPUS / "exif-orientation").glob("*.jpg")) + sorted((CORPUS / "pillow").glob("*.jpg"))


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.name)
def test_a_deferred_jpeg_is_what_decode_would_give(photo: Path) -> None:
    data = photo.read_bytes()
    decoded = codecs.decode(data)
    deferred = codecs.defer_jpeg(data)
    if deferred is None:                       # CMYK, 12-bit, ... : decode() keeps them
        assert decoded.format == "jpeg"
        return
    assert isinstance(deferred.pixels, DeferredJpeg)
    assert deferred.pixels.shape == decoded.pixels.shape          # upright, as decode() orients
    assert deferred.pixels.nbytes == decoded.pixels.nbytes
    assert (deferred.format, deferred.icc_profile, deferred.stored_size, deferred.orientation, deferred.mode) == \
        (decoded.format, decoded.icc_profile, decoded.stored_size, decoded.orientation, decoded.mode)
    assert np.array_equal(deferred.pixels.decode_on_host(), decoded.pixels)


def test_every_orientation_is_deferred_with_its_upright_shape() -> None:
    shapes = {}
    for photo in sorted((CORPUS / "exif-orientation").glob("Landscape_*.jpg")):
        deferred = codecs.defer_jpeg(photo.read_bytes())
        assert deferred is not None, photo.name
        shapes[deferred.orientation] = deferred.pixels.shape
    assert len(shapes) >= 8
    assert len({shape for shape in shapes.values()}) == 1           # every landscape comes out landscape


def _jpeg(mode: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.open(PHOTOS[0]).reduce(8).convert(mode).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def test_what_stays_on_the_cpu() -> None:
    grey = codecs.defer_jpeg(_jpeg("L"))
    assert grey is not None and grey.pixels.shape[2] == 1
    assert codecs.defer_jpeg(_jpeg("CMYK")) is None                 # nvJPEG gives no CMYK -> RGB conversion
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    assert codecs.defer_jpeg(png.getvalue()) is None
    whole = _jpeg("RGB")
    assert codecs.defer_jpeg(whole[: len(whole) * 2 // 3]) is None  # cut short: libjpeg-turbo reports it
    big = PHOTOS[0].read_bytes()
    assert codecs.defer_jpeg(big, min_size=(64, 64)) is None        # a shrink: the CPU's 1/8-scale decode wins
    assert codecs.defer_jpeg(big, min_size=(100_000, 1)) is not None


def test_a_broken_header_fails_as_decode_fails() -> None:
    data = _jpeg("RGB")
    for bad, error in ((data[:40], TruncatedImage), (data[:4] + b"\x00\x01" + data[6:], CorruptImage)):
        with pytest.raises(error):
            codecs.decode(bad)
        with pytest.raises(error):
            codecs.defer_jpeg(bad)
    with pytest.raises(InputError, match="too large"):
        codecs.defer_jpeg(data, max_pixels=10)


# Brightness first: no shrink-on-load, so every 8-bit JPEG is deferred at full size.
SPEC = Spec.single([ops.Brightness(10), ops.Resize(96, 64, mode="fill"), ops.Sharpen()], format="png")


class HostJpegBackend(NumpyBackend):
    """The NumPy backend declaring ``decodes_jpeg``: it receives the deferred JPEGs and decodes
    them in ``upload`` (on the host), raising UndecodableImages for those that fail, as
    CupyBackend does with nvJPEG. Named other than "cpu" so the engine drives it in batches
    like a GPU."""

    name = "host-jpeg"
    decodes_jpeg = True
    max_batch_images = 8
    seen_deferred = 0

    def upload(self, images):
        type(self).seen_deferred += sum(isinstance(image, DeferredJpeg) for image in images)
        failed = codecs.decode_deferred_on_host(images, range(len(images)))
        if failed:
            raise UndecodableImages(failed)
        return super().upload([i.decode_on_host() if isinstance(i, DeferredJpeg) else i for i in images])


def test_a_batch_fails_only_the_jpegs_that_do_not_decode(tmp_path: Path) -> None:
    good = PHOTOS[0].read_bytes()
    bad = make_bad_inputs(tmp_path)["corrupt_jpeg"].read_bytes()     # a whole header, then garbage, then EOI
    batch = [codecs.defer_jpeg(data).pixels for data in (good, bad, good)]
    for backend in (NumpyBackend(), HostJpegBackend()):              # resolved by the engine / by the backend
        results = process_batch(backend, list(batch), SPEC)
        assert isinstance(results[1][0], CorruptImage), backend.name
        want = process_batch(NumpyBackend(), [codecs.decode(good).pixels], SPEC)[0][0]
        assert np.array_equal(results[0][0], want) and np.array_equal(results[2][0], want), backend.name


def test_the_engine_carries_deferred_jpegs_to_the_same_outputs(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for photo in PHOTOS:
        shutil.copy(photo, src / photo.name)
    bad = make_bad_inputs(tmp_path / "bad")
    for kind, path in bad.items():
        if kind != "broken_symlink":
            shutil.copy(path, src / path.name)
    HostJpegBackend.seen_deferred = 0
    # Every JPEG to the "device" here; a busy device's overflow to the host is tested below.
    deferring = LocalEngine(SPEC, HostJpegBackend(), RunOptions(workers=2, host_decode_overflow=False)).run(
        [src], tmp_path / "deferred")
    plain = LocalEngine(SPEC, NumpyBackend(), RunOptions(workers=2)).run([src], tmp_path / "plain")
    assert HostJpegBackend.seen_deferred >= len(PHOTOS)
    def pngs(out: Path) -> list[Path]:
        return sorted(p.relative_to(out) for p in out.rglob("*.png"))
    files = pngs(tmp_path / "plain")
    assert files and files == pngs(tmp_path / "deferred")
    for name in files:
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "deferred" / name).read_bytes(), name
    errors = {Path(o.path).name: o.error_class for o in plain.outcomes}
    assert {Path(o.path).name: o.error_class for o in deferring.outcomes} == errors
    assert errors[bad["corrupt_jpeg"].name] == EXPECTED_ERROR_CLASS["corrupt_jpeg"]


class BusyJpegBackend(HostJpegBackend):
    """HostJpegBackend with one stream, batches of two, and a first upload that waits until
    four decoded inputs are queued behind it: a device with a backlog, for certain."""

    concurrency = 1
    max_batch_images = 2

    def __init__(self) -> None:
        super().__init__()
        self.engine: LocalEngine | None = None
        self.waited = False
        self.arrays_seen = 0                # JPEG pixels decoded on the host and handed over

    def upload(self, images):
        deadline = time.monotonic() + 30
        while not self.waited and self.engine.decoded_q.depth < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.waited = True                  # only the first batch waits
        self.arrays_seen += sum(isinstance(image, np.ndarray) for image in images)
        return super().upload(images)


def _busy_run(src: Path, out: Path, overflow: bool) -> tuple[BusyJpegBackend, LocalEngine, object]:
    backend = BusyJpegBackend()
    engine = LocalEngine(SPEC, backend, RunOptions(workers=2, host_decode_overflow=overflow))
    backend.engine = engine
    return backend, engine, engine.run([src], out)


def test_a_busy_device_leaves_jpegs_to_the_host_and_nothing_changes(tmp_path: Path) -> None:
    """With --gpu-decode, JPEGs that arrive while the device has a full batch waiting per stream
    are decoded by the idle decode threads: the device then gets pixels, the outputs are the
    same, and the engine counts which side decoded what."""
    src = copies(PHOTOS, tmp_path / "in", 3)
    jpegs = 3 * sum(codecs.defer_jpeg(p.read_bytes()) is not None for p in PHOTOS)
    plain = LocalEngine(SPEC, NumpyBackend(), RunOptions(workers=2)).run([src], tmp_path / "plain")

    backend, engine, busy = _busy_run(src, tmp_path / "busy", overflow=True)
    host = engine.jpeg_decodes["host (device busy)"]
    assert host >= 1 and engine.jpeg_decodes["device"] >= 1
    assert host + engine.jpeg_decodes["device"] == jpegs
    assert backend.arrays_seen >= host                  # the overflow reached the device as pixels
    assert busy.summary.processed == plain.summary.processed == len(PHOTOS) * 3
    for path in sorted((tmp_path / "plain").rglob("*.png")):
        assert path.read_bytes() == (tmp_path / "busy" / path.relative_to(tmp_path / "plain")).read_bytes()

    backend, engine, pinned = _busy_run(src, tmp_path / "pinned", overflow=False)
    assert engine.jpeg_decodes == {"device": jpegs, "host (device busy)": 0}
    assert pinned.summary.processed == len(PHOTOS) * 3
