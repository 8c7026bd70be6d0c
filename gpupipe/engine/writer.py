"""Output files: written under a short temporary name, fsynced, then put in place.

A crash or Ctrl+C therefore never leaves a half-written file under a final
name. Temporary names are hidden, short and fixed in length (a final name of
255 bytes still has room for one) and registered while they exist, so an
aborted run can remove every one it made.

Below OUT nothing is followed: every folder is entered with a directory fd
opened O_NOFOLLOW, temporaries are created O_EXCL|O_NOFOLLOW relative to it,
and put in place with linkat/renameat, so a symlink planted anywhere below OUT
fails that one output instead of sending it elsewhere. Paths are walked one
component at a time, so no depth of folders needs recursion or a long path.

A file already at an output path is replaced only when the run may replace it
(``--overwrite``, or the journal recorded writing it); otherwise the
temporary is hard-linked to the final name, which fails if anything appeared
there meanwhile, and the input fails as ``output_exists``, keeping the file. A
file there that already holds exactly the bytes to write is that output (a run
killed after writing it, before its journal committed): kept, and the write is
done.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import os
import re
import stat
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from .. import digests
from ..errors import OutputExists, SystemFailure, UsageError, WriteError
from ..records import dataclass
from .tuning import libc

# Errors that say the output *side* is broken, not this one file: stop the run.
SYSTEM_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}
# linkat refused by the filesystem itself (FAT, some FUSE and network filesystems).
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_live_temporaries: set[str] = set()
_lock = threading.Lock()
_aborting = threading.Event()      # set by a hard abort: no new temporary may appear


# Locks held by the run's own process (OutputLock, the journal's): a worker process forked from it
# closes its copies first thing (close_parent_only_fds), so a worker outliving the run never
# keeps OUT or the journal locked.
_parent_only_fds: set[int] = set()


def parent_only(fd: int) -> int:
    _parent_only_fds.add(fd)
    return fd


def forget_parent_only(fd: int) -> None:
    _parent_only_fds.discard(fd)


def close_parent_only_fds() -> None:
    """In a forked worker: close the run's lock fds (the parent's locks stay held)."""
    for fd in list(_parent_only_fds):
        try:
            os.close(fd)
        except OSError:
            pass
    _parent_only_fds.clear()


# ---------------------------------------------------------------------- before the run

def check_output_dir(output: Path, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """UsageError (exit 2, before any work) when OUT cannot be a directory we write into,
    or is one of the input folders (its outputs would land among the originals)."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} exists and is not a directory")
    parent = next((p for p in (output, *output.parents) if p.exists()), None)
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"output {output} cannot be created or written: {parent} is not writable")
    real = os.path.realpath(output)
    for folder in _input_folders(inputs):
        if os.path.realpath(folder) == real:
            raise UsageError(f"output {output} is the input folder {folder}: outputs would be written among "
                             "the originals (and the scan skips the output folder, so nothing would be done); "
                             f"choose another output directory, e.g. -o {folder.rstrip('/')}-out")


def _input_folders(inputs: Iterable[str | os.PathLike]) -> list[str]:
    """The folders the inputs walk: directories, and the leading folder of each glob pattern."""
    from .. import sources
    folders = []
    for raw in inputs:
        text = os.fsdecode(raw)
        if os.path.isdir(text):
            folders.append(text)
        elif not os.path.lexists(text) and sources._is_glob(text):
            folders.append(sources._split_glob(text)[0])
    return folders


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


@dataclass(frozen=True)
class WritePolicy:
    """What a run's writes may do: a plain value, so Ray tasks write by the same rules.

    ``root`` is OUT's real path, resolved once at the start (the one symlink ever followed).
    ``inputs`` are the real paths of input folders and files that lie inside OUT: never
    written, even with ``overwrite`` (an input folder inside OUT is how a run replaced the
    user's originals). Folders containing OUT need no entry: the scan never enters OUT."""

    root: str
    overwrite: bool = False
    inputs: tuple[str, ...] = ()
    retries: int = 3
    retry_delay: float = 0.1

    @classmethod
    def for_run(cls, inputs: Iterable[str | os.PathLike], output: str | os.PathLike, *, overwrite: bool = False,
                retries: int = 3, retry_delay: float = 0.1) -> "WritePolicy":
        root = os.path.realpath(output)
        named = [os.fsdecode(raw) for raw in inputs]
        real = {os.path.realpath(p) for p in [*_input_folders(named), *(p for p in named if os.path.isfile(p))]}
        inside = tuple(sorted(p for p in real if _within(p, root) and p != root))
        return cls(root, overwrite, inside, retries, retry_delay)

    def input_at(self, relative: str) -> str | None:
        """The input folder or file that writing ``relative`` would replace or write into, if any."""
        if not self.inputs:                   # the usual case (no input inside OUT), asked per output
            return None
        target = os.path.join(self.root, relative)
        return next((p for p in self.inputs if _within(target, p)), None)


