"""gpupipe.sources on real directory trees (real files, real symlinks, no mocks).

We run as root, where chmod 000 does not stop reads, so unreadable things are
made with what fails for root too: a directory removed during the scan, a
symlink loop, a dangling symlink, a FIFO.
"""

from __future__ import annotations

import inspect
import io
import os
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from gpupipe.errors import UnreadableInput, UsageError
from gpupipe.sources import ScanProblem, Skipped, SourceFile, check_inputs, discover, read_bytes
from tests.support import REPO_ROOT

ROOT = REPO_ROOT
PHOTO = ROOT / "examples" / "photos" / "Landscape_1.jpg"


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    """A real, small JPEG (the example photo at 1/8 scale)."""
    with Image.open(PHOTO) as im:
        im.draft("RGB", (225, 150))
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG")
        return buf.getvalue()


def make(root: Path, names: list[str], data: bytes = b"x") -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def rels(items) -> list[str]:
    return [str(i.relative) for i in items if isinstance(i, SourceFile)]


def of(kind, items) -> list:
    return [i for i in items if isinstance(i, kind)]


# ----------------------------------------------------------------- walks

def test_recursive_walk_is_sorted_and_filtered_by_extension(tmp_path: Path) -> None:
    src = make(tmp_path / "in", ["b/d/e.JPG", "a.jpg", "b/c.png", "f.TIFF", "z.txt", "b/notes.md",
                                 "g.jpeg", "h.webp", "i.gif", "j.bmp", "k.dib", "l.tif", "m.jpe", "n.jfif"])
    items = list(discover([src]))
    assert rels(items) == ["a.jpg", "b/c.png", "b/d/e.JPG", "f.TIFF", "g.jpeg", "h.webp", "i.gif",
                           "j.bmp", "k.dib", "l.tif", "m.jpe", "n.jfif"]
    first = items[0]
    assert first.path == str(src / "a.jpg") and first.size == 1
    assert first.mtime == os.stat(src / "a.jpg").st_mtime
    assert first.relative == "a.jpg"            # text, as outputs and the journal use it
    assert rels(discover([src], recursive=False)) == ["a.jpg", "f.TIFF", "g.jpeg", "h.webp", "i.gif",
                                                      "j.bmp", "k.dib", "l.tif", "m.jpe", "n.jfif"]


def test_discover_streams(tmp_path: Path) -> None:
    """Each directory is listed only when the walk reaches it: a file added to
    a directory not yet entered, after the first item came out, is found."""
    src = make(tmp_path / "in", ["a/1.jpg", "b/2.jpg"])
    it = discover([src])
    assert iter(it) is it
    assert str(next(it).relative) == "a/1.jpg"
    make(src, ["b/3.jpg"])
    assert rels(it) == ["b/2.jpg", "b/3.jpg"]


def test_hidden_files_and_state_dirs(tmp_path: Path) -> None:
    src = make(tmp_path / "in", ["a.jpg", ".h.jpg", ".cache/x.jpg", "sub/.y.png", ".gpupipe/z.jpg",
                                 "sub/.gpupipe/w.jpg"])
    assert rels(discover([src])) == ["a.jpg"]
    assert rels(discover([src], include_hidden=True)) == [".cache/x.jpg", ".h.jpg", "a.jpg", "sub/.y.png"]


def test_a_name_is_an_image_by_its_extension_as_splitext_reads_it(tmp_path: Path) -> None:
    """Dots that begin a name begin no extension (".jpg" is a hidden file without one); case does
    not matter; the last extension counts."""
    names = [".jpg", "..jpg", "...", ".a.jpg", "a.", "a..jpg", "A.JPG", "b.jpeg.txt", "x.png", "..x.png", "._.jpg",
             ". .jpg", "c.tar.webp", "noext"]
    src = make(tmp_path / "in", names)
    expected = sorted(n for n in names if os.path.splitext(n)[1].lower() in {".jpg", ".jpeg", ".png", ".webp"})
    assert expected == [". .jpg", "..x.png", "._.jpg", ".a.jpg", "A.JPG", "a..jpg", "c.tar.webp", "x.png"]
    assert rels(discover([src], include_hidden=True)) == expected


def test_single_files_are_taken_whatever_their_name(tmp_path: Path) -> None:
    make(tmp_path, ["photo.txt", "sub/.hidden.jpg"])
    items = list(discover([tmp_path / "photo.txt", tmp_path / "sub" / ".hidden.jpg"]))
    assert rels(items) == ["photo.txt", ".hidden.jpg"]


