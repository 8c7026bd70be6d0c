"""Hostile inputs for whole runs, made here from a real photo: every format gpupipe reads,
broken in each way a file can be, under names and in places that have broken runs before.

``build(directory)`` writes them and returns the ``Expected`` outcome of each input path
(bytes, since some names are not UTF-8): its status and error class, or that the scan
reports it as a problem instead of taking it as an input.
"""

from __future__ import annotations

import io
import os
import socket
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tests.support.badfiles import PHOTO, bomb_png, corrupt_jpeg

FORMATS = {"jpeg": ".jpg", "png": ".png", "gif": ".gif", "webp": ".webp", "tiff": ".tif", "bmp": ".bmp"}
SECRET = b"password=hunter2"          # must never reach a message, a log or the journal


@dataclass(frozen=True)
class Expected:
    status: str                       # ok | failed | skipped | scan-problem
    error_class: str | None = None
    or_class: str | None = None       # a second class the file may equally be said to have (see its note)

    def matches(self, status: str, error_class: str | None) -> bool:
        return status == self.status and error_class in (self.error_class, self.or_class)


OK = Expected("ok")


def walk(root: Path | bytes, skip: bytes | None = None):
    """(path, lstat) of every entry below ``root`` as bytes, without recursion (os.walk recurses
    before Python 3.12, and these trees are deeper than its limit); ``skip`` is not entered."""
    stack = [os.fsencode(root)]
    while stack:
        top = stack.pop()
        for name in os.listdir(top):
            path = os.path.join(top, name)
            st = os.lstat(path)
            yield path, st
            if stat.S_ISDIR(st.st_mode) and path != skip:
                stack.append(path)


def remove_tree(root: Path | bytes) -> None:
    """rm -rf without recursion: pytest's own clean-up of old temporary folders (shutil.rmtree,
    recursive before Python 3.12) would die on the deep trees these tests make."""
    root = os.fsencode(root)
    if not os.path.lexists(root):
        return
    stack = [(root, False)]
    while stack:
        path, emptied = stack.pop()
        if emptied:
            os.rmdir(path)
            continue
        stack.append((path, True))
        for name in os.listdir(path):
            child = os.path.join(path, name)
            if stat.S_ISDIR(os.lstat(child).st_mode):
                stack.append((child, False))
            else:
                os.unlink(child)


