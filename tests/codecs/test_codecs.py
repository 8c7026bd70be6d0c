"""gpupipe.codecs on real files: real codecs, real bad inputs, no mocks."""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from gpupipe import codecs
from gpupipe.errors import (
    CorruptImage,
    EmptyInput,
    ImageTooLarge,
    InputError,
    NotAnImage,
    SystemFailure,
    TruncatedImage,
    UnsupportedFormat,
    UsageError,
)
from gpupipe.sources import read_bytes

from tests.support.badfiles import (
    EXPECTED_ERROR_CLASS,
    bomb_png,
    jpeg_cut_with_eoi,
    make_bad_inputs,
    png_chunk,
    png_with_bad_crc,
    png_with_chunk,
    short_bmp_rle8,
    short_gif,
    short_png,
    short_tiff,
    short_webp,
    with_declared_size,
    zlib_bomb_chunk,
)
from tests.support.corpus import CORPUS
from tests.support import REPO_ROOT

ROOT = REPO_ROOT
EXAMPLES = ROOT / "examples" / "photos"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="photo corpus not available")


def save(im: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


@pytest.fixture(scope="module")
def small() -> Image.Image:
    """A real photo at 225x150 (Landscape_1 decoded at 1/8 scale)."""
    with Image.open(EXAMPLES / "Landscape_1.jpg") as im:
        im.draft("RGB", (225, 150))
        return im.convert("RGB")


@pytest.fixture(scope="module")
def photo_bytes() -> bytes:
    return (EXAMPLES / "Landscape_1.jpg").read_bytes()


def check_contract(d: codecs.Decoded) -> np.ndarray:
    p = d.pixels
    assert p.dtype == np.uint8 and p.ndim == 3 and 1 <= p.shape[2] <= 4
    assert p.flags.c_contiguous and p.flags.writeable
    return p


# --------------------------------------------------------------------------- sniff

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_sniff_names_the_formats_we_read(small: Image.Image, fmt: str) -> None:
    assert codecs.sniff(save(small, fmt)[:64]) == fmt.lower()


def _unsupported_samples(small: Image.Image) -> dict[str, bytes]:
    """Real files of formats we recognise but do not read."""
    from PIL import features
    tiny = small.resize((32, 32))
    samples = {
        "ico": save(tiny, "ICO"),
        "ppm": save(tiny, "PPM"),
        "pgm": save(tiny.convert("L"), "PPM"),
        "pbm": save(tiny.convert("1"), "PPM"),
        "pdf": save(tiny, "PDF"),
        "eps": save(tiny, "EPS"),
        "psd": b"8BPS\x00\x01" + bytes(6) + struct.pack(">HIIHH", 3, 32, 32, 8, 3),
        "svg": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="4"/>',
        "jxl": b"\xff\x0a\xfa\x7f" + bytes(16),
    }
    if features.check("jpg_2000"):
        samples["jp2"] = save(tiny, "JPEG2000")
    return samples                     # HEIC/HEIF and AVIF are read now: tests/codecs/test_heif_avif_dicom.py


def test_sniff_and_decode_name_formats_we_do_not_read(small: Image.Image) -> None:
    for name, data in _unsupported_samples(small).items():
        assert codecs.sniff(data) == name, name
        with pytest.raises(UnsupportedFormat, match=r"unsupported format: \S+"):
            codecs.decode(data)


@pytest.mark.parametrize("head", [
    b"hello world", b"BMW owners club newsletter", b"PK\x03\x04\x14\x00\x00\x00",
    b"\x7fELF\x02\x01\x01\x00", b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2",
    bytes(64), b"",
])
def test_sniff_returns_none_for_non_images(head: bytes) -> None:
    assert codecs.sniff(head) is None


def test_not_an_image_message_never_copies_the_files_bytes() -> None:
    """A text file named .jpg may hold a secret: its message (logged, journaled) says what the
    file is not and how long it is, never what it holds."""
    secret = b"password=hunter2\napi_key=0123456789abcdef\n"
    for data in (secret, b"\x7fELF\x02\x01\x01\x00" + secret, secret.hex().encode()):
        with pytest.raises(NotAnImage) as caught:
            codecs.decode(data)
        message = str(caught.value)
        assert message == f"not an image: no known image signature ({len(data)} bytes)"
        for fragment in (b"password", b"hunter2", b"ELF", b"7f 45", b"70617373"):
            assert fragment.decode() not in message
    with pytest.raises(EmptyInput):
        codecs.decode(b"")


def test_decode_error_messages_never_quote_the_files_bytes(small: Image.Image) -> None:
    """Pillow quotes a malformed chunk type in its message ("broken PNG file (chunk b'...')");
    gpupipe's message says what is wrong without it, for Pillow's errors and for its own."""
    png = save(small, "PNG")
    with pytest.raises(InputError) as caught:
        codecs.decode(png_with_chunk(png, png_chunk(b"pw=1", b"hunter2")))
    assert "pw=1" not in str(caught.value) and "hunter2" not in str(caught.value)
    assert "<bytes>" in str(caught.value)
    renamed = png_with_chunk(png, png_chunk(b"pwRd", b"hunter2"))
    crc_at = renamed.index(b"pwRd") + 4 + len(b"hunter2")
    with pytest.raises(CorruptImage) as caught:
        codecs.decode(renamed[:crc_at] + b"\0\0\0\0" + renamed[crc_at + 4:])
    assert "pwRd" not in str(caught.value)


# ----------------------------------------------------------------- bad inputs

@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_bad_inputs(tmp_path_factory.mktemp("bad"))


MESSAGE_MUST_SAY = {
    "corrupt_jpeg": "corrupt JPEG data",
    "truncated_jpeg": "truncated JPEG",
    "empty_jpg": "empty file",
    "text_named_jpg": "not an image: no known image signature (42 bytes)",
    "broken_symlink": "broken symbolic link",
    "bomb_png": "declared size 20000x20000",
    "unsupported_named_png": "unsupported format: ICO",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_ERROR_CLASS))
