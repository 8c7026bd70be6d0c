"""Atomic output files: temporary name in the target directory, fsync, rename.

A crash or Ctrl+C therefore never leaves a half-written file under a final
name. Temporary names are hidden (leading dot) and registered while they
exist, so an aborted run can remove every one it made.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import uuid
from pathlib import Path

from ..errors import SystemFailure, UsageError, WriteError

# Errors that say the output *side* is broken, not this one file: stop the run.
SYSTEM_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}

_live_temporaries: set[str] = set()
_lock = threading.Lock()
_aborting = threading.Event()      # set by a hard abort: no new temporary may appear


def check_output_dir(output: Path) -> None:
    """UsageError (exit 2, before any work) when OUT cannot be a directory we write into."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} exists and is not a directory")
    parent = next((p for p in (output, *output.parents) if p.exists()), None)
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"output {output} cannot be created or written: {parent} is not writable")


def write_atomic(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent, old, or complete."""
    tmp = path.parent / f".{path.name}.gpupipe-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    with _lock:
        if _aborting.is_set():
            raise SystemFailure("the run was aborted")
        _live_temporaries.add(str(tmp))
    try:
        try:
            _ensure_directory(path.parent)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:          # the folder was removed since we made it
                _made_directories.discard(str(path.parent))
                _ensure_directory(path.parent)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            _remove(tmp)
            if exc.errno in SYSTEM_ERRNOS:
                raise SystemFailure(f"cannot write to {path.parent}: {os.strerror(exc.errno)}") from exc
            if exc.errno == errno.EACCES and not os.access(path.parent, os.W_OK):
                raise SystemFailure(f"cannot write to {path.parent}: permission denied") from exc
            raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
        except BaseException:
            _remove(tmp)
            raise
    finally:
        with _lock:
            _live_temporaries.discard(str(tmp))


_made_directories: set[str] = set()


def _ensure_directory(directory: Path) -> None:
    """mkdir -p, remembered: thousands of outputs share a handful of folders. The first
    time a run writes into a folder it also clears temporaries a killed run left there."""
    key = str(directory)
    if key not in _made_directories:
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(directory)
        _made_directories.add(key)


_TEMPORARY = re.compile(r"^\..+\.gpupipe-(\d+)-[0-9a-f]{8}\.tmp$")


def remove_stale_temporaries(directory: Path) -> int:
    """Delete temporaries of gpupipe processes that no longer exist (e.g. killed with SIGKILL)."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        match = _TEMPORARY.match(name)
        if match and int(match.group(1)) != os.getpid() and not _process_alive(int(match.group(1))):
            _remove(directory / name)
            removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # alive, someone else's
        return True
    return True


def _remove(tmp: Path) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def allow_writes() -> None:
    """A new run may write again after an earlier one was aborted (same process)."""
    _aborting.clear()


def remove_live_temporaries() -> int:
    """Hard abort: no new temporaries from now on; delete those of writes in progress."""
    with _lock:
        _aborting.set()
        pending = list(_live_temporaries)
    for name in pending:
        _remove(Path(name))
    return len(pending)