def test_all_files_sniffs_content(tmp_path: Path, jpeg: bytes) -> None:
    src = tmp_path / "in"
    make(src, ["photo.txt", "noext"], jpeg)
    make(src, ["readme.txt"], b"just words\n")
    make(src, ["notes.jpg"], b"text behind an image extension\n")
    make(src, ["empty.dat"], b"")
    buf = io.BytesIO()
    Image.open(PHOTO).resize((16, 16)).save(buf, "ICO")
    make(src, ["icon.dat"], buf.getvalue())
    items = list(discover([src], all_files=True))
    assert rels(items) == ["noext", "notes.jpg", "photo.txt"]    # notes.jpg: judged at decode
    reasons = {os.path.basename(i.path): i.reason for i in of(Skipped, items)}
    assert reasons == {"empty.dat": "empty file", "icon.dat": "unsupported image format: ICO",
                       "readme.txt": "not an image"}
    assert rels(discover([src])) == ["notes.jpg"]


# ----------------------------------------------------------------- globs

def test_globs(tmp_path: Path) -> None:
    src = make(tmp_path / "in", ["a.jpg", "b.png", ".h.jpg", "x/c.jpg", "x/y/d.jpg", "x/y/e.png",
                                 "2024-01/f.jpg", "2024-02/g.jpg", "2023-12/h.jpg", "notes.txt"])
    g = lambda pattern, **kw: rels(discover([str(src / pattern)], **kw))  # noqa: E731
    assert g("*.jpg") == ["a.jpg"]
    assert g(".*.jpg") == [".h.jpg"]
    assert g("**/*.jpg") == ["2023-12/h.jpg", "2024-01/f.jpg", "2024-02/g.jpg", "a.jpg", "x/c.jpg", "x/y/d.jpg"]
    assert g("**/*.png") == ["b.png", "x/y/e.png"]
    assert g("2024-*/*.jpg") == ["2024-01/f.jpg", "2024-02/g.jpg"]
    assert g("x/**") == ["c.jpg", "y/d.jpg", "y/e.png"]          # relative to the leading dir
    assert g("x/y/[de].*") == ["d.jpg", "e.png"]
    assert g("2024-0?") == ["2024-01/f.jpg", "2024-02/g.jpg"]   # matched directories are walked
    assert g("*") == rels(discover([src]))                       # like the shell's expansion
    cwd = os.getcwd()
    try:
        os.chdir(src)
        assert rels(discover(["x/*/*.jpg"])) == ["y/d.jpg"]      # relative to the leading dir
        assert rels(discover(["*.png"])) == ["b.png"]
    finally:
        os.chdir(cwd)
    with pytest.raises(UsageError, match="matches no image files"):
        check_inputs([str(src / "*.txt")])
    check_inputs([str(src / "*.txt")], all_files=True)


def test_missing_inputs_are_usage_errors_up_front(tmp_path: Path) -> None:
    make(tmp_path, ["a.jpg"])
    with pytest.raises(UsageError, match="nope.*does not exist"):
        check_inputs([tmp_path / "a.jpg", tmp_path / "nope"])
    with pytest.raises(UsageError, match=r"zz\*\.jpg.*matches no"):
        discover([tmp_path / "zz*.jpg"])           # raised by the call, before iterating
    with pytest.raises(UsageError):
        check_inputs([])


# ----------------------------------------------------------------- exclude

def test_output_dir_inside_the_input_is_not_entered(tmp_path: Path) -> None:
    src = make(tmp_path / "in", ["a.jpg", "out/a.jpg", "more/out/b.jpg"])
    assert rels(discover([src], exclude=[src / "out"])) == ["a.jpg", "more/out/b.jpg"]
    # Given relative to another spelling, and created only after discover() was called.
    it = discover([src], exclude=[src / "later" / ".." / "later"])
    make(src, ["later/c.jpg"])
    assert "later/c.jpg" not in rels(it)


# ----------------------------------------------------------------- symlinks, loops, dedupe

def test_symlink_loops_terminate(tmp_path: Path) -> None:
    src = make(tmp_path / "in", ["a.jpg", "sub/b.jpg"])
    os.symlink("..", src / "sub" / "up")              # loop back to the input root
    os.symlink(".", src / "sub" / "self")             # loop to itself
    os.symlink("spin.jpg", src / "spin.jpg")          # a link to itself: ELOOP
    items = list(discover([src]))
    assert rels(items) == ["a.jpg", "sub/b.jpg"]
    assert any("symbolic link loop" in p.message for p in of(ScanProblem, items))


