"""JPEGs left for a device decoder (codecs.defer_jpeg) and how the engine carries them.

A GPU backend with nvJPEG takes the compressed bytes of the JPEGs it can decode; the
engine checks their headers on the CPU first. Everything here runs without a GPU: the
header checks against ``codecs.decode`` on real photos, and the engine's handling of
deferred JPEGs through a backend that declares ``decodes_jpeg`` and decodes them on the
host (the boundary CupyBackend implements with nvJPEG; tests/backends/cuda/test_gpu.py runs that one).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpupipe import codecs, ops
from gpupipe.backends.numpy import NumpyBackend
from gpupipe.codecs import DeferredJpeg
from gpupipe.engine.process import process_batch
from gpupipe.errors import CorruptImage, InputError, TruncatedImage, UndecodableImages
from gpupipe.spec import Spec

from tests.support.devices import SharedCount, StandInDevice, run_on
from tests.support.badfiles import EXPECTED_ERROR_CLASS, make_bad_inputs
from tests.support.corpus import CORPUS

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


class HostJpegBackend(StandInDevice):
    """The NumPy backend declaring ``decodes_jpeg``: it receives the deferred JPEGs and decodes
    them in ``upload`` (on the host), raising UndecodableImages for those that fail, as
    CupyBackend does with nvJPEG. A stand-in device, so the engine batches for it like a GPU."""

    name = "host-jpeg"
    decodes_jpeg = True

    def __init__(self, seen_deferred: SharedCount | None = None) -> None:
        super().__init__()
        self.seen_deferred = seen_deferred or SharedCount()

    def upload(self, images):
        self.seen_deferred.add(sum(isinstance(image, DeferredJpeg) for image in images))
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
    seen = SharedCount()
    deferring = run_on(lambda: HostJpegBackend(seen), SPEC, src, tmp_path / "deferred", stall_timeout=30)
    plain = run_on(NumpyBackend, SPEC, src, tmp_path / "plain")
    assert seen.value >= len(PHOTOS)
    def pngs(out: Path) -> list[Path]:
        return sorted(p.relative_to(out) for p in out.rglob("*.png"))
    files = pngs(tmp_path / "plain")
    assert files and files == pngs(tmp_path / "deferred")
    for name in files:
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "deferred" / name).read_bytes(), name
    errors = {Path(o.path).name: o.error_class for o in plain.outcomes}
    assert {Path(o.path).name: o.error_class for o in deferring.outcomes} == errors
    assert errors[bad["corrupt_jpeg"].name] == EXPECTED_ERROR_CLASS["corrupt_jpeg"]
