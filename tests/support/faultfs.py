"""A real FUSE filesystem that mirrors a directory and fails reads on purpose.

    python tests/support/faultfs.py SOURCE MOUNTPOINT [--fail-reads N] [--hang NAME]

Each file's first N reads fail with EIO (a flaky disk or network mount), then
reads succeed; reads of NAME never return (a dead network mount). direct_io keeps the kernel's page cache out of the way, so every
read() reaches this process. Used by tests/engine/test_faults.py; needs libfuse2 and fusepy.
"""

from __future__ import annotations

import argparse
import errno
import os
import threading

from fuse import FUSE, FuseOSError, Operations


class FlakyMirror(Operations):
    def __init__(self, root: str, fail_reads: int, hang: str | None = None) -> None:
        self.root = root
        self.fail_reads = fail_reads
        self.hang = hang
        self._failed: dict[str, int] = {}
        self._mutex = threading.Lock()        # not "lock": that name is a FUSE operation

    def _real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def getattr(self, path, fh=None):
        st = os.lstat(self._real(path))
        return {key: getattr(st, key) for key in ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime",
                                                  "st_nlink", "st_size", "st_uid")}

    def readdir(self, path, fh):
        return [".", "..", *os.listdir(self._real(path))]

    def open(self, path, flags):
        return os.open(self._real(path), flags)

    def read(self, path, size, offset, fh):
        if self.hang and path.lstrip("/") == self.hang:
            threading.Event().wait()              # never returns
        with self._mutex:
            failed = self._failed.get(path, 0)
            if failed < self.fail_reads:
                self._failed[path] = failed + 1
                raise FuseOSError(errno.EIO)
        return os.pread(fh, size, offset)

    def release(self, path, fh):
        os.close(fh)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("mountpoint")
    parser.add_argument("--fail-reads", type=int, default=1)
    parser.add_argument("--hang")
    args = parser.parse_args()
    FUSE(FlakyMirror(args.source, args.fail_reads, args.hang), args.mountpoint, foreground=True, direct_io=True)


if __name__ == "__main__":
    main()