def test_symlinked_dirs_and_files_are_followed_once(tmp_path: Path) -> None:
    outside = make(tmp_path / "outside", ["o.jpg", "deep/p.jpg"])
    src = make(tmp_path / "in", ["a.jpg"])
    os.symlink(outside, src / "link1")
    os.symlink(outside, src / "link2")
    os.symlink(outside / "o.jpg", src / "z_alias.jpg")
    os.symlink(outside / "deep", src / "link3")
    os.symlink(src / "a.jpg", src / "0_before.jpg")   # sorted before its target
    os.symlink(src / "a.jpg", src / "b_after.jpg")    # sorted after it
    assert rels(discover([src])) == ["a.jpg", "link1/deep/p.jpg", "link1/o.jpg"]


def test_symlinked_walks_rank_below_inputs(tmp_path: Path) -> None:
    """A directory reached both as an input and through a symlink, or through
    links from two inputs, is walked once; the input's own names win."""
    a = make(tmp_path / "a", ["a.jpg"])
    b = make(tmp_path / "b", ["b.jpg", "sub/c.jpg"])
    x = make(tmp_path / "x", ["x.jpg", "deep/y.jpg"])
    os.symlink(b, a / "to_b")
    os.symlink(x, a / "to_x")
    os.symlink(x, b / "to_x")
    os.symlink(x / "deep", b / "to_deep")
    os.symlink(tmp_path, x / "to_top")               # a link to the parent of every input
    got = rels(discover([a, b]))
    assert got == ["a.jpg", "to_x/deep/y.jpg", "to_x/x.jpg", "b.jpg", "sub/c.jpg"]
    assert rels(discover([a, str(x / "*.jpg")])) == ["a.jpg", "to_b/b.jpg", "to_b/sub/c.jpg",
                                                     "to_b/to_deep/y.jpg", "x.jpg"]
    alone = [i.path for i in discover([a]) if isinstance(i, SourceFile)]
    assert len(alone) == 5 and len({os.path.realpath(p) for p in alone}) == 5
    os.symlink(b, tmp_path / "b_link")               # an input that is itself a symlink
    assert rels(discover([tmp_path / "b_link", b])) == ["b.jpg", "sub/c.jpg", "to_deep/y.jpg",
                                                        "to_x/to_top/a/a.jpg", "to_x/x.jpg"]


def test_the_same_file_reached_twice_is_yielded_once(tmp_path: Path) -> None:
    src = make(tmp_path / "in", ["a.jpg", "sub/b.jpg"])
    assert rels(discover([src, src / "a.jpg"])) == ["a.jpg", "sub/b.jpg"]
    assert rels(discover([src / "sub" / "b.jpg", src])) == ["a.jpg", "sub/b.jpg"]   # mirrored wins
    assert rels(discover([src, src])) == ["a.jpg", "sub/b.jpg"]
    assert rels(discover([src / "sub", src])) == ["b.jpg", "a.jpg"]                 # first root owns
    assert rels(discover([src, src / "sub"])) == ["a.jpg", "sub/b.jpg"]
    assert rels(discover([str(src / "*.jpg"), str(src / "a*")])) == ["a.jpg"]
    assert rels(discover([src / "a.jpg", src / "a.jpg"])) == ["a.jpg"]
    os.symlink(src / "a.jpg", tmp_path / "l1.jpg")
    os.symlink(src / "a.jpg", tmp_path / "l2.jpg")
    assert rels(discover([tmp_path / "l1.jpg", tmp_path / "l2.jpg"])) == ["l1.jpg"]
    os.link(src / "a.jpg", src / "hard.jpg")          # a hard link is a name of its own
    assert rels(discover([src])) == ["a.jpg", "hard.jpg", "sub/b.jpg"]


# ----------------------------------------------------------------- names

def test_unicode_and_undecodable_names(tmp_path: Path, jpeg: bytes) -> None:
    src = make(tmp_path / "in", ["фото.jpg", "日本/写真.png", "emoji 😀.jpg", "cafe\u0301.jpg"])
    raw = os.path.join(os.fsencode(src), b"caf\xe9-latin1.jpg")     # not valid UTF-8
    with open(raw, "wb") as f:
        f.write(jpeg)
    items = list(discover([src]))
    names = rels(items)
    assert len(names) == 5 and "фото.jpg" in names and "日本/写真.png" in names
    latin1 = next(i for i in items if os.fsencode(i.path).endswith(b"caf\xe9-latin1.jpg"))
    assert read_bytes(latin1.path) == jpeg
    assert list(discover([src], all_files=True)) == items


