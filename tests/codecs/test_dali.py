"""--decoder dali on the CPU (DALI's CPU decoders; its GPU decoders run in tests/backends/cuda/test_gpu.py):
DALI's pixels equal the default decoder's, batches keep per-file isolation, runs write the default
decoder's files; --decoder pillow too; without DALI the option says how to install it."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import gpupipe
from gpupipe import codecs, ops
from gpupipe.codecs.decoding import DeferredJpeg, defer_jpeg
from gpupipe.spec import Spec

from tests.support.blocked import env_without
from tests.support.cli import EXAMPLES, gp
from tests.support.corpus import CORPUS

pytest.importorskip("nvidia.dali", reason="the [dali] extra (nvidia-dali) is not installed")

PHOTOS = sorted((CORPUS / "exif-orientation").glob("*.jpg")) + sorted((CORPUS / "pillow").glob("*.jpg"))


@pytest.fixture(scope="module")
def elsewhere():
    """DALI used in a spawned process: its threads must not be in the process a later run forks
    its workers from (a gpupipe run never starts DALI in its own process)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield lambda datas: pool.submit(_decode_with_dali, datas).result()


def _decode_with_dali(datas: list[bytes]) -> list:
    from gpupipe.codecs.dali import DaliDecoder

    items = []
    for data in datas:
        found = defer_jpeg(data)
        items.append(found.pixels if found is not None else None)
    decoder = DaliDecoder("cpu")
    wanted = [item for item in items if isinstance(item, DeferredJpeg)]
    pixels = iter(decoder.decode(wanted))
    return [next(pixels) if isinstance(item, DeferredJpeg) else "not deferred" for item in items]


def test_dalis_pixels_are_the_default_decoders(elsewhere):
    """Every photo of the corpus (baseline, progressive, each EXIF orientation) in one batch:
    bit for bit what codecs.decode gives, upright, in the same mode; and a grey JPEG gives L."""
    datas = [p.read_bytes() for p in PHOTOS]
    grey = codecs.encode(codecs.decode(datas[0]).pixels[:, :, :1].copy(), format="jpeg")
    results = elsewhere(datas + [grey])
    assert len(results) == len(PHOTOS) + 1
    for data, pixels, name in zip(datas + [grey], results, [p.name for p in PHOTOS] + ["grey"]):
        if isinstance(pixels, str):
            continue                                  # not a JPEG a device decoder takes (the host decodes it)
        assert pixels is not None, name
        assert np.array_equal(pixels, codecs.decode(data).pixels), name
    assert results[-1].shape[2] == 1
    assert sum(not isinstance(r, str) for r in results) >= 10


def bogus_huffman_table(good: bytes) -> bytes:
    """A JPEG whose first Huffman table is nonsense: libjpeg-turbo (under DALI too) gives up on it."""
    at = good.index(b"\xff\xc4")
    return good[:at + 5] + bytes([0xFF] * 16) + good[at + 21:]


def test_a_batch_with_a_broken_jpeg_is_split_until_it_fails_alone(elsewhere):
    good = (EXAMPLES / "Landscape_1.jpg").read_bytes()
    results = elsewhere([good, good, bogus_huffman_table(good), good, good])
    assert results[2] is None
    expected = codecs.decode(good).pixels
    assert all(np.array_equal(r, expected) for k, r in enumerate(results) if k != 2)


def test_a_run_with_dali_writes_the_default_decoders_files_and_fails_what_it_fails(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for photo in PHOTOS[:8]:
        shutil.copy(photo, src / photo.name)
    good = (EXAMPLES / "Landscape_1.jpg").read_bytes()
    (src / "bogus.jpg").write_bytes(bogus_huffman_table(good))
    (src / "short.jpg").write_bytes(good[:5000])
    (src / "empty.jpg").write_bytes(b"")
    (src / "cut.jpg").write_bytes(good[:len(good) // 2] + b"\xff\xd9")     # cut short, then an end marker
    # no leading shrink: a JPEG that can be decoded at a reduced DCT scale is decoded so on the host,
    # whatever the decoder (the least work); here every JPEG goes to DALI
    spec = Spec.single([ops.Sharpen(), ops.Thumbnail(96)], format="png")
    default = gpupipe.run(src, tmp_path / "turbo", spec, backend="cpu", workers=2)
    dali = gpupipe.run(src, tmp_path / "dali", spec, backend="cpu", workers=2, decoder="dali")
    assert "DALI" in dali.summary.backend

    def verdicts(result):
        return {Path(o.path).name: (o.status, o.error_class) for o in result.outcomes}
    # DALI, like nvJPEG, is not strict: a scan cut short before an end marker decodes with grey rows
    # where libjpeg-turbo's strict mode fails it (docs/usage.md: why GPU and DALI decode are opt-in)
    default_verdicts, dali_verdicts = verdicts(default), verdicts(dali)
    assert default_verdicts["cut.jpg"] == ("failed", "truncated") and dali_verdicts["cut.jpg"][0] == "ok"
    del default_verdicts["cut.jpg"], dali_verdicts["cut.jpg"]
    assert dali_verdicts == default_verdicts
    assert dali_verdicts["bogus.jpg"] == ("failed", "corrupt") and dali_verdicts["short.jpg"] == ("failed", "truncated")
    written = sorted(p.name for p in (tmp_path / "turbo").glob("*.png"))
    assert len(written) == 8
    for name in written:
        assert (tmp_path / "dali" / name).read_bytes() == (tmp_path / "turbo" / name).read_bytes(), name


def test_pillow_decodes_every_jpeg_with_the_same_pixels(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for photo in PHOTOS[:6]:
        shutil.copy(photo, src / photo.name)
    for decoder in ("turbo", "pillow"):
        done = gp("run", src, "-o", tmp_path / decoder, "--decoder", decoder, "--thumbnail", "80", "-f", "png",
                  "--quiet")
        assert done.exit_code == 0, done.output
    for written in (tmp_path / "turbo").glob("*.png"):
        assert (tmp_path / "pillow" / written.name).read_bytes() == written.read_bytes(), written.name


def test_doctor_reports_dali():
    done = gp("doctor")
    assert done.exit_code == 0 and "NVIDIA DALI" in done.output and "--decoder dali" in done.output


def test_without_dali_the_option_says_how_to_install_it(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLES / "Landscape_1.jpg", src)
    done = subprocess.run([sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(tmp_path / "out"),
                           "--decoder", "dali"],
                          capture_output=True, text=True, env=env_without(("nvidia",), tmp_path / "block"))
    assert done.returncode == 2, done.stderr
    assert "pip install 'gpupipe[dali]'" in done.stderr
    assert not (tmp_path / "out").exists()