def test_each_bad_input_fails_with_its_class_and_a_clear_message(bad: dict[str, Path], kind: str) -> None:
    expected = EXPECTED_ERROR_CLASS[kind]
    try:
        decoded = codecs.decode(read_bytes(bad[kind]))
    except InputError as exc:
        assert exc.error_class == expected, (kind, exc)
        assert MESSAGE_MUST_SAY[kind] in str(exc), str(exc)
    else:
        assert expected is None, f"{kind} decoded but should fail as {expected}"
        assert check_contract(decoded).shape == (150, 225, 3)


def test_bomb_is_refused_from_the_header_without_warnings(bad: dict[str, Path]) -> None:
    data = read_bytes(bad["bomb_png"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # Pillow must not warn before our check
        t0 = time.perf_counter()
        with pytest.raises(ImageTooLarge, match="above the limit of 179.0 megapixels"):
            codecs.decode(data)
        assert time.perf_counter() - t0 < 0.5   # decoding 400 MP would take seconds
        info = codecs.probe(data)
    assert (info.width, info.height, info.mode) == (20000, 20000, "1")
    assert any("above the limit" in p for p in info.problems)


def test_gpupipe_limit_counts_not_pillows(small: Image.Image, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's global MAX_IMAGE_PIXELS neither refuses nor warns first;
    ``max_pixels`` decides, in both directions."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)   # Pillow: warn > 10k, refuse > 20k
    png = save(small, "PNG")                                  # 33 750 px
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(png))                           # what plain Pillow does
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert codecs.decode(png).pixels.shape == (150, 225, 3)
        tiff = save(small.resize((120, 100)), "TIFF")         # 12 000 px: Pillow's warning range
        assert codecs.decode(tiff).pixels.shape == (100, 120, 3)
    with pytest.raises(ImageTooLarge):
        codecs.decode(png, max_pixels=30_000)
    monkeypatch.undo()
    with pytest.raises(ImageTooLarge, match="10000x10000"):
        codecs.decode(bomb_png(10_000, 10_000), max_pixels=50_000_000)


def test_truncated_and_corrupt_files_of_other_formats(small: Image.Image) -> None:
    for fmt in ("PNG", "GIF", "WEBP", "BMP", "TIFF"):
        data = save(small, fmt)
        with pytest.raises(InputError) as info:
            codecs.decode(data[: len(data) // 2])
        assert info.value.error_class == "truncated", (fmt, info.value)
    png = bytearray(save(small, "PNG"))
    png[200:260] = bytes(60)                                 # inside the compressed pixels
    with pytest.raises(CorruptImage):
        codecs.decode(bytes(png))


# ------------------------------------------------- incomplete data (short, not cut)
# Each file's structure is whole (lengths, CRCs, end markers right); only its compressed
# pixel data stops early. Decoders that stop quietly left the missing rows black.

def _short_data_files(small: Image.Image) -> dict[str, bytes]:
    return {
        "png": short_png(small),
        "png_interlaced": short_png(small, interlace=True),
        "png_16bit": _short_png16(small),
        "gif": short_gif(small),
        "bmp_rle8": short_bmp_rle8(small),
        "tiff_raw": short_tiff(small, compression="raw"),
        "tiff_deflate": short_tiff(small, compression="tiff_adobe_deflate"),
        "jpeg": jpeg_cut_with_eoi(save(small, "JPEG")),
        "jpeg_progressive": jpeg_cut_with_eoi(save(small, "JPEG", progressive=True)),
        "jpeg_cmyk": jpeg_cut_with_eoi(save(small.convert("CMYK"), "JPEG")),
    }


def _short_png16(small: Image.Image) -> bytes:
    """A 16-bit RGB PNG (the OpenCV path) whose IDAT holds 40 of its 150 rows."""
    rgb16 = np.asarray(small).astype(">u2") * 257
    raw = b"".join(b"\0" + row.tobytes() for row in rgb16[:40])
    ihdr = struct.pack(">IIBBBBB", 225, 150, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


@pytest.mark.parametrize("kind", ["png", "png_interlaced", "png_16bit", "gif", "bmp_rle8", "tiff_raw",
                                  "tiff_deflate", "jpeg", "jpeg_progressive", "jpeg_cmyk"])
def test_data_shorter_than_the_header_declares_is_truncated(small: Image.Image, kind: str) -> None:
    data = _short_data_files(small)[kind]
    with pytest.raises(TruncatedImage, match="truncated"):
        codecs.decode(data)


def test_short_png_message_counts_the_rows(small: Image.Image) -> None:
    with pytest.raises(TruncatedImage, match=r"holds 45 of the 150 rows its header declares"):
        codecs.decode(short_png(small, 0.3))


def test_a_damaged_deflate_tiff_strip_stays_corrupt(small: Image.Image) -> None:
    """Only a strip that inflates short is truncated; garbage in the stream is corrupt."""
    tiff = bytearray(save(small, "TIFF", compression="tiff_adobe_deflate"))
    offset = Image.open(io.BytesIO(bytes(tiff))).tag_v2[273][0]
    tiff[offset + 40:offset + 400] = bytes(range(256)) + bytes(range(104))
    with pytest.raises(CorruptImage):
        codecs.decode(bytes(tiff))


@pytest.mark.parametrize("kind", ["tiff_lzw", "webp", "webp_lossless"])
def test_short_lzw_tiff_and_webp_fail(small: Image.Image, kind: str) -> None:
    """libtiff and libwebp stop on short data themselves, but Pillow hands on only "decoder
    error" / "failed to read next frame" and no stdlib codec can count an LZW strip or a VP8
    partition, so the class is truncated or corrupt; never ok."""
    data = {"tiff_lzw": lambda: short_tiff(small, compression="tiff_lzw"),
            "webp": lambda: short_webp(save(small, "WEBP")),
            "webp_lossless": lambda: short_webp(save(small, "WEBP", lossless=True))}[kind]()
    with pytest.raises(InputError) as caught:
        codecs.decode(data)
    assert caught.value.error_class in ("truncated", "corrupt")


def test_complete_pngs_with_a_black_last_row_still_decode(small: Image.Image) -> None:
    """The row count is checked when the last row is all zero (as missing rows are): a
    complete image ending in black must pass that check, plain and interlaced."""
    pixels = np.asarray(small).copy()
    pixels[-3:] = 0
    black_bottom = Image.fromarray(pixels)
    for data in (save(black_bottom, "PNG"), short_png(black_bottom, 1.0, interlace=True),
                 save(black_bottom.convert("P"), "PNG"), save(Image.new("L", (7, 5)), "PNG")):
        decoded = codecs.decode(data)
        assert (decoded.pixels[-1] == 0).all()


def test_png_with_a_bad_idat_crc_is_corrupt(small: Image.Image) -> None:
    """PngSuite's xcsn0g01 (one IDAT CRC wrong) decoded with status ok: Pillow checks no IDAT CRC."""
    png = save(small, "PNG")
    with pytest.raises(CorruptImage, match="the CRC of chunk IDAT does not match"):
        codecs.decode(png_with_bad_crc(png))
    with pytest.raises(CorruptImage, match="CRC"):
        codecs.decode(png_with_bad_crc(png, b"IEND"))
    assert codecs.decode(png).pixels.shape == (150, 225, 3)


@pytest.mark.parametrize("kind", [b"iCCP", b"zTXt", b"iTXt"])
def test_png_zlib_chunk_bombs_fail_fast_with_little_memory(small: Image.Image, kind: bytes) -> None:
    """A metadata chunk that inflates to 256 MB: refused by Pillow's text limit within a second,
    without inflating it (the whole decode stays far below the bomb's size)."""
    import resource
    data = png_with_chunk(save(small, "PNG"), zlib_bomb_chunk(kind, 1 << 28))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(CorruptImage, match="zlib bomb"):
        codecs.decode(data)
    assert time.perf_counter() - t0 < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024   # KiB


@pytest.mark.parametrize("fmt", ["JPEG", "JPEG-CMYK", "PNG", "GIF", "WEBP", "WEBP-lossless", "BMP", "TIFF"])
def test_header_bombs_of_every_format_are_refused_before_decoding(small: Image.Image, fmt: str) -> None:
    """A small real file whose header declares 60000x16000 (960 MP): ImageTooLarge with the
    user's limit in the message, from the header, in well under a second, allocating nothing
    near the declared size (WebP was refused by Pillow's own limit, in Pillow's words)."""
    import resource
    image = small.convert("CMYK") if fmt == "JPEG-CMYK" else small
    data = with_declared_size(save(image, fmt.split("-")[0], lossless=fmt.endswith("lossless")),
                              60000, 16000)
    assert codecs.header_size(data) == (60000, 16000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(ImageTooLarge, match=r"declared size 60000x16000 .*\(--max-pixels"):
        codecs.decode(data)
    assert time.perf_counter() - t0 < 0.5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024   # KiB


def test_a_jpeg_too_small_for_its_declared_size_fails_without_decoding(small: Image.Image) -> None:
    """12000x12000 (under the pixel limit) declared by a 3 KB JPEG: libjpeg would decode all
    144 MP of nothing for seconds before failing; every block costs a bit, so it cannot fit."""
    data = with_declared_size(save(small.resize((64, 48)), "JPEG"), 12000, 12000)
    t0 = time.perf_counter()
    with pytest.raises(TruncatedImage, match=r"bytes cannot hold the 12000x12000 image"):
        codecs.decode(data)
    assert time.perf_counter() - t0 < 0.2
    for real in (save(Image.new("L", (4000, 3000)), "JPEG", quality=1),
                 save(Image.new("RGB", (4000, 3000)), "JPEG", quality=1, progressive=True)):
        assert codecs.decode(real).pixels.shape[:2] == (3000, 4000)   # the flattest real JPEGs pass


def test_decodes_refuse_to_run_with_pillows_load_truncated_images_on(
        small: Image.Image, monkeypatch: pytest.MonkeyPatch) -> None:
    """gpupipe never turns the flag on (it is off once gpupipe and its engine are imported);
    if other code in the process does, a Pillow decode refuses instead of keeping a short file."""
    import gpupipe.engine.processes  # noqa: F401  (everything a run imports)
    from PIL import ImageFile
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    png = save(small, "PNG")
    for data in (png, png[:len(png) // 2], save(small, "GIF")):
        with pytest.raises(SystemFailure, match="LOAD_TRUNCATED_IMAGES"):
            codecs.decode(data)


# ----------------------------------------------------------------- orientation

ORIENTATION_FILES = [f"{kind}_{n}.jpg" for kind in ("Landscape", "Portrait") for n in range(9)]


@pytest.fixture(scope="module")
def upright() -> dict[str, np.ndarray]:
    return {kind: codecs.decode((CORPUS / "exif-orientation" / f"{kind}_1.jpg").read_bytes()).pixels
            for kind in ("Landscape", "Portrait")}


@needs_corpus
@pytest.mark.parametrize("name", ORIENTATION_FILES)
def test_exif_orientation_is_applied(name: str, upright: dict[str, np.ndarray]) -> None:
    data = (CORPUS / "exif-orientation" / name).read_bytes()
    d = codecs.decode(data)
    ref = upright[name.split("_")[0]]
    pixels = check_contract(d)
    assert pixels.shape == ref.shape
    diff = np.abs(pixels.astype(np.int16) - ref).mean()
    assert diff < 6, diff                                      # re-encoded copies: ~0.4-3.7
    assert np.abs(pixels[:, ::-1].astype(np.int16) - ref).mean() > 20   # a mirror would not pass
    assert d.orientation == max(1, int(name[-5]))
    assert codecs.probe(data).orientation == d.orientation


@needs_corpus
def test_orientation_with_shrink_on_load_uses_display_size() -> None:
    """Landscape_6 is stored 1200x1800 and shown 1800x1200: a display minimum
    of 450x300 allows 1/4 only if the minimum is swapped for the stored frame."""
    d = codecs.decode((CORPUS / "exif-orientation" / "Landscape_6.jpg").read_bytes(), min_size=(450, 300))
    assert d.scale == 4 and d.stored_size == (1200, 1800)
    assert d.pixels.shape == (300, 450, 3)


# ----------------------------------------------------------------- shrink-on-load

@pytest.mark.parametrize("min_size, scale", [
    (None, 1), ((1800, 1200), 1), ((901, 600), 1), ((900, 600), 2), ((450, 300), 4),
    ((451, 100), 2), ((225, 150), 8), ((64, 64), 8), ((226, 150), 4),
])
def test_shrink_on_load_picks_the_smallest_dct_scale(photo_bytes: bytes, min_size, scale: int) -> None:
    d = codecs.decode(photo_bytes, min_size=min_size)
    assert d.scale == scale and d.stored_size == (1800, 1200)
    h, w = check_contract(d).shape[:2]
    assert (w, h) == (-(-1800 // scale), -(-1200 // scale))
    if min_size:
        assert w >= min_size[0] and h >= min_size[1]


def test_shrunk_decode_looks_like_the_full_decode_resized(photo_bytes: bytes) -> None:
    full = codecs.decode(photo_bytes).pixels
    quarter = codecs.decode(photo_bytes, min_size=(450, 300)).pixels
    ref = cv2.resize(full, (450, 300), interpolation=cv2.INTER_AREA)
    assert np.abs(quarter.astype(np.int16) - ref).mean() < 3


def test_pillow_fallback_shrinks_too(small: Image.Image, photo_bytes: bytes) -> None:
    with Image.open(io.BytesIO(photo_bytes)) as im:
        cmyk = save(im.convert("CMYK"), "JPEG", quality=90)
    d = codecs.decode(cmyk, min_size=(450, 300))
    assert d.scale == 4 and check_contract(d).shape == (300, 450, 3)


# ----------------------------------------------------------------- modes

def test_cmyk_jpeg_becomes_rgb(small: Image.Image) -> None:
    d = codecs.decode(save(small.convert("CMYK"), "JPEG", quality=95))
    p = check_contract(d)
    assert p.shape == (150, 225, 3)
    assert np.abs(p.astype(np.int16) - np.asarray(small)).mean() < 8


def test_cmyk_jpeg_orientation_is_applied_on_the_fallback_path(small: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    d = codecs.decode(save(small.convert("CMYK"), "JPEG", exif=exif.tobytes()))
    assert d.orientation == 6 and d.pixels.shape == (225, 150, 3)


def test_grayscale_and_progressive_jpegs_take_the_hot_path(small: Image.Image) -> None:
    grey = codecs.decode(save(small.convert("L"), "JPEG"))
    assert check_contract(grey).shape == (150, 225, 1)
    prog = codecs.decode(save(small, "JPEG", progressive=True, quality=95))
    assert np.abs(prog.pixels.astype(np.int16) - np.asarray(small)).mean() < 3


def test_palette_png_with_transparency_becomes_rgba(small: Image.Image) -> None:
    pal = small.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    index = pal.getpixel((0, 0))
    p = check_contract(codecs.decode(save(pal, "PNG", transparency=index)))
    assert p.shape == (150, 225, 4)
    assert p[0, 0, 3] == 0 and p[:, :, 3].max() == 255
    opaque = check_contract(codecs.decode(save(pal, "PNG")))
    assert opaque.shape == (150, 225, 3)


def test_la_one_bit_bmp_tiff_webp_gif_modes(small: Image.Image) -> None:
    rgb = np.asarray(small)
    la = small.convert("LA")
    assert check_contract(codecs.decode(save(la, "PNG"))).shape == (150, 225, 2)
    one = check_contract(codecs.decode(save(small.convert("1"), "PNG")))
    assert one.shape == (150, 225, 1) and set(np.unique(one)) <= {0, 255}
    one_bmp = check_contract(codecs.decode(save(small.convert("1"), "BMP")))
    assert np.array_equal(one_bmp, one)
    assert np.array_equal(codecs.decode(save(small, "BMP")).pixels, rgb)
    assert np.array_equal(codecs.decode(save(small, "TIFF", compression="tiff_lzw")).pixels, rgb)
    assert np.array_equal(codecs.decode(save(small, "WEBP", lossless=True)).pixels, rgb)
    rgba = small.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(small.size))
    webp = check_contract(codecs.decode(save(rgba, "WEBP", lossless=True, exact=True)))
    assert np.array_equal(webp, np.asarray(rgba))
    floats = Image.fromarray(np.linspace(0, 1, 150 * 225, dtype=np.float32).reshape(150, 225))
    f = check_contract(codecs.decode(save(floats, "TIFF")))
    assert f.shape == (150, 225, 1) and f[0, 0, 0] == 0 and f[-1, -1, 0] == 255


def test_animated_gif_gives_the_first_frame(small: Image.Image) -> None:
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert codecs.probe(data).frames == 3
    p = check_contract(codecs.decode(data))
    assert p.shape == (30, 40, 3) and tuple(p[10, 10]) == (255, 0, 0)


def test_orientation_in_png_and_tiff(small: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    png = codecs.decode(save(small, "PNG", exif=exif.tobytes()))
    assert png.orientation == 8 and np.array_equal(png.pixels, np.rot90(np.asarray(small), 1))
    tiff = codecs.decode(save(small, "TIFF", tiffinfo={0x0112: 3}))
    assert tiff.orientation == 3 and np.array_equal(tiff.pixels, np.asarray(small)[::-1, ::-1])


def test_probe_reads_the_header_only(small: Image.Image) -> None:
    info = codecs.probe(save(small.convert("P"), "PNG"))
    assert (info.format, info.width, info.height, info.mode, info.frames) == ("png", 225, 150, "P", 1)
    cut = save(small, "PNG")
    assert any("truncated" in p for p in codecs.probe(cut[: len(cut) // 2]).problems)


# ----------------------------------------------------------------- encode

def test_encode_honours_quality(small: Image.Image) -> None:
    pixels = np.asarray(small)
    for fmt in [f for f in codecs.available_formats() if f not in ("png", "tiff")]:   # those two are lossless
        low = codecs.encode(pixels, format=fmt, quality=50)
        high = codecs.encode(pixels, format=fmt, quality=95)
        assert len(low) < len(high), fmt
        with Image.open(io.BytesIO(high)) as im:
            assert im.size == (225, 150) and im.format == fmt.upper()


def test_webp_round_trips_with_its_size_and_alpha(small: Image.Image) -> None:
    rgba = np.dstack([np.asarray(small), np.full((150, 225), 200, np.uint8)])
    back = codecs.decode(codecs.encode(rgba, format="webp", quality=90))
    assert back.pixels.shape == (150, 225, 4) and back.pixels[:, :, 3].min() >= 190
    grey = codecs.decode(codecs.encode(np.asarray(small.convert("L")), format="webp"))
    assert grey.pixels.shape == (150, 225, 3)


def test_jpeg_flattens_alpha_onto_the_background() -> None:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 255                          # red everywhere ...
    rgba[:, 16:, 3] = 255                       # ... opaque on the right, transparent on the left
    data = codecs.encode(rgba, format="jpeg", quality=95, background=(0, 0, 255))
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGB"
    out = codecs.decode(data).pixels.astype(int)
    assert np.abs(out[16, 4] - (0, 0, 255)).max() <= 3       # transparent -> background
    assert np.abs(out[16, 28] - (255, 0, 0)).max() <= 3      # opaque -> colour
    la = np.dstack([np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)])
    grey = codecs.decode(codecs.encode(la, format="jpeg"))   # transparent black on white
    assert grey.pixels.shape == (8, 8, 1) and grey.pixels.min() >= 252


def test_flatten_blends_in_float_and_rounds() -> None:
    px = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [0, 0, 0, 128], [200, 100, 50, 64]]], np.uint8)
    out = codecs._flatten(px, (255, 255, 255))
    a = 64 / 255
    assert out.tolist()[0][:3] == [[255] * 3, [0] * 3, [127] * 3]
    assert out[0, 3].tolist() == [round(c * a + 255 * (1 - a)) for c in (200, 100, 50)]


def test_png_is_lossless_for_every_channel_count(small: Image.Image) -> None:
    rgb = np.asarray(small)
    for pixels in (rgb[:, :, :1], np.ascontiguousarray(rgb[:, :, :2]), rgb,
                   np.dstack([rgb, rgb[:, :, :1]])):
        back = codecs.decode(codecs.encode(pixels, format="png"))
        assert np.array_equal(back.pixels, pixels)


@needs_corpus
def test_icc_profile_is_kept_and_other_metadata_dropped() -> None:
    d = codecs.decode((CORPUS / "pillow" / "flower2.jpg").read_bytes())
    assert d.icc_profile and d.icc_profile[16:20] == b"RGB "
    for fmt in codecs.available_formats():
        data = codecs.encode(d.pixels, format=fmt, icc_profile=d.icc_profile)
        with Image.open(io.BytesIO(data)) as im:
            assert im.info.get("icc_profile") == d.icc_profile, fmt
            assert not im.info.get("exif"), fmt
    # A colour profile does not describe grey pixels: it is not written.
    grey = codecs.encode(d.pixels[:, :, :1].copy(), format="jpeg", icc_profile=d.icc_profile)
    with Image.open(io.BytesIO(grey)) as im:
        assert "icc_profile" not in im.info
    tagged = codecs.decode((CORPUS / "exif-orientation" / "Landscape_6.jpg").read_bytes())
    with Image.open(io.BytesIO(codecs.encode(tagged.pixels, format="jpeg"))) as im:
        assert not im.getexif()


def test_format_names() -> None:
    for name in ("jpg", "JPEG", ".jpeg", "Jpe", "jfif"):
        assert codecs.normalise_format(name) == "jpeg"
    assert codecs.normalise_format("PNG") == "png"
    assert {"jpeg", "png"} <= set(codecs.available_formats())
    assert codecs.extension_for("jpeg") == "jpg" and codecs.extension_for("webp") == "webp"
    with pytest.raises(UsageError, match="unknown output format 'tga'.*jpeg \\(jpg\\), png"):
        codecs.normalise_format("tga")


def test_encode_rejects_bad_arguments(small: Image.Image) -> None:
    pixels = np.asarray(small)
    for quality in (0, 101, 2.5):
        with pytest.raises(UsageError, match="quality"):
            codecs.encode(pixels, format="jpeg", quality=quality)
    with pytest.raises(UsageError, match="uint8"):
        codecs.encode(pixels.astype(np.float32), format="png")
    with pytest.raises(UsageError, match="HxWxC"):
        codecs.encode(np.zeros((4, 4, 5), np.uint8), format="png")


def test_pil_to_array_normalises_modes(small: Image.Image) -> None:
    assert codecs.pil_to_array(small.convert("P")).shape == (150, 225, 3)
    assert codecs.pil_to_array(small.convert("CMYK")).shape == (150, 225, 3)
    assert codecs.pil_to_array(small.convert("L")).shape == (150, 225, 1)


def test_tiff_orientation_is_applied_once(small: Image.Image) -> None:
    """Pillow's TIFF loader turns the image itself; decode must not turn it again."""
    for orientation, expected in ((6, np.rot90(np.asarray(small), -1)), (2, np.asarray(small)[:, ::-1])):
        data = save(small, "TIFF", tiffinfo={0x0112: orientation})
        d = codecs.decode(data)
        assert d.orientation == orientation and d.stored_size == (225, 150)
        assert np.array_equal(d.pixels, expected)
        assert (codecs.probe(data).width, codecs.probe(data).height) == (225, 150)


def test_junk_before_the_end_marker_is_harmless(photo_bytes: bytes) -> None:
    """Camera files often carry bytes between the last scan and EOI; libjpeg's
    strict mode calls that corrupt, but every pixel was decoded."""
    junk = photo_bytes[:-2] + b"written by some camera firmware" * 4 + b"\xff\xd9"
    clean = codecs.decode(photo_bytes).pixels
    assert np.array_equal(codecs.decode(junk).pixels, clean)
    trailing = photo_bytes + b"an appended thumbnail or trailer"
    assert np.array_equal(codecs.decode(trailing).pixels, clean)


@needs_corpus
def test_min_size_may_depend_on_the_upright_size(small: Image.Image, photo_bytes: bytes) -> None:
    """The engine passes Spec.decode_hint: a function of the upright (w, h)."""
    asked = []

    def hint(w: int, h: int) -> tuple[int, int]:
        asked.append((w, h))
        return w // 4, h // 4

    d = codecs.decode((CORPUS / "exif-orientation" / "Landscape_6.jpg").read_bytes(), min_size=hint)
    assert asked == [(1800, 1200)] and d.scale == 4 and d.pixels.shape == (300, 450, 3)
    assert codecs.decode(save(small, "PNG"), min_size=hint).scale == 1      # not a JPEG: full size
    assert codecs.decode(photo_bytes, min_size=lambda w, h: None).scale == 1


MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x01\x00\x00WEBPVP8 ",
          b"II*\x00", b"MM\x00*", b"BM\x00\x01\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00", b""]


@settings(max_examples=60, deadline=None)
@given(magic=st.sampled_from(MAGICS), tail=st.binary(max_size=300))
def test_garbage_after_a_signature_is_an_input_error_never_a_crash(magic: bytes, tail: bytes) -> None:
    data = magic + tail
    for call in (codecs.decode, codecs.probe):
        try:
            call(data)
        except InputError:
            pass


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(min_value=0, max_value=5000), flips=st.lists(st.integers(0, 4999), max_size=8))
def test_damaged_real_files_fail_cleanly(small: Image.Image, cut: int, flips: list[int]) -> None:
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "TIFF"):
        data = bytearray(_SAVED.setdefault(fmt, save(small.resize((60, 40)), fmt)))
        for i in flips:
            if i < len(data):
                data[i] ^= 0x5A
        try:
            d = codecs.decode(bytes(data[: len(data) - cut % len(data)]))
        except InputError:
            continue
        check_contract(d)


_SAVED: dict[str, bytes] = {}


def test_a_run_stops_cleanly_when_pillow_would_keep_truncated_images(
        small: Image.Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal above is the run's one message and a clean stop, not an internal error per file."""
    import gpupipe
    from gpupipe import ops
    from PIL import ImageFile
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(4):
        (inputs / f"{i}.png").write_bytes(save(small, "PNG"))
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    result = gpupipe.run(inputs, tmp_path / "out", [ops.Thumbnail(16)], backend="cpu", journal=False)
    assert result.exit_code == 1 and "LOAD_TRUNCATED_IMAGES" in result.summary.stop_reason
    assert not result.summary.failures_by_class.get("internal")
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"])
def test_a_file_cut_inside_its_header_is_truncated(small: Image.Image, fmt: str) -> None:
    """16 bytes of a real file: the format is known, the header is not all there."""
    with pytest.raises(TruncatedImage):
        codecs.decode(save(small, fmt)[:16])