class OutputLock:
    """An exclusive flock on OUT's own directory for the whole run, so two runs never write one
    OUT at once, whatever their journals (--no-journal included).

    On the folder itself rather than a lock file in it: nothing is created in OUT (a run with
    --no-journal leaves no trace), there is no file a planted symlink could redirect, and the
    holder is still named, from /proc/locks. Where the filesystem cannot flock a folder (NFS
    emulates flock with byte-range locks, which need a file open for writing) the run goes on
    unlocked, saying so."""

    def __init__(self, output: str | os.PathLike) -> None:
        self.output = Path(output)
        try:
            os.makedirs(self.output, exist_ok=True)
            self._fd = parent_only(os.open(self.output, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))  # the user's own path
        except OSError as exc:
            raise UsageError(f"cannot open the output {self.output}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(self._fd)
            self.release()
            raise UsageError(f"the output {self.output} is in use by {holder}: two runs must not write one "
                             "output directory at once; wait for it to finish, or choose another output") from None
        except OSError as exc:
            logging.getLogger("gpupipe").warning("cannot lock the output %s (%s): another run writing to it at "
                                                 "the same time would not be stopped", self.output, exc.strerror)

    def release(self) -> None:
        if self._fd >= 0:
            forget_parent_only(self._fd)
            os.close(self._fd)          # closing drops the flock
            self._fd = -1


def _lock_holder(fd: int) -> str:
    """Who holds the flock on ``fd``'s file, from /proc/locks (Linux): 'gpupipe pid N' or a guess."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    try:
        with open("/proc/locks") as locks:           # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF"
            for line in locks:
                fields = line.split()
                if "FLOCK" in fields and "->" not in fields and key in fields:   # "->": a waiter
                    pids.append(fields[fields.index("FLOCK") + 3])
    except (OSError, IndexError):
        pass
    if not pids:
        return "another gpupipe run"
    try:
        with open(f"/proc/{pids[0]}/cmdline", "rb") as cmdline:
            command = cmdline.read()
    except OSError:
        command = b""
    return f"gpupipe pid {pids[0]}" if b"gpupipe" in command else f"process {pids[0]}"


# ---------------------------------------------------------------------- one output

def write_output(root: str, relative: str, data: bytes, *, fsync: bool = True,
                 replace: bool | Callable[[], bool] = False) -> None:
    """Write ``data`` at ``root/relative`` so that it is either absent, old, or complete.

    ``replace``: an existing regular file there may be replaced; otherwise the input fails as
    OutputExists and the file is kept. A callable is asked only when a file is there (asking
    the journal for every output cost 9 % of a run of small files). A symlink or folder in the way fails as WriteError;
    ENOSPC/EROFS/EDQUOT (the disk, not the file) raise SystemFailure."""
    shown = os.path.join(root, relative)
    *folders, name = relative.split("/")
    folders = tuple(folders)
    directory = open_output_dir(root, folders)
    tmp = _temporary_name()
    registered = os.path.join(root, *folders, tmp)
    try:
        _register_temporary(registered)
        try:
            _clear_stale_once(directory, os.path.join(root, *folders))
            _write_file(directory, tmp, data, fsync)
            _place(directory, tmp, name, shown, replace, data)
            if fsync:
                os.fsync(directory)          # the new name itself survives a power cut
        except OSError as exc:
            raise _as_gpupipe_error(exc, shown, os.path.join(root, *folders)) from exc
        finally:
            _remove_quietly(tmp, directory)
            _forget_temporary(registered)
    finally:
        os.close(directory)


class ChunkWrites:
    """The outputs of one chunk of inputs, written as write_output does, with one round of fsyncs.

    ``stage`` writes each file to a temporary as soon as it is encoded (the bytes then wait in
    the page cache, not in this process); ``finish`` makes them durable and puts them in place
    together: every temporary fsynced, then linked or renamed to its final name by
    ``_place``'s rules, then each folder fsynced once. Nothing is under a final name before
    its bytes are on disk, and when ``finish`` returns every name it placed is on disk too,
    so the caller may commit the chunk's journal rows. A per-file error costs that file and
    the rest of its owner's; SystemFailure (disk full, read-only) propagates."""

    def __init__(self, root: str, fsync: bool) -> None:
        self.root, self.fsync = root, fsync
        self._folders: dict[str, tuple[int, str]] = {}    # open folder fds and paths, by path below root ("a/b", "")
        self._staged: list[tuple[object, str, str, str, int | None, Callable[[], bool] | bool]] = []
        self._bytes = 0                     # staged
        self.written_back = False           # the last finish wrote back the whole filesystem first

    def stage(self, owner: object, relative: str, data: bytes, replace: bool | Callable[[], bool]) -> None:
        """Write ``data`` for ``relative`` ("a/b.jpg") to a temporary (WriteError or SystemFailure if it cannot be)."""
        folders, _, name = relative.rpartition("/")
        directory, where = self._folder(folders)
        tmp = _temporary_name()
        _register_temporary(f"{where}/{tmp}")
        try:
            _clear_stale_once(directory, where)
            fd = _write_file(directory, tmp, data, fsync=False, keep_open=self.fsync)   # fsynced in finish
        except OSError as exc:
            self._discard(folders, tmp)
            raise _as_gpupipe_error(exc, os.path.join(where, name), where) from exc
        self._staged.append((owner, folders, tmp, name, fd, replace))
        self._bytes += len(data)

    def finish(self) -> dict[object, tuple[int, WriteError | OutputExists]]:
        """fsync, place and fsync the folders of everything staged. For each owner with a file that
        could not be synced or placed: how many of its files were placed, and the error (its later
        files are not placed). Temporaries left are removed either way."""
        errors: dict[object, tuple[int, WriteError | OutputExists]] = {}
        placed_by: dict[object, int] = {}
        placed: set[str] = set()
        try:
            unsynced = self._sync() if self.fsync else {}
            for at, (owner, folders, tmp, name, _, replace) in enumerate(self._staged):
                if owner in errors:
                    continue
                directory, where = self._folders[folders]
                shown = f"{where}/{name}"
                try:
                    try:
                        if at in unsynced:        # its bytes may not be on disk: never under its name
                            raise unsynced[at]
                        _place(directory, tmp, name, shown, replace, None)
                    except OSError as exc:
                        raise _as_gpupipe_error(exc, shown, where) from exc
                except (WriteError, OutputExists) as exc:
                    errors[owner] = (placed_by.get(owner, 0), exc)
                    continue
                placed.add(folders)
                placed_by[owner] = placed_by.get(owner, 0) + 1
            if self.fsync:
                for folders in placed:
                    try:
                        os.fsync(self._folders[folders][0])
                    except OSError as exc:
                        raise SystemFailure(f"cannot sync the output folder {self._folders[folders][1]} "
                                            f"to disk: {exc.strerror}") from None
        finally:
            self.close()
        return errors

    def _sync(self) -> dict[int, OSError]:
        """fsync and close every staged temporary, after one write-back of their filesystem (which
        makes the fsyncs cheap): the errors of those that failed (a disk or mount that could not
        keep them; a network filesystem may report a late write error on close), by their place in
        the stage. A full or read-only disk raises SystemFailure."""
        self.written_back = _write_back_filesystem(self._folders, len(self._staged), self._bytes)
        unsynced: dict[int, OSError] = {}
        for at, (owner, folders, tmp, name, fd, replace) in enumerate(self._staged):
            self._staged[at] = (owner, folders, tmp, name, None, replace)     # closed below, whatever happens
            error: OSError | None = None
            try:
                os.fsync(fd)
            except OSError as exc:
                error = exc
            try:
                os.close(fd)
            except OSError as exc:
                error = error or exc            # a failed fsync's is the one to report
            if error is not None:
                if error.errno in SYSTEM_ERRNOS:
                    raise _as_gpupipe_error(error, "", self._folders[folders][1]) from error
                unsynced[at] = error
        return unsynced

    def close(self) -> None:
        """Remove what is still a temporary and close every fd (also after an error: what is closed
        here is discarded or only read, so its close has nothing to report)."""
        staged, self._staged = self._staged, []
        for _, folders, tmp, _, fd, _ in staged:
            if fd is not None:
                _close_quietly(fd)
            self._discard(folders, tmp)
        folders, self._folders = self._folders, {}
        for fd, _ in folders.values():
            _close_quietly(fd)

    def _discard(self, folders: str, tmp: str) -> None:
        directory, where = self._folders[folders]
        _remove_quietly(tmp, directory)
        _forget_temporary(f"{where}/{tmp}")

    def _folder(self, folders: str) -> tuple[int, str]:
        """The folder below root ("a/b", "" for root itself): its fd, opened once per chunk, and its path."""
        known = self._folders.get(folders)
        if known is None:
            parts = tuple(folders.split("/")) if folders else ()
            known = self._folders[folders] = (open_output_dir(self.root, parts), os.path.join(self.root, *parts))
        return known


# A chunk's fsyncs each make the filesystem commit its journal and flush the disk's cache (ext4 here:
# 0.21 ms a small file). One write-back of the whole filesystem first (Linux syncfs) commits them all
# at once, and the fsyncs after it find their files on disk (256 small outputs: 0.21 -> 0.09 ms a
# file). The fsyncs stay: they are what makes each file durable on any filesystem (one where syncfs
# does little, FUSE, only loses the speed), and they report each file's own write error.
WRITE_BACK_FROM = 4                     # files in a chunk: for fewer, one syncfs costs more than it saves
# syncfs writes whatever the filesystem holds unwritten, other programs' data too: where the machine
# holds more than this besides the chunk's own files, they are fsynced alone, as without it.
OTHERS_UNWRITTEN_MOST = 64 * 2**20


def _write_back_filesystem(folders: dict[str, tuple[int, str]], files: int, nbytes: int) -> bool:
    """Write back everything the filesystem of the output folders holds unwritten, before a
    chunk's fsyncs, where that is cheap; whether it was. Errors are left to the fsyncs after it."""
    if files < WRITE_BACK_FROM or not folders or _unwritten_bytes() > nbytes + OTHERS_UNWRITTEN_MOST:
        return False
    try:
        syncfs = libc().syncfs
    except (OSError, AttributeError):        # not Linux, or a C library without it
        return False
    syncfs(next(iter(folders.values()))[0])
    return True


def _unwritten_bytes() -> int:
    """What this machine holds that is not on disk yet, all disks together (/proc/meminfo's Dirty
    and Writeback); unknown is too much."""
    try:
        with open("/proc/meminfo", "rb") as info:
            lines = info.read().splitlines()
    except OSError:
        return 1 << 62
    held = [int(line.split()[1]) for line in lines if line.startswith((b"Dirty:", b"Writeback:"))]
    return 1024 * sum(held) if len(held) == 2 else 1 << 62


# This machine's name in the temporaries it makes: a process id means something only on the machine
# that gave it, and Ray's tasks on several machines write into the same shared folders.
THIS_MACHINE = digests.blake2b(os.uname().nodename.encode(), digest_size=4).hexdigest()


def _temporary_name() -> str:
    """".gpupipe-PID-MACHINE-xxxxxxxx.tmp": this process's id, and a counter from a random start
    (a process that reused an earlier one's id meets none of its names). Its prefix and start
    are made once a process, not per file: getpid and getrandom were 3 % of a tiny input's time
    in a worker."""
    global _temporary_names
    if _temporary_names is None:
        _temporary_names = (f".gpupipe-{os.getpid()}-{THIS_MACHINE}-",
                            itertools.count(int.from_bytes(os.urandom(4), "big")))
    prefix, counter = _temporary_names
    return f"{prefix}{next(counter) & 0xFFFFFFFF:08x}.tmp"


_temporary_names: tuple[str, itertools.count] | None = None       # this process's (see _temporary_name)
os.register_at_fork(after_in_child=lambda: globals().update(_temporary_names=None))


def _register_temporary(path: str) -> None:
    """A temporary about to be made: remove_live_temporaries removes it if the run aborts."""
    with _lock:
        if _aborting.is_set():
            raise SystemFailure("the run was aborted")
        _live_temporaries.add(path)


def _forget_temporary(path: str) -> None:
    with _lock:
        _live_temporaries.discard(path)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _write_file(directory: int, name: str, data: bytes, fsync: bool, keep_open: bool = False) -> int | None:
    """Create ``name`` (it must not exist) holding ``data``. With ``keep_open`` its fd is returned,
    for the caller to fsync and close later; else it is closed here."""
    fd = os.open(name, _NEW_FILE, 0o644, dir_fd=directory)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    if keep_open:
        return fd
    os.close(fd)
    return None


def _place(directory: int, tmp: str, name: str, shown: str, replace: bool | Callable[[], bool],
           data: bytes | None) -> None:
    """Give the finished temporary its final name: renameat where replacing is allowed (never
    over a symlink or folder), else linkat, which fails if the name exists, so a file that
    appeared there since is kept. A file there that already holds exactly ``data`` is this
    output (a killed run wrote it after its journal's last commit): kept, and that is success.
    A callable ``replace`` is asked only when a file is in the way."""
    if replace is True:
        in_the_way = _kind_at(directory, name)
        if in_the_way not in (None, "a file"):
            raise WriteError(f"cannot write {shown}: {in_the_way} is in the way (gpupipe does not replace it)")
        os.rename(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
        return
    try:
        os.link(tmp, name, src_dir_fd=directory, dst_dir_fd=directory, follow_symlinks=False)
        return
    except FileExistsError:
        pass
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # No hard links here: look, then rename. Not atomic against a file appearing in between.
        if _kind_at(directory, name) is None:
            os.rename(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
            return
    if callable(replace) and _kind_at(directory, name) == "a file" and replace():
        os.rename(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)       # gpupipe's own output
        return
    _accept_existing(directory, name, shown, tmp if data is None else data)


def _accept_existing(directory: int, name: str, shown: str, data: bytes | str) -> None:
    """Return if the file at ``name`` already holds exactly ``data`` (this output, written by a
    killed run; ``data`` may be the name of a temporary holding it); else raise OutputExists for
    a file, WriteError for a link, folder or device."""
    in_the_way = _kind_at(directory, name) or "a file"
    if in_the_way != "a file":
        raise WriteError(f"cannot write {shown}: {in_the_way} is in the way (gpupipe does not replace it)")
    if isinstance(data, str):
        data = _read_file(directory, data)
    if data is None or not _holds(directory, name, data):
        raise OutputExists(f"output {shown} already exists and was not written by gpupipe's journal: kept; "
                           "--overwrite replaces it")


def _holds(directory: int, name: str, data: bytes) -> bool:
    """Whether the regular file ``name`` holds exactly ``data`` (not following a symlink)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=directory)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or os.fstat(fd).st_size != len(data):
            return False
        with os.fdopen(os.dup(fd), "rb") as existing:
            return existing.read(len(data) + 1) == data
    except OSError:
        return False
    finally:
        os.close(fd)


def _read_file(directory: int, name: str) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        return file.read()


def _kind_at(directory: int, name: str) -> str | None:
    """What is at ``name`` (not following a symlink): None when nothing is."""
    try:
        mode = os.lstat(name, dir_fd=directory).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a file" if stat.S_ISREG(mode) else "a special file"


def open_output_dir(root: str, folders: tuple[str, ...]) -> int:
    """An fd of the folder ``root/folders``, each made if missing and entered without following
    a symlink. Iterative and fd-relative: any depth works, no path grows past PATH_MAX."""
    try:
        try:
            fd = os.open(root, _DIRECTORY)
        except FileNotFoundError:
            os.makedirs(root, exist_ok=True)     # OUT itself (the engine was called without api.run)
            fd = os.open(root, _DIRECTORY)
    except OSError as exc:
        raise _as_gpupipe_error(exc, root, root) from exc
    for depth, name in enumerate(folders, 1):
        fd = _enter(fd, name, os.path.join(root, *folders[:depth]))
    return fd


def _enter(parent: int, name: str, shown: str) -> int:
    """Open (making it if missing) the folder ``name`` in ``parent``, never through a symlink;
    ``parent`` is closed. WriteError when something else is in the way."""
    try:
        try:
            return os.open(name, _DIRECTORY, dir_fd=parent)
        except FileNotFoundError:
            try:
                os.mkdir(name, 0o777, dir_fd=parent)
            except FileExistsError:         # another writer made it meanwhile
                pass
            return os.open(name, _DIRECTORY, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            in_the_way = _kind_at(parent, name) or "something"
            raise WriteError(f"cannot write into {shown}: it is {in_the_way}, not a folder "
                             "(gpupipe never follows links below the output directory)") from None
    except OSError as exc:
        raise _as_gpupipe_error(exc, shown, shown) from exc
    finally:
        os.close(parent)


def _as_gpupipe_error(exc: OSError, shown: str, folder: str) -> Exception:
    """The one error an OSError means here: the disk's (SystemFailure) or this output's (WriteError,
    its cause kept so a transient errno can be retried)."""
    reason = exc.strerror or str(exc)
    if exc.errno in SYSTEM_ERRNOS:
        return SystemFailure(f"cannot write to {folder}: {reason}")
    if exc.errno == errno.EACCES and not os.access(folder, os.W_OK):
        return SystemFailure(f"cannot write to {folder}: permission denied")
    if exc.errno == errno.ENAMETOOLONG:
        return WriteError(f"cannot write {shown}: the name is too long for the output filesystem")
    return WriteError(f"cannot write {shown}: {reason}")


# ---------------------------------------------------------------------- temporaries

_cleared: set[str] = set()
# Ours (".gpupipe-PID-MACHINE-xxxxxxxx.tmp"), and from older versions, made on this machine as far as
# anyone knows: ".gpupipe-PID-xxxxxxxx.tmp" and ".NAME.gpupipe-PID-xxxxxxxx.tmp", which grew with NAME.
_TEMPORARY = re.compile(r"^\.(?:.+\.)?gpupipe-(\d+)(?:-([0-9a-f]{8}))?-[0-9a-f]{8}\.tmp$")


def _clear_stale_once(directory: int, key: str) -> None:
    """The first time a run writes into a folder, clear temporaries a killed run left there."""
    if key not in _cleared:
        remove_stale_temporaries(directory)
        _cleared.add(key)


def remove_stale_temporaries(directory: int | str | os.PathLike, wait: float = 0.0) -> int:
    """Delete temporaries of gpupipe processes of this machine that no longer exist (e.g. killed with
    SIGKILL); another machine's are its own to clear. ``directory``: a folder's fd or path. With
    ``wait``, those of processes still alive are waited for that many seconds at most (they are
    ending: their run was aborted) and removed once gone. Never raises."""
    try:
        names = os.listdir(directory if isinstance(directory, int) else os.fspath(directory))
    except OSError:
        return 0
    ours: dict[str, int] = {}             # this machine's temporaries, but this process's: name -> its process
    for name in names:
        match = _TEMPORARY.match(name)
        if match and match.group(2) in (None, THIS_MACHINE) and int(match.group(1)) != os.getpid():
            ours[name] = int(match.group(1))
    removed, deadline = 0, time.monotonic() + wait
    while True:
        for name, pid in list(ours.items()):
            if not _process_alive(pid):
                if isinstance(directory, int):
                    _remove_quietly(name, directory)
                else:
                    _remove_quietly(os.path.join(os.fspath(directory), name))
                del ours[name]
                removed += 1
        if not ours or time.monotonic() >= deadline:
            return removed
        time.sleep(0.05)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # alive, someone else's
        return True
    try:                             # a zombie (dead, not yet reaped: a killed run's worker) is gone too
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            return stat_file.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _remove_quietly(name: str, directory: int | None = None) -> None:
    """Cleanup never raises: a temporary that cannot be removed is left for the next run."""
    try:
        os.unlink(name, dir_fd=directory)
    except OSError:
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
        _remove_quietly(name)
    return len(pending)
