"""Decoder fuzz test: mutated real JPEG/PNG/GIF/WebP/TIFF/BMP files through decode and one op.

Seeds are one real photo (examples/photos) shrunk to 64x48 and saved in every layout the
decoders take (baseline/progressive/grey/CMYK JPEG, RGB/palette/grey/16-bit/interlaced PNG,
GIF, lossy/lossless WebP, raw/deflate/LZW/PackBits TIFF, 24-bit/RLE BMP). Each case applies
one to three seeded mutations (bit flips, byte runs, truncation, insertion, deletion,
duplication, splices of two files, 16/32-bit fields set to edge values such as huge sizes
and lengths, PNG chunk edits with their CRCs made valid again so the edit reaches the
decoder, JPEG segment lengths and frame sizes), then ``codecs.decode`` (with a pixel
limit) and a thumbnail on the CPU backend. Only InputError subclasses may come out.

The cases run in a child process with an address-space limit, so a blow-up or a hang fails
this test with the case that caused it instead of taking pytest down; the child stops when
its time budget is used (GPUPIPE_FUZZ_SECONDS, 60 by default: run longer locally).
Case n is always the same bytes (random.Random(n)), so a failure is reproducible from its
number; what the fuzzer found is kept in tests/fuzz_regressions/ (see its README) and
checked by ``test_fuzz_regressions_fail_with_their_class``.
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import struct
import subprocess
import sys
import time
import traceback
import zlib
from pathlib import Path

import pytest
from tests.support import REPO_ROOT

ROOT = REPO_ROOT
PHOTO = ROOT / "examples" / "photos" / "Landscape_1.jpg"
REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"

MAX_PIXELS = 4_000_000            # declared sizes above this are refused before decoding
MEMORY_CAP = 1 << 30              # address space the child may add after its imports
CASE_TIMEOUT_S = 10               # no single case may take this long (a hang)


def fuzz_seconds() -> float:
    return float(os.environ.get("GPUPIPE_FUZZ_SECONDS", "60"))


def fuzz_first_case() -> int:
    """GPUPIPE_FUZZ_START: the first case number (0 in CI); a long local run from elsewhere
    explores cases CI never reaches."""
    return int(os.environ.get("GPUPIPE_FUZZ_START", "0"))


# ----------------------------------------------------------------------------- seeds

def seed_files() -> dict[str, bytes]:
    """The photo at 64x48 in every layout the decoders take."""
    from PIL import Image

    from tests.support.badfiles import short_bmp_rle8

    with Image.open(PHOTO) as im:
        im.draft("RGB", (im.width // 8, im.height // 8))
        small = im.convert("RGB").resize((64, 48))

    def save(image, fmt: str, **options) -> bytes:
        buf = io.BytesIO()
        image.save(buf, fmt, **options)
        return buf.getvalue()

    import numpy as np
    rgba = small.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((64, 48)))
    return {
        "baseline.jpg": save(small, "JPEG", quality=90),
        "progressive.jpg": save(small, "JPEG", progressive=True),
        "grey.jpg": save(small.convert("L"), "JPEG"),
        "cmyk.jpg": save(small.convert("CMYK"), "JPEG"),
        "rgb.png": save(small, "PNG"),
        "rgba.png": save(rgba, "PNG"),
        "palette.png": save(small.convert("P"), "PNG"),
        "rgb16.png": _rgb16_png(np.asarray(small)),
        "interlaced.png": _interlaced_png(small),
        "rgb.gif": save(small, "GIF"),
        "lossy.webp": save(small, "WEBP"),
        "lossless.webp": save(rgba, "WEBP", lossless=True),
        "raw.tif": save(small, "TIFF"),
        "deflate.tif": save(small, "TIFF", compression="tiff_adobe_deflate"),
        "lzw.tif": save(small, "TIFF", compression="tiff_lzw"),
        "packbits.tif": save(small, "TIFF", compression="packbits"),
        "rgb.bmp": save(small, "BMP"),
        "rle8.bmp": short_bmp_rle8(small, 1.0),
    }


def _rgb16_png(pixels) -> bytes:
    """A 16-bit RGB PNG (Pillow writes none; gpupipe decodes these through OpenCV)."""
    from tests.support.badfiles import png_chunk
    rows = (pixels.astype(">u2") * 257)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def _interlaced_png(image) -> bytes:
    from tests.support.badfiles import short_png
    return short_png(image, 1.0, interlace=True)


# ------------------------------------------------------------------------- mutations

_EDGE = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
         0x80000000, 0xFFFFFFFF, 20000, 65500, 1 << 20)


def _flip(rng: random.Random, data: bytearray, _seeds) -> bytearray:
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    return data


def _bytes(rng: random.Random, data: bytearray, _seeds) -> bytearray:
    i = rng.randrange(len(data))
    n = rng.randint(1, 32)
    data[i:i + n] = bytes([rng.choice((0, 0xFF, rng.randrange(256)))] * n)[:len(data) - i]
    return data


def _truncate(rng: random.Random, data: bytearray, _seeds) -> bytearray:
    return data[:rng.randrange(1, len(data))]


def _insert(rng: random.Random, data: bytearray, _seeds) -> bytearray:
    i = rng.randrange(len(data))
    return data[:i] + bytearray(rng.randbytes(rng.randint(1, 64))) + data[i:]


def _delete(rng: random.Random, data: bytearray, _seeds) -> bytearray:
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randint(1, 256):]


def _duplicate(rng: random.Random, data: bytearray, _seeds) -> bytearray:
    i = rng.randrange(len(data))
    piece = data[i:i + rng.randint(1, 512)]
    j = rng.randrange(len(data))
    return data[:j] + piece + data[j:]


def _splice(rng: random.Random, data: bytearray, seeds) -> bytearray:
    other = rng.choice(seeds)
    return data[:rng.randrange(len(data))] + bytearray(other[rng.randrange(len(other)):])


def _field(rng: random.Random, data: bytearray, _seeds) -> bytearray:
    """A 16- or 32-bit field, mostly in the header, set to an edge value (sizes, lengths, counts)."""
    size = rng.choice((2, 4))
    limit = min(len(data), 256 if rng.random() < 0.7 else len(data)) - size
    if limit <= 0:
        return data
    i = rng.randrange(limit)
    value = rng.choice(_EDGE) if rng.random() < 0.8 else rng.getrandbits(32)
    data[i:i + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, rng.choice(("big", "little")))
    return data


def _png_chunk_edit(rng: random.Random, data: bytearray, seeds) -> bytearray:
    """Edit inside one PNG chunk (a field, its length, bytes of its payload) and make every
    CRC valid again, so the edit reaches the decoder instead of the CRC check."""
    if not data.startswith(b"\x89PNG"):
        return _field(rng, data, seeds)
    chunks = _png_chunk_spans(data)
    if not chunks:
        return data
    start, length = rng.choice(chunks)
    choice = rng.random()
    if choice < 0.3:
        value = rng.choice(_EDGE)
        struct.pack_into(">I", data, start - 8, value & 0xFFFFFFFF)        # the length field
    elif length:
        i = start + rng.randrange(length)
        if choice < 0.7 and i + 4 <= start + length:
            struct.pack_into(">I", data, i, rng.choice(_EDGE) & 0xFFFFFFFF)
        else:
            data[i] = rng.randrange(256)
    return _fix_png_crcs(data)


def _png_chunk_spans(data: bytes) -> list[tuple[int, int]]:
    spans, pos = [], 8
    while pos + 12 <= len(data):
        length = struct.unpack_from(">I", data, pos)[0]
        if pos + 12 + length > len(data):
            break
        spans.append((pos + 8, length))
        pos += 12 + length
    return spans


def _fix_png_crcs(data: bytearray) -> bytearray:
    for start, length in _png_chunk_spans(data):
        struct.pack_into(">I", data, start + length, zlib.crc32(data[start - 4:start + length]))
    return data


def _png_short_idat(rng: random.Random, data: bytearray, seeds) -> bytearray:
    """The PNG's pixel data inflated, cut at a random length and deflated again into one IDAT
    with a valid CRC, IEND kept: data short of the header's rows, every structure intact."""
    if not data.startswith(b"\x89PNG"):
        return _truncate(rng, data, seeds)
    spans = _png_chunk_spans(data)
    idat = [(start, length) for start, length in spans if data[start - 4:start] == b"IDAT"]
    if not idat:
        return data
    try:
        raw = zlib.decompress(b"".join(data[start:start + length] for start, length in idat))
    except zlib.error:
        return data
    cut = rng.randrange(len(raw) + 1)
    width, _height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    row = 1 + (width * depth * {2: 3, 4: 2, 6: 4}.get(colour, 1) + 7) // 8
    if rng.random() < 0.5:
        cut -= cut % row                          # on a row boundary: decoders stop quietly there
    payload = zlib.compress(raw[:cut])
    first, last = idat[0][0] - 8, idat[-1][0] + idat[-1][1] + 4
    chunk = struct.pack(">I", len(payload)) + b"IDAT" + payload + b"\0\0\0\0"
    return _fix_png_crcs(data[:first] + bytearray(chunk) + data[last:])


