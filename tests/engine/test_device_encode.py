"""Results a backend encodes where its pixels are (``Backend.encodes_jpeg``: nvJPEG on a GPU).

The engine asks such a backend for the JPEG files of the variants written as JPEG and
downloads pixels only for the rest: PNG/WebP variants, alpha images (the host flattens them
first) and any image the backend refuses. Everything here runs without a GPU, through a
backend that declares ``encodes_jpeg`` and encodes with libjpeg-turbo on the host, marking its
files with a comment segment (the boundary CupyBackend implements with nvJPEG;
tests/backends/cuda/test_gpu.py runs that one). With the mark removed, every file must be byte-identical to
a plain CPU run's: the right image, quality and ICC profile reached each output.
"""

from __future__ import annotations

import io
import logging
import shutil
import struct
from pathlib import Path

import numpy as np
from PIL import Image

import gpupipe
from gpupipe import codecs, ops
from gpupipe.backends.numpy import NumpyBackend
from gpupipe.codecs import EncodedImage
from gpupipe.engine.process import device_jpeg_plan, process_batch
from gpupipe.spec import Spec, Variant

from tests.support.corpus import CORPUS
from tests.support.devices import StandInDevice, run_on

TAG = b"encoded by the backend"
COMMENT = b"\xff\xfe" + struct.pack(">H", 2 + len(TAG)) + TAG


class HostJpegEncodingBackend(StandInDevice):
    """The NumPy backend declaring ``encodes_jpeg``: L and RGB images of even width are encoded in
    ``encode_jpeg`` (``codecs.encode`` plus a COM segment); alpha images and odd widths are left
    to the host, as CupyBackend leaves alpha images and nvJPEG's refusals. A stand-in device, so
    the engine batches for it like a GPU."""

    name = "host-jpeg-encoder"
    encodes_jpeg = True
    max_batch_images = 4

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, list[int], int]] = []

    def encode_jpeg(self, batch, positions, quality):
        self.calls.append((len(batch), list(positions), quality))
        out = []
        for p in positions:
            image = batch[p]
            if image.shape[2] not in (1, 3) or image.shape[1] % 2:
                out.append(None)
                continue
            data = codecs.encode(image, format="jpeg", quality=quality)
            at = 4 + struct.unpack(">H", data[4:6])[0] if data[2:4] == b"\xff\xe0" else 2   # after JFIF
            out.append(EncodedImage(data[:at] + COMMENT + data[at:], "jpeg", image.shape[2]))
        return out


def _inputs(directory: Path) -> dict[str, str]:
    """Input name -> mode: colour JPEGs (one with an RGB ICC profile), a grey JPEG, an RGBA PNG,
    an RGB PNG, and a JPEG whose results have an odd width."""
    directory.mkdir()
    modes = {}
    for name in ("flower2.jpg", "hopper.jpg"):
        shutil.copy(CORPUS / "pillow" / name, directory / name)
        modes[name] = "RGB"
    with Image.open(CORPUS / "pillow" / "hopper.jpg") as im:
        im.convert("L").save(directory / "grey.jpg", quality=90)
        modes["grey.jpg"] = "L"
        rgba = im.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize(im.size))
        rgba.save(directory / "translucent.png")
        modes["translucent.png"] = "RGBA"
        im.save(directory / "plain.png")
        modes["plain.png"] = "RGB"
        im.crop((0, 0, 201, 120)).save(directory / "odd.jpg", quality=90)   # 201 wide: odd at every size here
        modes["odd.jpg"] = "RGB"
    return modes


SPEC = Spec((
    Variant((ops.Resize(201, 150, mode="fit"),), name="small", format="jpeg", quality=80),
    Variant((ops.Resize(201, 150, mode="fit"),), name="also-small", format="jpeg", quality=80),
    Variant((ops.Resize(201, 150, mode="fit"),), name="small-q60", format="jpeg", quality=60),
    Variant((ops.Resize(201, 150, mode="fit"),), name="small-png", format="png"),
    Variant((ops.Grayscale(), ops.Brightness(8)), name="grey"),               # keeps the input's format
))


def _without_mark(data: bytes) -> bytes:
    return data.replace(COMMENT, b"", 1)


