"""Find the input files: directories, single files and glob patterns.

``discover`` streams: it lists one directory at a time (sorted by name, so runs
are deterministic) and yields as it goes, so memory does not grow with the
size of the input set. What it remembers grows with the number of directories
in the walk under way (to end loops), of symlinks and of files named directly,
never with the number of files.

What is an input:

* a directory: walked (recursively unless ``recursive=False``); ``relative`` is
  the path inside it, and the output tree mirrors it;
* a file: taken whatever its name or extension (the user named it); its
  ``relative`` is its file name;
* a path that does not exist but contains ``*``, ``?`` or ``[``: a glob
  pattern (``**`` spans directories); ``relative`` is the path below the
  pattern's leading directory. A directory it matches is walked like a
  directory input, files it matches are filtered like a walk's files.

In walks, only files with an image extension are taken (their content is
checked at decode: a PNG named .jpg decodes, a text file named .jpg fails as
not_an_image), unless ``all_files``, where every other regular file is sniffed
here and yielded only if its bytes are an image we read. Names starting with
"." are skipped unless ``include_hidden``; directories in ``exclude`` (the
output directory) and any ``.gpupipe`` directory are never entered. Symlinks
are followed, but a directory is never walked twice and loops end.

Each file is yielded once. A file can have several names: a symlink to it, a
directory input nested in another, a file named directly that also lies in a
directory input, overlapping globs, two links to one directory. The rule: the
first input (in the order given) whose walk reaches a file without passing a
symlink owns it, and every other name is dropped. A symlinked directory that
no input owns is walked once, as if it were an input of its own (so the files
below it need no per-file bookkeeping either); only symlinks to files and files
named directly are remembered by (st_dev, st_ino). All of these checks compare
path strings, except one realpath() per symlink. Hard links are separate names
and each is yielded.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import field
from pathlib import PurePath

from gpupipe.codecs import READ_FORMATS, formats, sniff
from gpupipe.errors import UnreadableInput, UsageError

from .records import dataclass

__all__ = ["IMAGE_EXTENSIONS", "SourceFile", "Skipped", "ScanProblem",
           "check_inputs", "discover", "read_bytes", "read_input", "InputRead"]

IMAGE_EXTENSIONS = formats.IMAGE_EXTENSIONS
_GLOB_CHARS = frozenset("*?[")
_STATE_DIR = ".gpupipe"
_SNIFF_BYTES = 1024      # enough for every signature sniff() knows, SVG included

PathLike = str | os.PathLike


@dataclass(frozen=True)
class _Found:
    """What the scan yields about a path. Paths are plain strings (a run makes these for every file
    on its one coordinating thread, where pathlib's objects cost several µs each), spelled as
    ``str(Path(path))`` would: no "//", "/./", leading "./" or trailing "/", however the input
    was typed."""

    path: str                # as reached (not resolved), for reading and reports

    def __post_init__(self) -> None:
        path = self.path
        if "//" in path or "/." in path or path.startswith("./") or (path.endswith("/") and path != "/"):
            object.__setattr__(self, "path", str(PurePath(path)))     # only for the rare path that needs it


@dataclass(frozen=True)
class SourceFile(_Found):
    """One input file to process."""

    relative: str            # where it sits below its input root ("a/b.jpg"); outputs mirror it
    size: int
    mtime: float


@dataclass(frozen=True)
class Skipped(_Found):
    """A file looked at and deliberately not processed (e.g. not an image)."""

    reason: str


@dataclass(frozen=True)
class ScanProblem(_Found):
    """Something that could not be scanned (unlistable directory, symlink loop)."""

    message: str


Item = SourceFile | Skipped | ScanProblem


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------

def check_inputs(inputs: Iterable[PathLike], *, all_files: bool = False,
                 include_hidden: bool = False) -> None:
    """Raise UsageError naming every input that neither exists nor matches.

    Run before any work so that a typo exits with status 2 at once. A glob
    counts as matching when it selects at least one file a run would take.
    """
    inputs = list(inputs)
    if not inputs:
        raise UsageError("no inputs given: name at least one directory, file or glob pattern")
    missing = []
    for raw in inputs:
        text = os.fsdecode(raw)
        if os.path.lexists(text):
            continue
        if _is_glob(text):
            scan = _Scanner([text], recursive=True, include_hidden=include_hidden,
                            all_files=all_files, exclude=())
            if not any(isinstance(item, (SourceFile, Skipped)) for item in scan.run()):
                what = "files" if all_files else "image files (see --all-files)"
                missing.append(f"{text!r} matches no {what}")
        else:
            missing.append(f"{text!r} does not exist")
    if missing:
        raise UsageError("input not found: " + "; ".join(missing))


def discover(inputs: Iterable[PathLike], *, recursive: bool = True, include_hidden: bool = False,
             all_files: bool = False, exclude: Iterable[PathLike] = ()) -> Iterator[Item]:
    """Yield SourceFile / Skipped / ScanProblem for ``inputs``, in order.

    Inputs are checked first (UsageError for one that is missing, raised by
    this call, before iteration). Inputs are taken in the order given; within
    a directory, entries in name order. A file reached twice (named directly
    and inside a directory input, or through two symlinks) is yielded once.
    """
    inputs = [os.fsdecode(x) for x in inputs]
    check_inputs(inputs, all_files=all_files, include_hidden=include_hidden)
    scanner = _Scanner(inputs, recursive=recursive, include_hidden=include_hidden,
                       all_files=all_files, exclude=exclude)
    return scanner.run()


@dataclass(frozen=True)
class InputRead:
    """An input's bytes, with the size and mtime of the file they were read from (its fstat)."""

    data: bytes
    size: int
    mtime: float


def read_bytes(path: PathLike) -> bytes:
    """The whole file; any OSError becomes UnreadableInput with a plain message."""
    return read_input(path).data


def read_input(path: PathLike) -> InputRead:
    """Read a regular file whole, as it is now: the size and mtime are those of the open file,
    so a file replaced or changed since the scan is recorded as what was read, and one that shrank
    is returned short (its decoder reports the truncation). It is opened non-blocking and
    refused unless fstat says regular file, so a FIFO, socket or device swapped in after the
    scan fails at once instead of hanging. Any OSError becomes UnreadableInput."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        kind = _special_file_kind(path, exc)
        if kind is not None:                # the file's kind, not a device fault: no errno to retry on
            raise UnreadableInput(f"not a regular file ({kind})") from None
        raise UnreadableInput(_read_error_message(path, exc)) from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UnreadableInput("is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableInput(f"not a regular file ({_file_kind(info.st_mode)})")
        os.set_blocking(fd, True)           # a regular file: reads may block on a slow disk as usual
        # One read of the size fstat gave, plus a byte to see the end: the whole file in one
        # system call, without a buffered file object (half the cost on a tiny file: 13 -> 7 µs).
        # A short read (a network filesystem, a file over 2 GB) or a file that grew reads on to the end.
        data = os.read(fd, info.st_size + 1)
        if len(data) != info.st_size:
            parts = [data]
            while more := os.read(fd, 1 << 24):
                parts.append(more)
            data = b"".join(parts)
    except OSError as exc:
        raise UnreadableInput(_read_error_message(path, exc)) from exc
    finally:
        os.close(fd)
    return InputRead(data, len(data), info.st_mtime)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def _is_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def _has_image_extension(name: str) -> bool:
    """Whether a file name ends in an image extension, as ``os.path.splitext`` reads one (the dots
    a name starts with begin no extension: ".jpg" has none), without its three calls: this is asked
    of every file a scan meets."""
    dot = name.rfind(".")
    return (dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS
            and (name[0] != "." or name[:dot].lstrip(".") != ""))


def _os_message(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if exc.errno == errno.ENOENT:
        return "no such file or directory"
    return (exc.strerror or str(exc)).lower()


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "not a plain file")


def _special_file_kind(path: PathLike, exc: OSError) -> str | None:
    """Opening a socket (ENXIO) or a device without a driver (ENODEV, ENXIO) fails before fstat
    could refuse it: the file's kind then, so the message says what it is, not a device error."""
    if exc.errno not in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else _file_kind(mode)


def _read_error_message(path: PathLike, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        if os.path.islink(path):
            return f"broken symbolic link (its target {os.readlink(path)!r} does not exist)"
        return "file vanished before it was read"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    return _os_message(exc)


def _sniff_file(path: str) -> str | None:
    """The format named by the first bytes of ``path`` (raises OSError)."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head:
        return "empty"
    return sniff(head)


def _not_image_reason(fmt: str | None) -> str:
    if fmt == "empty":
        return "empty file"
    if fmt is None:
        return "not an image"
    return f"unsupported image format: {fmt.upper()}"


def _part_match(name: str, pattern: str, hidden_ok: bool) -> bool:
    """One path component against one glob component. Like the shell, ``*``
    does not match a leading dot unless the pattern spells it out."""
    if name.startswith(".") and not (hidden_ok or pattern.startswith(".")):
        return False
    return fnmatch.fnmatchcase(name, pattern)


def _glob_match(names: tuple[str, ...], pats: tuple[str, ...], hidden_ok: bool,
                prefix: bool = False) -> bool:
    """Does the path ``names`` match ``pats`` (``**`` = zero or more components)?

    With ``prefix=True``: could some path *below* ``names`` match?
    """
    def m(i: int, j: int) -> bool:
        if i == len(names):
            return j < len(pats) if prefix else all(p == "**" for p in pats[j:])
        if j == len(pats):
            return False
        if pats[j] == "**":
            return m(i, j + 1) or ((hidden_ok or not names[i].startswith(".")) and m(i + 1, j))
        return _part_match(names[i], pats[j], hidden_ok) and m(i + 1, j + 1)
    return m(0, 0)


def _split_glob(pattern: str) -> tuple[str, tuple[str, ...]]:
    """'photos/20*/**/*.jpg' -> ('photos', ('20*', '**', '*.jpg'))."""
    parts = [p for p in pattern.split(os.sep) if p not in ("", ".")]
    lead: list[str] = []
    for part in parts:
        if _is_glob(part):
            break
        lead.append(part)
    rest: list[str] = []
    for part in parts[len(lead):]:
        if not (part == "**" and rest and rest[-1] == "**"):   # '**/**' == '**'
            rest.append(part)
    base = os.path.join(*lead) if lead else ""
    if pattern.startswith(os.sep):
        base = os.sep + base
    return base or ".", tuple(rest)


# --------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------

@dataclass
class _Root:
    """Something walked wholesale from a real directory: an input directory
    (``pats`` None), a glob (``pats`` = its components below ``real``), or a
    symlinked directory met during a walk (``index`` None)."""

    index: int | None        # position among the inputs; None for a symlinked directory
    path: str                # as given (directory) or the glob's leading directory
    real: str                # realpath of ``path``
    pats: tuple[str, ...] | None


@dataclass
class _Frame:
    """One directory being walked: its sorted entries and how to judge them."""

    path: str                # as reached (what SourceFile.path shows)
    real: str                # its real path (joined, not resolved: no symlink below owner)
    rel: tuple[str, ...]     # components below the input root (SourceFile.relative)
    owner: _Root             # the root whose plain walk this is
    entries: list[os.DirEntry]
    pats: tuple[str, ...] | None  # glob components to match; None = take everything
    index: int = 0
    prefix: str = field(init=False)   # "/".join(rel) and a slash, or "": a file's relative path is prefix + name

    def __post_init__(self) -> None:
        self.prefix = "/".join(self.rel) + "/" if self.rel else ""


class _Scanner:
    """One discovery run: the inputs, the rules, and what must be remembered
    so that no file comes twice and no walk loops."""

    def __init__(self, inputs: list[str], *, recursive: bool, include_hidden: bool,
                 all_files: bool, exclude: Iterable[PathLike]) -> None:
        self.inputs = inputs
        self.recursive = recursive
        self.include_hidden = include_hidden
        self.all_files = all_files
        self.roots: list[_Root] = []         # the inputs that are walked, in order
        self.root_at: dict[int, _Root] = {}
        for i, text in enumerate(inputs):
            if os.path.isdir(text):
                root = _Root(i, text, os.path.realpath(text), None)
            elif not os.path.lexists(text) and _is_glob(text):
                base, pats = _split_glob(text)
                if not pats:
                    continue
                root = _Root(i, base, os.path.realpath(base), pats)
            else:
                continue
            self.roots.append(root)
            self.root_at[i] = root
        # The one input walked, when there is only one: no other walk can take what it finds, as
        # long as the walk is its own (not a symlinked folder walked as a root of its own).
        self._sole_root = self.roots[0] if len(self.roots) == 1 else None
        self.link_roots: dict[str, _Root] = {}    # real path -> symlinked dir being/been walked
        self.seen: set[tuple[int, int]] = set()   # files yielded through a file symlink or by name
        self.excl_ids: set[tuple[int, int]] = set()
        self.excl_paths: set[str] = set()
        for p in exclude:
            p = os.fsdecode(p)
            self.excl_paths.update({os.path.abspath(p), os.path.realpath(p)})
            try:
                st = os.stat(p)
                self.excl_ids.add((st.st_dev, st.st_ino))
            except OSError:
                pass         # not created yet (the output dir): matched by path

    # -- inputs -------------------------------------------------------------

    def run(self) -> Iterator[Item]:
        for i, text in enumerate(self.inputs):
            if i in self.root_at:
                yield from self._root(self.root_at[i])
            elif os.path.lexists(text):
                yield from self._named_file(text)
            else:            # vanished after check_inputs
                yield ScanProblem(text, "no such file or directory")

    def _root(self, root: _Root) -> Iterator[Item]:
        try:
            st = os.stat(root.path)
        except OSError as exc:
            if root.pats is None:
                yield ScanProblem(root.path, f"cannot read directory: {_os_message(exc)}")
            return           # a glob below a missing directory matches nothing
        if self._excluded(root.path, st):
            yield ScanProblem(root.path, "excluded (the output directory); not scanned")
            return
        if root.pats is None and self._owned_elsewhere(root.real, root, True):
            return           # named twice, or inside an earlier directory input
        listing = self._list(root.path)
        if isinstance(listing, ScanProblem):
            yield listing
            return
        yield from self._walk(_Frame(root.path, root.real, (), root, listing, root.pats), st)

    def _named_file(self, path: str) -> Iterator[Item]:
        """A file named on the command line: taken whatever its extension."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            # A broken symlink: yielded so that it is reported as unreadable.
            lst = os.lstat(path)
            yield SourceFile(path, os.path.basename(path), lst.st_size, lst.st_mtime)
            return
        except OSError as exc:
            yield ScanProblem(path, _os_message(exc))
            return
        if not stat.S_ISREG(st.st_mode):
            yield Skipped(path, "not a regular file (device, FIFO or socket)")
            return
        if self._second_name(path, st, _Sniff(path)):
            return
        yield SourceFile(path, os.path.basename(path), st.st_size, st.st_mtime)

    # -- directories ----------------------------------------------------------

    def _list(self, path: str) -> list[os.DirEntry] | ScanProblem:
        try:
            with os.scandir(path) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            return ScanProblem(path, f"cannot list directory: {_os_message(exc)}")

    def _walk(self, top: _Frame, st: os.stat_result) -> Iterator[Item]:
        """Depth-first, name-ordered walk with an explicit stack (deep trees
        hit no recursion limit). ``visited`` holds this walk's directories, so
        nothing can make it loop, whatever the links or mounts."""
        visited = {(st.st_dev, st.st_ino)}
        stack = [top]
        while stack:
            frame = stack[-1]
            if frame.index >= len(frame.entries):
                stack.pop()
                continue
            entry = frame.entries[frame.index]
            frame.index += 1
            name = entry.name
            if name == _STATE_DIR:
                continue
            if frame.pats is None and name.startswith(".") and not self.include_hidden:
                continue     # (in a glob the pattern decides; see _part_match)
            try:
                is_dir = entry.is_dir()
                is_link = entry.is_symlink()
            except OSError as exc:
                yield ScanProblem(entry.path, _os_message(exc))
                continue
            if is_dir:
                sub = self._enter(frame, entry, frame.rel + (name,), is_link, visited)
                if isinstance(sub, ScanProblem):
                    yield sub
                elif sub is not None:
                    stack.append(sub)
            elif frame.pats is None or _glob_match(frame.rel + (name,), frame.pats, self.include_hidden):
                found = self._file(frame, entry, is_link)
                if found is not None:
                    yield found

    def _enter(self, frame: _Frame, entry: os.DirEntry, rel: tuple[str, ...], is_link: bool,
               visited: set[tuple[int, int]]) -> _Frame | ScanProblem | None:
        """The frame for a subdirectory, or None when it is not to be walked."""
        pats = frame.pats
        if pats is None:
            if not self.recursive:
                return None
        elif _glob_match(rel, pats, self.include_hidden):
            pats = None      # the pattern names this directory: walk it like an input
        elif not _glob_match(rel, pats, self.include_hidden, prefix=True):
            return None
        try:
            st = entry.stat()
        except OSError as exc:
            return ScanProblem(entry.path, _os_message(exc))
        if self._excluded(entry.path, st):
            return None
        owner = frame.owner
        if is_link and pats is None:
            real = os.path.realpath(entry.path)
            if self._owned_elsewhere(real, None, True):
                return None  # an input walks it, or it is walked already (loops end here)
            # Walk it as a root of its own, ranked below every input.
            owner = self.link_roots[real] = _Root(None, entry.path, real, None)
        elif is_link:        # a link the pattern still has to look into: followed in place
            real = os.path.realpath(entry.path)
        else:
            real = os.path.join(frame.real, entry.name)
            if pats is None and self._owned_elsewhere(real, owner, True):
                return None  # an earlier input, or another symlinked walk, takes it
        key = (st.st_dev, st.st_ino)
        if key in visited:   # a bind mount or similar back into this walk
            return None
        visited.add(key)
        listing = self._list(entry.path)
        if isinstance(listing, ScanProblem):
            return listing
        return _Frame(entry.path, real, rel, owner, listing, pats)

    # -- files ----------------------------------------------------------------

    def _file(self, frame: _Frame, entry: os.DirEntry, is_link: bool) -> Item | None:
        """What the scan says of a file in a walked folder (None: nothing; another walk takes it,
        or it is not a candidate). Asked for every file of a run: its common case, a plain image
        file of a single input folder, costs one stat and no other look-up."""
        path = entry.path
        by_name = _has_image_extension(entry.name)
        if not by_name and not self.all_files:
            return None      # the common "not a candidate" case costs no syscall
        try:
            st = entry.stat()
        except FileNotFoundError:
            if not is_link:
                return ScanProblem(path, "vanished during the scan")
            if by_name:      # broken symlink: yielded so that it is reported as unreadable
                lst = entry.stat(follow_symlinks=False)
                return SourceFile(path, frame.prefix + entry.name, lst.st_size, lst.st_mtime)
            return Skipped(path, "broken symbolic link")
        except OSError as exc:
            return ScanProblem(path, _os_message(exc))
        if not stat.S_ISREG(st.st_mode):
            return Skipped(path, "not a regular file (device, FIFO or socket)")
        content = None if by_name else _Sniff(path)        # its bytes are asked for only if its name says nothing
        if content is not None:
            try:
                if not content.ok():
                    return Skipped(path, _not_image_reason(content.fmt))
            except OSError as exc:
                return ScanProblem(path, "cannot read it to check whether it is an image: " + _os_message(exc))
        if is_link:
            if self._second_name(path, st, content or _Sniff(path)):
                return None
        elif (self.seen and (st.st_dev, st.st_ino) in self.seen) or (
                frame.owner is not self._sole_root
                and self._owned_elsewhere(os.path.join(frame.real, entry.name), frame.owner, False, content)):
            return None
        return SourceFile(path, frame.prefix + entry.name, st.st_size, st.st_mtime)

    # -- who yields a file that has several names ------------------------------

    def _second_name(self, path: str, st: os.stat_result, content: _Sniff) -> bool:
        """For a symlink to a file or a file named directly: True if this name
        is to be dropped because a walk takes the file, or it came already."""
        if self._owned_elsewhere(os.path.realpath(path), None, False, content):
            return True
        key = (st.st_dev, st.st_ino)
        if key in self.seen:
            return True
        self.seen.add(key)
        return False

    def _owned_elsewhere(self, real: str, me: _Root | None, is_dir: bool,
                         content: _Sniff | None = None) -> bool:
        """Does a walk that outranks ``me`` take ``real`` by a plain name?

        For a directory: does it walk everything below it? Precedence: an
        earlier input over a later one, any input over a symlinked walk, and
        any walk over a second name (``me`` None). Because every walk asks
        the same question, exactly one of them takes each file, whichever
        runs first.
        """
        for root in self.roots:
            if root is me or (me is not None and me.index is not None and root.index > me.index):
                continue
            if self._reaches(root, real, is_dir, content):
                return True
        if me is None or me.index is None:
            link = self._link_root_containing(real)
            if link is not None and link is not me and self._reaches(link, real, is_dir, content):
                return True
        return False

    def _link_root_containing(self, real: str) -> _Root | None:
        """The symlinked walk whose directory contains ``real`` (ancestor lookup)."""
        if not self.link_roots:
            return None
        path = real
        while True:
            root = self.link_roots.get(path)
            if root is not None:
                return root
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent

    def _reaches(self, root: _Root, real: str, is_dir: bool, content: _Sniff | None) -> bool:
        """Would ``root``'s walk take ``real`` under its plain name? For a
        directory: would it walk everything below it, as for an input?
        Mirrors the rules of ``_walk``, ``_enter`` and ``_file``."""
        if real == root.real:
            return is_dir and root.pats is None
        prefix = root.real if root.real.endswith(os.sep) else root.real + os.sep
        if not real.startswith(prefix):
            return False
        if any(real == x or real.startswith(x + os.sep) for x in self.excl_paths):
            return False
        parts = tuple(real[len(prefix):].split(os.sep))
        dirs = parts if is_dir else parts[:-1]
        if _STATE_DIR in dirs:
            return False
        start = 0            # components from here on are judged as in a directory input
        if root.pats is not None:
            for k in range(1, len(dirs) + 1):
                if _glob_match(parts[:k], root.pats, self.include_hidden):
                    start = k            # a directory the pattern names: walked whole
                    break
                if not _glob_match(parts[:k], root.pats, self.include_hidden, prefix=True):
                    return False
            else:
                if is_dir or not _glob_match(parts, root.pats, self.include_hidden):
                    return False
                return self._wanted(parts[-1], content)
        rest = parts[start:]
        if (rest if is_dir else rest[:-1]) and not self.recursive:
            return False
        if not self.include_hidden and any(p.startswith(".") for p in rest):
            return False
        return True if is_dir else self._wanted(parts[-1], content)

    def _wanted(self, name: str, content: _Sniff | None) -> bool:
        if _has_image_extension(name):
            return True
        if not self.all_files or content is None:
            return False
        try:
            return content.ok()
        except OSError:
            return False

    def _excluded(self, path: str, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino) in self.excl_ids or os.path.abspath(path) in self.excl_paths


class _Sniff:
    """A file's format from its first bytes, read at most once and only if asked."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fmt: str | None = None
        self.done = False

    def ok(self) -> bool:
        """True when the bytes are an image format we read (OSError if unreadable)."""
        if not self.done:
            self.fmt = _sniff_file(self.path)
            self.done = True
        return self.fmt in READ_FORMATS