def _jpeg_segment_edit(rng: random.Random, data: bytearray, seeds) -> bytearray:
    """A JPEG marker segment's length, or its frame header's size/components, set to edge values."""
    segments = [i for i in range(2, min(len(data), 4096) - 4)
                if data[i] == 0xFF and 0xC0 <= data[i + 1] <= 0xFE and data[i + 1] != 0xFF]
    if not segments:
        return _field(rng, data, seeds)
    i = rng.choice(segments)
    if 0xC0 <= data[i + 1] <= 0xC2 and i + 10 <= len(data) and rng.random() < 0.6:
        j = i + 5 + rng.choice((0, 2, 4))                                   # height, width, components
        data[j:j + 2] = (rng.choice(_EDGE) & 0xFFFF).to_bytes(2, "big")
    else:
        data[i + 2:i + 4] = (rng.choice(_EDGE) & 0xFFFF).to_bytes(2, "big")
    return data


MUTATIONS = (_flip, _flip, _bytes, _truncate, _insert, _delete, _duplicate, _splice, _field, _field,
             _png_chunk_edit, _png_short_idat, _jpeg_segment_edit)
# Mutations that only take image data away: alone, their result may decode as ok only to the
# whole file's pixels (the cut fell after the image data, e.g. on IEND or a GIF trailer).
SHORTENING = ("truncate", "png_short_idat")