# ----------------------------------------------------------------- unreadable things

def test_directory_removed_mid_scan_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """Root can read any directory, so unreadability is made by deleting one
    after it was listed in its parent but before it is entered."""
    src = make(tmp_path / "in", ["a/1.jpg", "b/2.jpg", "c/3.jpg"])
    it = discover([src])
    assert str(next(it).relative) == "a/1.jpg"
    shutil.rmtree(src / "b")
    rest = list(it)
    assert rels(rest) == ["c/3.jpg"]
    [problem] = of(ScanProblem, rest)
    assert problem.path == str(src / "b") and "no such file or directory" in problem.message


def test_missing_root_dir_or_non_dir_become_scan_problems(tmp_path: Path) -> None:
    src = make(tmp_path / "in", ["a.jpg"])
    make(tmp_path, ["gone/x.jpg"])
    it = discover([src, tmp_path / "gone"])
    shutil.rmtree(tmp_path / "gone")                  # vanishes after the up-front check
    items = list(it)
    assert rels(items) == ["a.jpg"] and len(of(ScanProblem, items)) == 1


def test_dangling_symlink_is_yielded_and_read_fails_clearly(tmp_path: Path) -> None:
    src = make(tmp_path / "in", ["a.jpg"])
    os.symlink(src / "missing.jpg", src / "broken.jpg")
    os.symlink(src / "missing.bin", src / "broken.bin")
    items = list(discover([src], all_files=True))
    assert rels(items) == ["a.jpg", "broken.jpg"]
    assert [os.path.basename(s.path) for s in of(Skipped, items)] == ["broken.bin"]
    with pytest.raises(UnreadableInput, match="broken symbolic link"):
        read_bytes(src / "broken.jpg")


def test_fifo_is_skipped_not_read(tmp_path: Path) -> None:
    src = make(tmp_path / "in", ["a.jpg"])
    os.mkfifo(src / "pipe.jpg")                      # reading it would block forever
    items = list(discover([src]))
    assert rels(items) == ["a.jpg"]
    assert [os.path.basename(s.path) for s in of(Skipped, items)] == ["pipe.jpg"]


def test_read_bytes_errors(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInput, match="file vanished before it was read"):
        read_bytes(tmp_path / "never-there.jpg")
    with pytest.raises(UnreadableInput, match="is a directory"):
        read_bytes(tmp_path)
    make(tmp_path, ["ok.jpg"], b"abc")
    assert read_bytes(tmp_path / "ok.jpg") == b"abc"


def test_deep_trees_do_not_hit_the_recursion_limit(tmp_path: Path) -> None:
    """The walk keeps its own stack: a tree deeper than the interpreter's
    recursion limit (lowered here so that the tree stays small enough for
    pytest's recursive clean-up) is walked."""
    path = str(tmp_path / "in")
    os.mkdir(path)
    for _ in range(300):                              # (os.makedirs itself recurses)
        path = os.path.join(path, "d")
        os.mkdir(path)
    make(Path(path), ["x.jpg"])
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 60)
    try:
        [item] = rels(discover([tmp_path / "in"]))
    finally:
        sys.setrecursionlimit(limit)
    assert item.endswith("d/x.jpg") and item.count("/") == 300


@pytest.mark.parametrize("spelling", ["in", "in/", "./in", "in//", "./in/./", "in/.//"])
def test_paths_are_spelled_as_pathlib_would(tmp_path: Path, monkeypatch, spelling: str) -> None:
    """Paths are text (no pathlib objects per file), spelled as str(Path(...)) would: the report and
    the outcomes name a file the same way however the input was typed."""
    make(tmp_path / "in", ["a.jpg", "b/.c.jpg"])
    monkeypatch.chdir(tmp_path)
    items = [i for i in discover([spelling], include_hidden=True) if isinstance(i, SourceFile)]
    assert [(i.path, i.relative) for i in items] == [("in/a.jpg", "a.jpg"), ("in/b/.c.jpg", "b/.c.jpg")]
    assert [str(Path(i.path)) for i in items] == [i.path for i in items]
