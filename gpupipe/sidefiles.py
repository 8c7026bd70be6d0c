"""The files gpupipe reads and writes besides inputs and outputs.

Side files written (``--report``, ``--log``, ``--trace``, ``--metrics-file``) go
through ``SideFile``: a regular file (or a new one) is written to a temporary in
the same directory and renamed into place, so a reader never sees half of it;
a FIFO, a character device or a symlink is written straight through, so the
special file or the link is never replaced; ``-`` is standard output. A write
error (a full disk) does not stop the run: the side file is dropped and
``close`` says what happened.

Resource files read (``--spec``, watermark images and fonts) go through
``read_resource``: they must be regular files, and are opened non-blocking so a
FIFO swapped in after the check cannot hang the run.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path
from typing import TextIO

from .errors import SystemFailure, UsageError

log = logging.getLogger("gpupipe")

STDOUT = "-"
HELD_BYTES = 64 * 1024         # held in memory before the first write (see SideFile)
_NAME_MAX = 255


def printable(text: str) -> str:
    """``text`` safe to print anywhere: the bytes of a name that is not UTF-8 as \\xNN escapes,
    control characters (a newline in a file name) escaped too, never a UnicodeEncodeError."""
    raw = _fsencode(text) if isinstance(text, str) else bytes(text)
    decoded = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in decoded)


def _fsencode(text: str) -> bytes:
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:          # a surrogate that is no escaped byte: keep it visible
        return text.encode("utf-8", "backslashreplace")


class SideFile:
    """One side file, opened before any work (problems are a UsageError then), written as the run goes.

    ``write`` never raises: the first OSError is kept, the file is dropped and later writes are
    ignored; ``close`` then raises SystemFailure with it. ``abandon`` drops the file quietly.
    The first 64 KB are held in memory, so a run that never starts (a usage error found later)
    writes nothing into a FIFO or stdout and leaves a link's target as it was.
    """

    def __init__(self, path: str | os.PathLike, option: str) -> None:
        self.option = option
        self.path = Path(path)
        self.error: OSError | None = None
        self._tmp: Path | None = None
        self._file: TextIO | None = None
        self._owned = True
        self._held: list[str] | None = []          # None once the file is being written
        self._held_size = 0
        self._truncate = False                      # a link's regular target: emptied at the first write
        if str(path) == STDOUT:
            self._file, self._owned = sys.stdout, False
            return
        try:
            self._open()
        except OSError as exc:
            raise UsageError(f"{option} {printable(str(self.path))}: cannot write it: "
                             f"{exc.strerror or exc}") from None

    def _open(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{self.option} {printable(str(self.path))} is a directory; give a file name")
        if st is not None and stat.S_ISBLK(st.st_mode):
            raise UsageError(f"{self.option} {printable(str(self.path))} is a block device; give a file name")
        if st is None or stat.S_ISREG(st.st_mode):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self._temporary_name()
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        else:
            # FIFO, character device (/dev/stdout, /dev/null) or symlink: write through, replace nothing.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                os.close(fd)
                raise UsageError(f"{self.option} {printable(str(self.path))} leads to a directory")
            self._truncate = stat.S_ISREG(mode)
        # JSON written with ensure_ascii is ASCII; backslashreplace keeps anything else from raising.
        self._file = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace")

    def _temporary_name(self) -> Path:
        token = os.urandom(4).hex()      # secrets.token_hex(4), without loading secrets (2 ms)
        stem = os.fsencode(self.path.name)[:_NAME_MAX - 32]
        return self.path.with_name(f".{os.fsdecode(stem)}.{token}.tmp")

    def write(self, text: str) -> None:
        if self._file is None:
            return
        if self._held is not None:
            self._held.append(text)
            self._held_size += len(text)
            if self._held_size < HELD_BYTES:
                return
        try:
            self._file.write(self._release() if self._held is not None else text)
        except OSError as exc:
            self._fail(exc)

    def _release(self) -> str:
        """Stop holding: the held text, to be written now (a link's target emptied first)."""
        held, self._held = "".join(self._held or ()), None
        if self._truncate:
            os.ftruncate(self._file.fileno(), 0)
        return held

    def _fail(self, exc: OSError) -> None:
        self.error = self.error or exc
        self._drop()

    def _drop(self) -> None:
        file, self._file = self._file, None
        if file is not None and self._owned:
            try:
                file.close()
            except OSError:
                pass            # the buffered rest cannot be written either: the error is already kept
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                log.warning("could not remove %s's temporary %s", self.option, printable(str(tmp)))

    def close(self) -> None:
        """Finish the file (flush, fsync and rename a temporary into place).
        Raises SystemFailure if any write failed; the target is then left as it was."""
        if self._file is not None and self._held is not None:
            try:
                self._file.write(self._release())
            except OSError as exc:
                self._fail(exc)
        file, self._file = self._file, None
        if file is not None:
            try:
                file.flush()
                if self._owned:
                    if self._tmp is not None:
                        os.fsync(file.fileno())
                    file.close()
                    if self._tmp is not None:
                        os.rename(self._tmp, self.path)
                        self._tmp = None
            except OSError as exc:
                self._file = file
                self._fail(exc)
        if self.error is not None:
            raise SystemFailure(self.failure_message())

    def failure_message(self) -> str:
        error = self.error
        why = (error.strerror or str(error)) if error else "unknown error"
        return f"cannot write {self.option} {printable(str(self.path))}: {why}"

    def abandon(self) -> None:
        """Drop the file: a temporary is removed, the target left as it was."""
        self._held = None
        self._drop()


def read_resource(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of a file gpupipe reads besides inputs (a spec, a watermark image or font).

    It must be a regular file: checked before opening, and the open is non-blocking, so a FIFO
    (or a device) never blocks the run. Anything else is a UsageError that says what to give."""
    shown = printable(os.fspath(path) if not isinstance(path, bytes) else os.fsdecode(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{what} {shown} does not exist") from None
    except OSError as exc:
        raise UsageError(f"{what} {shown} cannot be read: {exc.strerror or exc}") from None
    _require_regular(st, what, shown)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"{what} {shown} cannot be read: {exc.strerror or exc}") from None
    try:
        _require_regular(os.fstat(fd), what, shown)      # swapped for a FIFO between stat and open
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read()
    except OSError as exc:
        raise UsageError(f"{what} {shown} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _require_regular(st: os.stat_result, what: str, shown: str) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
            else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
    raise UsageError(f"{what} {shown} is {kind}; give a regular file")