def make_case(number: int, seeds: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    """Case ``number``: the same seed and mutations every time."""
    rng = random.Random(number)
    name, data = seeds[number % len(seeds)]
    mutated = bytearray(data)
    steps = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if len(mutated) < 2:
            break                                  # nothing left to cut or flip inside
        mutate = rng.choice(MUTATIONS)
        if name.endswith(".png") and mutate is not _png_chunk_edit and rng.random() < 0.5:
            mutated = _fix_png_crcs(mutate(rng, mutated, [d for _, d in seeds]))
        else:
            mutated = mutate(rng, mutated, [d for _, d in seeds])
        steps.append(mutate.__name__.lstrip("_"))
    return f"{name}+{'+'.join(steps)}", bytes(mutated)


# ------------------------------------------------------------------------ the child

def run_case(data: bytes, backend, spec) -> str:
    """Decode and thumbnail; the error class of an InputError, "ok", or raise what escaped."""
    return decode_and_thumbnail(data, backend, spec)[0]


def decode_and_thumbnail(data: bytes, backend, spec):
    """(outcome, the decoded pixels or None): as ``run_case``."""
    from gpupipe import codecs
    from gpupipe.engine.process import process_batch
    from gpupipe.errors import InputError
    try:
        decoded = codecs.decode(data, max_pixels=MAX_PIXELS)
    except InputError as exc:
        return exc.error_class, None
    pixels = decoded.pixels.copy()
    result = process_batch(backend, [decoded.pixels], spec)[0][0]
    if isinstance(result, InputError):
        return result.error_class, pixels
    codecs.encode(result, format="png")
    return "ok", pixels


def cut_decoded_differently(pixels, seed_pixels) -> bool:
    """A file cut short (``SHORTENING``) that decodes "ok" must give the whole file's pixels:
    anything else is a truncated image passed as complete, black rows and all."""
    import numpy as np
    return pixels is not None and not np.array_equal(pixels, seed_pixels)


def child_main(out: Path, seconds: float) -> None:
    """Run cases until ``seconds`` are used; write the summary and each failing case's bytes
    under ``out``. ``out/current.bin`` holds the case running now (what a crash or hang hit)."""
    from gpupipe import ops
    from gpupipe.backends import select_backend
    from gpupipe.spec import Spec

    seeds = sorted(seed_files().items())
    backend = select_backend("cpu", workers=1)
    spec = Spec.single([ops.Thumbnail(size=32)])
    seed_pixels = {name: decode_and_thumbnail(data, backend, spec)[1] for name, data in seeds}
    _limit_address_space(MEMORY_CAP)
    counts: dict[str, int] = {}
    failures = []
    deadline = time.monotonic() + seconds
    number = first = fuzz_first_case()
    while time.monotonic() < deadline:
        name, data = make_case(number, seeds)
        (out / "current.json").write_text(json.dumps({"case": number, "name": name}))
        (out / "current.bin").write_bytes(data)
        error = None
        try:
            outcome, pixels = decode_and_thumbnail(data, backend, spec)
            seed, _, steps = name.partition("+")
            if steps in SHORTENING and outcome == "ok" and cut_decoded_differently(
                    pixels, seed_pixels[seed]):
                outcome, error = "SHORT BUT OK", f"{steps}: decoded as ok to other pixels than the whole file"
        except BaseException as exc:           # anything but an InputError is a finding
            outcome = f"ESCAPED {type(exc).__name__}"
            error = f"{type(exc).__name__}: {exc}"[:300] + "\n" + traceback.format_exc()[-1500:]
        if error:
            (out / f"case-{number}.bin").write_bytes(data)
            failures.append({"case": number, "name": name, "error": error})
        counts[outcome] = counts.get(outcome, 0) + 1
        number += 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    (out / "summary.json").write_text(json.dumps({
        "cases": number - first, "outcomes": counts, "failures": failures, "max_rss_kib": usage.ru_maxrss}))


def _limit_address_space(extra: int) -> None:
    """What the process has mapped now (libraries, thread stacks) plus ``extra``: a case that
    allocates more gets MemoryError, which the test reports, instead of swapping the machine."""
    pages = int(Path("/proc/self/statm").read_text().split()[0])
    limit = pages * os.sysconf("SC_PAGE_SIZE") + extra
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


# ------------------------------------------------------------------------- the tests

@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc to size the memory cap")
def test_mutated_images_only_ever_fail_as_input_errors(tmp_path: Path) -> None:
    seconds = fuzz_seconds()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tests.codecs.test_decoder_fuzz", str(tmp_path), str(seconds)]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=seconds + 60 + CASE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the fuzz child hung on {_current(tmp_path)} (its bytes: {tmp_path / 'current.bin'})")
    assert done.returncode == 0, (
        f"the fuzz child died (exit {done.returncode}) on {_current(tmp_path)} "
        f"(its bytes: {tmp_path / 'current.bin'}):\n{done.stderr[-3000:]}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    report = "\n".join(f"case {f['case']} ({f['name']}): {f['error']}"
                       for f in summary["failures"][:5])
    assert not summary["failures"], (
        f"{len(summary['failures'])} of {summary['cases']} cases raised something other than an "
        f"InputError (bytes kept as {tmp_path}/case-N.bin):\n{report}")
    assert summary["cases"] >= min(1000, 20 * seconds), summary     # thousands in a minute
    assert summary["max_rss_kib"] * 1024 < MEMORY_CAP + (1 << 30), summary
    assert time.monotonic() - started < seconds + 60 + CASE_TIMEOUT_S