def small_photo(size: tuple[int, int] = (48, 32)) -> Image.Image:
    with Image.open(PHOTO) as im:
        im.draft("RGB", (im.width // 8, im.height // 8))
        return im.convert("RGB").resize(size)


def encoded(fmt: str, image: Image.Image | None = None) -> bytes:
    buf = io.BytesIO()
    (image or small_photo()).save(buf, fmt.upper())
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_chunk(png: bytes, chunk: bytes) -> bytes:
    """``chunk`` inserted right after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    return png[:33] + chunk + png[33:]


def zlib_bomb(size: int) -> bytes:
    """A zlib stream of ``size`` zero bytes (about a thousandth of that), made a MB at a time."""
    z, block = zlib.compressobj(9), b"\0" * (1 << 20)
    return b"".join([z.compress(block) for _ in range(size >> 20)] + [z.flush()])


def declared_size(fmt: str, data: bytes, width: int, height: int) -> bytes:
    """``data`` with its header claiming ``width`` x ``height`` (a header bomb: tiny file, huge image)."""
    if fmt == "png":
        return bomb_png(width, height)
    if fmt == "jpeg":
        sof = data.index(b"\xff\xc0")
        return data[:sof + 5] + struct.pack(">HH", height, width) + data[sof + 9:]
    if fmt == "gif":
        return data[:6] + struct.pack("<HH", width, height) + data[10:]
    if fmt == "bmp":
        return data[:18] + struct.pack("<ii", width, height) + data[26:]
    if fmt == "webp":          # VP8 frame header: 14-bit sizes after the start code
        start = data.index(b"\x9d\x01\x2a")
        return data[:start + 3] + struct.pack("<HH", width & 0x3FFF, height & 0x3FFF) + data[start + 7:]
    if fmt == "tiff":
        buf = io.BytesIO()
        small_photo().save(buf, "TIFF", compression="tiff_lzw")
        raw = bytearray(buf.getvalue())
        order = "<" if raw[:2] == b"II" else ">"
        ifd = struct.unpack_from(order + "I", raw, 4)[0]
        for i in range(struct.unpack_from(order + "H", raw, ifd)[0]):
            entry = ifd + 2 + 12 * i
            tag, kind = struct.unpack_from(order + "HH", raw, entry)
            if tag in (256, 257):
                value = width if tag == 256 else height
                if kind == 3:
                    struct.pack_into(order + "H", raw, entry + 8, min(value, 65535))
                else:
                    struct.pack_into(order + "I", raw, entry + 8, value)
        return bytes(raw)
    raise ValueError(fmt)


def build(root: Path) -> dict[bytes, Expected]:
    """Write the hostile corpus under ``root`` (made here); {input path as bytes: expected outcome}."""
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[bytes, Expected] = {}

    def put(relative: str | bytes, data: bytes, outcome: Expected) -> bytes:
        path = os.path.join(os.fsencode(root), os.fsencode(relative))
        folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in os.fsencode(relative).split(b"/")[:-1]:     # mkdir -p without recursion
                try:
                    os.mkdir(part, dir_fd=folder)
                except FileExistsError:
                    pass
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=folder)
                os.close(folder)
                folder = inner
            fd = os.open(os.path.basename(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=folder)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        finally:
            os.close(folder)
        expected[path] = outcome
        return path

    for fmt, ext in FORMATS.items():
        good = encoded(fmt)
        put(f"formats/{fmt}/good{ext}", good, OK)
        put(f"formats/{fmt}/empty{ext}", b"", Expected("failed", "empty"))
        put(f"formats/{fmt}/cut-to-16-bytes{ext}", good[:16], Expected("failed", "truncated"))
        put(f"formats/{fmt}/header-bomb{ext}", declared_size(fmt, good, 60_000, 60_000),
            Expected("failed", "too_large"))
        other = "png" if fmt != "png" else "jpeg"
        put(f"formats/{fmt}/really-{other}{ext}", encoded(other), OK)      # content wins over the name
    big = encoded("jpeg", small_photo((480, 320)))
    put("formats/jpeg/truncated.jpg", big[:len(big) // 2], Expected("failed", "truncated"))
    # Random entropy-coded data runs out before the last block, as a file cut short does: libjpeg
    # says "premature end of data segment" for both, so either class is right.
    put("formats/jpeg/garbage-data.jpg", corrupt_jpeg(big), Expected("failed", "corrupt", or_class="truncated"))
    dht = big.index(b"\xff\xc4")
    put("formats/jpeg/bad-huffman-table.jpg", big[:dht + 5] + b"\xff" * 16 + big[dht + 21:],
        Expected("failed", "corrupt"))
    png = encoded("png", small_photo((480, 320)))
    put("formats/png/truncated.png", png[:len(png) // 2], Expected("failed", "truncated"))
    bad_crc = bytearray(png)
    bad_crc[-13] ^= 0xFF                                   # the last IDAT chunk's CRC
    put("formats/png/bad-idat-crc.png", bytes(bad_crc), Expected("failed", "corrupt"))
    # zlib bombs in metadata chunks: a few KB that inflate to 256 MB.
    bomb = zlib_bomb(256 << 20)
    put("formats/png/ztxt-bomb.png", png_with_chunk(png, png_chunk(b"zTXt", b"Comment\0\0" + bomb)),
        Expected("failed", "corrupt"))
    put("formats/png/iccp-bomb.png", png_with_chunk(png, png_chunk(b"iCCP", b"icc\0\0" + bomb)),
        Expected("failed", "corrupt"))
    put("formats/notes.jpg", b"db host=example\n" + SECRET + b"\n", Expected("failed", "not_an_image"))

    good = encoded("jpeg")
    put(b"names/caf\xe9.jpg", good, OK)                    # Latin-1: not valid UTF-8
    put(b"names/" + b"n" * 251 + b".jpg", good, OK)        # a 255-byte name
    put("names/line\nbreak.jpg", good, OK)
    put("names/-dash.jpg", good, OK)
    put("names/ spaces .jpg", good, OK)
    put(b"names/\xff\xfe/inside.jpg", good, OK)             # a folder whose name is not UTF-8
    deep = "/".join(["d"] * 1500)                          # deeper than Python's recursion limit
    put(f"deep/{deep}/bottom.jpg", good, OK)
    for i in range(300):
        put(f"wide/{i:03d}.jpg", good, OK)

    special = os.path.join(os.fsencode(root), b"special")
    os.makedirs(special, exist_ok=True)
    os.mkfifo(os.path.join(special, b"fifo.jpg"))
    expected[os.path.join(special, b"fifo.jpg")] = Expected("skipped")
    os.mknod(os.path.join(special, b"device.png"), stat.S_IFCHR | 0o600, os.makedev(1, 3))   # like /dev/null
    expected[os.path.join(special, b"device.png")] = Expected("skipped")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(os.path.join(special, b"socket.png"))
    sock.close()
    expected[os.path.join(special, b"socket.png")] = Expected("skipped")
    os.symlink(b"nowhere.jpg", os.path.join(special, b"dangling.jpg"))
    expected[os.path.join(special, b"dangling.jpg")] = Expected("failed", "unreadable")
    os.symlink(b"loop-b.jpg", os.path.join(special, b"loop-a.jpg"))
    os.symlink(b"loop-a.jpg", os.path.join(special, b"loop-b.jpg"))
    expected[os.path.join(special, b"loop-a.jpg")] = Expected("scan-problem")
    expected[os.path.join(special, b"loop-b.jpg")] = Expected("scan-problem")
    os.symlink(b"..", os.path.join(special, b"up"))         # a link back up the tree: walked once at most
    return expected


def make_unreadable(root: Path) -> dict[bytes, Expected]:
    """A file and a folder nobody may read (only denied to a process without root's DAC override)."""
    expected = {}
    locked = os.path.join(os.fsencode(root), b"locked")
    os.makedirs(locked)
    denied_file = os.path.join(locked, b"denied.jpg")
    with open(denied_file, "wb") as f:
        f.write(encoded("jpeg"))
    os.chmod(denied_file, 0)
    expected[denied_file] = Expected("failed", "unreadable")
    denied_dir = os.path.join(locked, b"closed")
    os.makedirs(denied_dir)
    with open(os.path.join(denied_dir, b"hidden-inside.jpg"), "wb") as f:
        f.write(encoded("jpeg"))
    os.chmod(denied_dir, 0)
    expected[denied_dir] = Expected("scan-problem")
    return expected