def test_the_engine_writes_what_the_backend_encoded_and_the_host_encodes_the_rest(tmp_path: Path) -> None:
    modes = _inputs(tmp_path / "in")
    encoding = run_on(HostJpegEncodingBackend, SPEC, tmp_path / "in", tmp_path / "device")
    plain = run_on(NumpyBackend, SPEC, tmp_path / "in", tmp_path / "plain")
    assert encoding.summary.failed == plain.summary.failed == 0

    files = sorted(p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain").rglob("*.*")
                   if ".gpupipe" not in p.parts)
    assert files == sorted(p.relative_to(tmp_path / "device") for p in (tmp_path / "device").rglob("*.*")
                           if ".gpupipe" not in p.parts)
    marked = set()
    for name in files:
        got, want = (tmp_path / "device" / name).read_bytes(), (tmp_path / "plain" / name).read_bytes()
        assert _without_mark(got) == want, name       # same pixels, quality and ICC profile
        if got != want:
            marked.add(name.name)
    # Exactly the JPEG outputs of L/RGB inputs with even result widths came from encode_jpeg.
    expected = {f"{stem}_{variant}.jpg" for stem in ("flower2", "hopper") for variant in ("small", "also-small",
                                                                                         "small-q60", "grey")}
    expected |= {"grey_small.jpg", "grey_also-small.jpg", "grey_small-q60.jpg", "grey_grey.jpg"}
    expected |= {"plain_small.jpg", "plain_also-small.jpg", "plain_small-q60.jpg"}     # a PNG input, JPEG out
    assert marked == expected, sorted(marked ^ expected)
    assert modes["translucent.png"] == "RGBA" and not any(m.startswith(("translucent", "odd")) for m in marked)
    with Image.open(tmp_path / "device" / "flower2_small.jpg") as im:           # the input's ICC profile
        assert im.info.get("icc_profile") == codecs.decode((tmp_path / "in" / "flower2.jpg").read_bytes()).icc_profile


def test_a_batch_whose_variants_are_not_jpeg_is_only_downloaded() -> None:
    image = np.zeros((8, 10, 3), np.uint8)
    backend = HostJpegEncodingBackend()
    spec = Spec.single([ops.Brightness(4)], format="png")
    results = process_batch(backend, [image.copy(), image.copy()], spec, formats=["jpeg", "png"])
    assert backend.calls == [] and all(isinstance(r[0], np.ndarray) for r in results)


def test_without_the_inputs_formats_every_result_comes_back_as_pixels() -> None:
    backend = HostJpegEncodingBackend()
    results = process_batch(backend, [np.zeros((8, 10, 3), np.uint8)], Spec.single([ops.Brightness(4)],
                                                                                  format="jpeg"))
    assert backend.calls == [] and isinstance(results[0][0], np.ndarray)


def test_the_plan_follows_each_variants_output_format() -> None:
    spec = Spec((Variant(name="keep", quality=70), Variant(name="jpeg", format="jpeg"),
                 Variant(name="webp", format="webp")))
    plan = device_jpeg_plan(spec, ["jpeg", "png", "gif", "jpeg"])
    assert plan == {0: (70, frozenset({0, 3})), 1: (85, frozenset({0, 1, 2, 3}))}


def test_an_encoded_result_gets_only_a_profile_that_fits_its_channels() -> None:
    icc = codecs.decode((CORPUS / "pillow" / "flower2.jpg").read_bytes()).icc_profile
    assert icc and icc[16:20] == b"RGB "
    for channels, kept in ((3, True), (1, False)):
        pixels = np.full((16, 16, channels), 128, np.uint8)
        data = codecs.with_icc_profile(EncodedImage(codecs.encode(pixels, format="jpeg"), "jpeg", channels), icc)
        with Image.open(io.BytesIO(data)) as im:
            assert (im.info.get("icc_profile") == icc) is kept
        assert data == codecs.encode(pixels, format="jpeg", icc_profile=icc)


def test_gpu_codecs_that_cannot_apply_say_so(tmp_path: Path, caplog) -> None:
    """--gpu-encode where no variant writes JPEG, and --decoder nvimgcodec/--gpu-encode when the run ends up
    on the CPU backend (auto on a machine without CUDA), warn instead of doing nothing silently."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(CORPUS / "pillow" / "hopper.jpg", src)
    with caplog.at_level(logging.WARNING, logger="gpupipe"):
        result = gpupipe.run(src, tmp_path / "webp", Spec.single([ops.Grayscale()], format="png"),
                             gpu_encode=True, journal=False)
    assert result.summary.processed == 1
    assert "--gpu-encode: no variant writes JPEG (formats: png)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gpupipe"):
        result = gpupipe.run(src, tmp_path / "jpeg", Spec.single([ops.Grayscale()]), decoder="nvimgcodec",
                             gpu_encode=True, journal=False)
    on_cpu = result.summary.backend.startswith("cpu")
    assert ("--decoder nvimgcodec and --gpu-encode: this run uses the cpu backend" in caplog.text) == on_cpu
    assert "no variant writes JPEG" not in caplog.text