def _current(out: Path) -> str:
    try:
        return (out / "current.json").read_text()
    except OSError:
        return "(no case started)"


def _regression_files() -> list[Path]:
    return sorted(p for p in REGRESSIONS.iterdir() if p.name != "README.md")


@pytest.mark.parametrize("path", _regression_files(), ids=lambda p: p.name)
def test_fuzz_regressions_fail_with_their_class(path: Path) -> None:
    """Each file the fuzzer found is named <what>.<error class or ok>.<ext> and gets that outcome
    through decode and a thumbnail (and is listed in the README)."""
    from gpupipe import ops
    from gpupipe.backends import select_backend
    from gpupipe.spec import Spec

    expected = path.name.split(".")[-2]
    assert path.name in (REGRESSIONS / "README.md").read_text(), f"{path.name} is not in the README"
    backend = select_backend("cpu", workers=1)
    try:
        assert run_case(path.read_bytes(), backend, Spec.single([ops.Thumbnail(size=32)])) == expected
    finally:
        backend.close()


def test_every_seed_decodes() -> None:
    """The mutations start from good files: each seed decodes and thumbnails as ok."""
    from gpupipe import ops
    from gpupipe.backends import select_backend
    from gpupipe.spec import Spec

    backend = select_backend("cpu", workers=1)
    try:
        for name, data in seed_files().items():
            assert run_case(data, backend, Spec.single([ops.Thumbnail(size=32)])) == "ok", name
    finally:
        backend.close()


if __name__ == "__main__":
    child_main(Path(sys.argv[1]), float(sys.argv[2]))
