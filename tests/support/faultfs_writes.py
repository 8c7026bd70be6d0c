"""A real FUSE filesystem that mirrors a directory, writable, whose first writes fail on purpose.

    python tests/faultfs_writes.py SOURCE MOUNTPOINT [--fail-writes N] [--fail-fsyncs M] [--fail-closes K]

The first N write() calls to files outside .gpupipe folders (the outputs, not the
run's lock or journal) fail with EIO (a flaky disk or network mount), then writes
succeed; so do the first M fsync() calls of such files (a disk that could not keep
what it was given), and the first K close() calls (flush: a network filesystem reports
a late write error there). Reads are tests/support/faultfs.py's mirror. Used by
tests/engine/test_output_safety.py; needs libfuse2 and fusepy.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from fuse import FUSE, FuseOSError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultfs import FlakyMirror  # noqa: E402


class FlakyWritableMirror(FlakyMirror):
    def __init__(self, root: str, fail_writes: int, fail_fsyncs: int = 0, fail_closes: int = 0) -> None:
        super().__init__(root, fail_reads=0)
        self.fail_writes, self.fail_fsyncs, self.fail_closes = fail_writes, fail_fsyncs, fail_closes
        self.writes_failed = self.fsyncs_failed = self.closes_failed = 0

    def write(self, path, data, offset, fh):
        with self._mutex:
            if self.writes_failed < self.fail_writes and "/.gpupipe/" not in path:
                self.writes_failed += 1
                raise FuseOSError(errno.EIO)
        return os.pwrite(fh, data, offset)

    def create(self, path, mode, fi=None):
        return os.open(self._real(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)

    def mkdir(self, path, mode):
        os.mkdir(self._real(path), mode)

    def rename(self, old, new):
        os.rename(self._real(old), self._real(new))

    def link(self, target, source):          # fusepy: link(new name, existing name)
        os.link(self._real(source), self._real(target))

    def unlink(self, path):
        os.unlink(self._real(path))

    def rmdir(self, path):
        os.rmdir(self._real(path))

    def truncate(self, path, length, fh=None):
        os.truncate(self._real(path), length)

    def fsync(self, path, datasync, fh):
        with self._mutex:
            if self.fsyncs_failed < self.fail_fsyncs and "/.gpupipe/" not in path:
                self.fsyncs_failed += 1
                raise FuseOSError(errno.EIO)
        os.fsync(fh)

    def fsyncdir(self, path, datasync, fh):
        return 0

    def flush(self, path, fh):
        with self._mutex:
            if self.closes_failed < self.fail_closes and "/.gpupipe/" not in path:
                self.closes_failed += 1
                raise FuseOSError(errno.EIO)
        return 0

    def chmod(self, path, mode):
        os.chmod(self._real(path), mode)

    def utimens(self, path, times=None):
        os.utime(self._real(path), times)

    def readlink(self, path):
        return os.readlink(self._real(path))

    def statfs(self, path):
        st = os.statvfs(self._real(path))
        return {key: getattr(st, key) for key in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                  "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("mountpoint")
    parser.add_argument("--fail-writes", type=int, default=1)
    parser.add_argument("--fail-fsyncs", type=int, default=0)
    parser.add_argument("--fail-closes", type=int, default=0)
    args = parser.parse_args()
    FUSE(FlakyWritableMirror(args.source, args.fail_writes, args.fail_fsyncs, args.fail_closes), args.mountpoint,
         foreground=True, direct_io=True)


if __name__ == "__main__":
    main()
