"""The output side under attack: nothing is written outside OUT, no file gpupipe did not write is
replaced, no input is ever replaced, a bad name fails its input alone, and one OUT has one run.

Real files, symlinks, folders, FUSE mounts and processes throughout; the run is driven through
the CLI or gpupipe.run, so what is asserted is what a user sees.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import gpupipe
from gpupipe import ops
from gpupipe.cli import app
from gpupipe.engine import writer
from gpupipe.errors import WriteError

from tests.support.fusemount import fuse_mount
from tests.support import REPO_ROOT

ROOT = REPO_ROOT
EXAMPLES = ROOT / "examples" / "photos"
FAULTFS_WRITES = REPO_ROOT / "tests" / "support" / "faultfs_writes.py"

runner = CliRunner()


def gp(*args) -> "object":
    """The CLI, in-process; ``.text`` is its output with the terminal's line wrapping undone."""
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    result.text = " ".join(result.output.split())
    return result


def make_png(path: Path, color: str = "red", size: tuple[int, int] = (48, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="PNG")
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(directory: Path) -> dict[str, str]:
    """Every file below ``directory`` (symlinks not followed) and its content's hash, but for
    gpupipe's own state (.gpupipe: the run's lock, the journal)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if d != ".gpupipe"]
        for name in filenames:
            path = Path(dirpath) / name
            found[str(path.relative_to(directory))] = "link" if path.is_symlink() else digest(path)
    return found


def temporaries(directory: Path) -> list[str]:
    return [name for _, _, names in os.walk(directory) for name in names if name.endswith(".tmp")]


def outcomes_by_name(result) -> dict[str, object]:
    return {Path(o.path).name: o for o in result.outcomes}


# ---------------------------------------------------------------------- finding 1: never replace what isn't ours

def test_in_inside_out_keeps_the_users_original(tmp_path: Path, monkeypatch) -> None:
    """The issue's reproduction: `gpupipe run in/sub -o in` replaced in/kodim03.png with a thumbnail
    of in/sub/kodim03.png, exit 0. Now that input fails as output_exists and the original is kept."""
    monkeypatch.chdir(tmp_path)
    original = make_png(Path("in/kodim03.png"), "blue", (80, 60))
    Path("in/sub").mkdir()
    shutil.copy(EXAMPLES / "chapel.png", "in/sub/kodim03.png")
    before = digest(original)
    result = gp("run", "in/sub", "-o", "in", "--thumbnail", "64")
    assert result.exit_code == 1, result.output
    assert "output_exists" in result.text
    assert digest(original) == before
    assert not temporaries(tmp_path / "in")


def test_a_file_the_journal_did_not_write_is_kept_unless_overwrite(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_png(src / "a.png", "red")
    make_png(src / "b.png", "green")
    mine = make_png(out / "a.png", "white", (7, 7))          # the user's own file at an output path
    before = digest(mine)
    result = gpupipe.run(src, out, [ops.Thumbnail(16)], backend="cpu")
    by_name = outcomes_by_name(result)
    assert by_name["a.png"].status == "failed" and by_name["a.png"].error_class == "output_exists"
    assert str(out / "a.png") in by_name["a.png"].message and "--overwrite" in by_name["a.png"].message
    assert by_name["b.png"].status == "ok" and result.exit_code == 1
    assert digest(mine) == before and not temporaries(out)
    # A re-run skips b (done) and fails a again; --overwrite replaces the user's file.
    result = gpupipe.run(src, out, [ops.Thumbnail(16)], backend="cpu", overwrite=True, retry_failed=True)
    assert result.summary.processed == 1 and result.summary.failed == 0
    with Image.open(out / "a.png") as im:
        assert im.size == (16, 11)


def test_outputs_the_journal_wrote_are_replaced_on_a_forced_rerun(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_png(src / "a.png")
    assert gpupipe.run(src, out, [ops.Thumbnail(16)], backend="cpu").exit_code == 0
    result = gpupipe.run(src, out, [ops.Thumbnail(8)], backend="cpu", force=True)
    assert result.exit_code == 0 and result.summary.processed == 1
    with Image.open(out / "a.png") as im:
        assert im.size == (8, 5)


def test_without_a_journal_a_rerun_keeps_every_output_it_cannot_vouch_for(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_png(src / "a.png")
    assert gp("run", src, "-o", out, "--thumbnail", "16", "--no-journal").exit_code == 0
    stamp = (out / "a.png").stat().st_mtime_ns
    result = gp("run", src, "-o", out, "--thumbnail", "8", "--no-journal")
    assert result.exit_code == 1 and "output_exists" in result.text
    assert (out / "a.png").stat().st_mtime_ns == stamp
    assert gp("run", src, "-o", out, "--thumbnail", "8", "--no-journal", "--overwrite").exit_code == 0


def test_an_input_is_never_replaced_even_with_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    named = make_png(out / "a.png", "blue")                 # a file named as input, inside OUT
    inside = make_png(out / "in" / "b.png", "green")         # an input folder inside OUT
    before = tree(out)
    result = gpupipe.run([named], out, [ops.Thumbnail(16)], backend="cpu", overwrite=True, journal=False)
    assert [o.error_class for o in result.outcomes] == ["output_conflict"]
    assert "never writes over or among the inputs" in result.outcomes[0].message
    # The template sends b's output into its own input folder: refused even for a new name.
    result = gpupipe.run([out / "in"], out, gpupipe.Spec.single([ops.Thumbnail(16)], template="in/{stem}_t.{ext}"),
                         backend="cpu", overwrite=True, journal=False)
    assert [o.error_class for o in result.outcomes] == ["output_conflict"]
    assert tree(out) == before and digest(inside) == before["in/b.png"]


def test_output_equal_to_an_input_folder_is_a_usage_error(tmp_path: Path) -> None:
    src = tmp_path / "in"
    make_png(src / "a.png")
    before = tree(src)
    for output in (src, tmp_path / "link-to-in"):
        if output != src:
            output.symlink_to(src)
        result = gp("run", src, "-o", output, "--thumbnail", "16")
        assert result.exit_code == 2, result.output
        assert "is the input folder" in result.text
        assert os.listdir(src) == ["a.png"] and tree(src) == before     # no journal (or lock) left inside
    result = gp("run", f"{src}/*.png", "-o", src, "--thumbnail", "16")        # a glob's folder too
    assert result.exit_code == 2 and "is the input folder" in result.text


def test_a_file_appearing_at_the_output_path_mid_write_is_kept(tmp_path: Path) -> None:
    """The no-replace placement is linkat, which fails on an existing name: there is no window
    between looking and renaming in which a user's new file could be replaced."""
    out = tmp_path / "out"
    out.mkdir()
    writer.write_output(str(out), "a.png", b"first", fsync=False)
    with pytest.raises(gpupipe.errors.OutputExists):
        writer.write_output(str(out), "a.png", b"second", fsync=False)
    assert (out / "a.png").read_bytes() == b"first" and not temporaries(out)
    writer.write_output(str(out), "a.png", b"third", fsync=False, replace=True)
    assert (out / "a.png").read_bytes() == b"third"


def test_an_output_a_killed_run_wrote_but_never_recorded_is_taken_as_done(tmp_path: Path) -> None:
    """A run killed between writing an output and its journal's commit leaves a file no journal
    vouches for; the resumed run would write exactly its bytes, so it is that output, not the
    user's: the resume succeeds (and a file with other bytes is still kept)."""
    src, out = tmp_path / "in", tmp_path / "out"
    make_png(src / "a.png")
    make_png(src / "b.png", "green")
    assert gpupipe.run(src, out, [ops.Thumbnail(16)], backend="cpu", journal=False).exit_code == 0
    stamp = (out / "a.png").stat().st_mtime_ns
    make_png(out / "b.png", "white", (16, 11))              # same size, other bytes: the user's
    result = gpupipe.run(src, out, [ops.Thumbnail(16)], backend="cpu")
    by_name = outcomes_by_name(result)
    assert by_name["a.png"].status == "ok" and (out / "a.png").stat().st_mtime_ns == stamp
    assert by_name["b.png"].error_class == "output_exists"


# ---------------------------------------------------------------------- finding 2: never follow a link below OUT

def test_a_symlinked_folder_inside_out_is_not_followed(tmp_path: Path) -> None:
    src, out, victim = tmp_path / "in", tmp_path / "out", tmp_path / "victim"
    make_png(src / "sub" / "a.png")
    make_png(src / "b.png")
    victim.mkdir()
    out.mkdir()
    (out / "sub").symlink_to(victim)
    result = gpupipe.run(src, out, [ops.Thumbnail(16)], backend="cpu", overwrite=True)
    by_name = outcomes_by_name(result)
    assert by_name["a.png"].error_class == "write_error"
    assert "symbolic link" in by_name["a.png"].message and str(out / "sub") in by_name["a.png"].message
    assert by_name["b.png"].status == "ok"
    assert os.listdir(victim) == []                           # nothing written outside OUT


def test_a_symlink_at_an_output_path_is_neither_followed_nor_replaced(tmp_path: Path) -> None:
    src, out, victim = tmp_path / "in", tmp_path / "out", tmp_path / "victim.png"
    make_png(src / "a.png")
    victim.write_bytes(b"precious")
    out.mkdir()
    (out / "a.png").symlink_to(victim)
    for overwrite in (False, True):
        result = gpupipe.run(src, out, [ops.Thumbnail(16)], backend="cpu", overwrite=overwrite, journal=False)
        assert result.outcomes[0].error_class == "write_error", result.outcomes[0]
        assert "symbolic link" in result.outcomes[0].message
        assert victim.read_bytes() == b"precious" and (out / "a.png").is_symlink()
        assert not temporaries(out)


def test_a_file_where_an_output_folder_belongs_fails_that_input(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_png(src / "sub" / "a.png")
    make_png(src / "b.png")
    out.mkdir()
    (out / "sub").write_bytes(b"a file, not a folder")
    result = gpupipe.run(src, out, [ops.Thumbnail(16)], backend="cpu")
    by_name = outcomes_by_name(result)
    assert by_name["a.png"].error_class == "write_error" and "not a folder" in by_name["a.png"].message
    assert by_name["b.png"].status == "ok"


def test_out_itself_may_be_a_symlink(tmp_path: Path) -> None:
    src, real = tmp_path / "in", tmp_path / "real-out"
    make_png(src / "sub" / "a.png")
    real.mkdir()
    (tmp_path / "out").symlink_to(real)
    result = gpupipe.run(src, tmp_path / "out", [ops.Thumbnail(16)], backend="cpu")
    assert result.exit_code == 0 and (real / "sub" / "a.png").is_file()


# ---------------------------------------------------------------------- finding 3: templates stay inside OUT

@pytest.mark.parametrize("template", [
    "{ext:.<2.0}/escape/{stem}.{ext}",          # pads to '..'
    "{ext:/<1.0}tmp/x/{stem}.{ext}",            # pads to an absolute path
    "{stem:{name.__class__}}",                 # attribute access in a nested spec
    "{name.__class__}",
    "{stem!r}.{ext}",
    "{stem:>999999999999}",                     # a huge width
    ".",                                        # OUT itself
    "..",
    "../{stem}.{ext}",
    "/tmp/{stem}.{ext}",
    "a//{stem}.{ext}",
    "{stem}/./x.{ext}",
    "{variant}/{stem}.{ext}",                   # no variant name: '/photo.jpg'
    "{}",
])
def test_a_template_that_could_leave_out_is_a_usage_error(tmp_path: Path, template: str) -> None:
    src = tmp_path / "in"
    make_png(src / "a.png")
    result = gp("run", src, "-o", tmp_path / "out", "--thumbnail", "16", "--name-template", template)
    assert result.exit_code == 2, result.output
    assert "name template" in result.text
    assert tree(tmp_path) == {"in/a.png": digest(src / "a.png")}      # nothing written anywhere


@pytest.mark.parametrize("name", ["..", "."])
def test_a_variant_named_dot_or_dotdot_is_a_usage_error(tmp_path: Path, name: str) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(f'[[variant]]\nname = "{name}"\ntemplate = "{{variant}}/{{stem}}.{{ext}}"\n'
                    'ops = [{ op = "thumbnail", size = 16 }]\n')
    make_png(tmp_path / "in" / "a.png")
    result = gp("run", tmp_path / "in", "-o", tmp_path / "out", "--spec", spec)
    assert result.exit_code == 2 and "variant name" in result.text
    assert not (tmp_path / "out").exists()


def test_an_input_whose_stem_climbs_out_fails_alone(tmp_path: Path) -> None:
    """'...png' has the stem '..': '{stem}/{stem}/x.{ext}' made '../../x.png'. (Named directly:
    a walk leaves it, as a hidden name without an extension.)"""
    src, out = tmp_path / "in" / "deep", tmp_path / "out"
    inputs = [make_png(src / "...png"), make_png(src / "ok.png")]
    result = gpupipe.run(inputs, out, gpupipe.Spec.single([ops.Thumbnail(16)], template="{stem}/{stem}/x.{ext}"),
                         backend="cpu")
    by_name = outcomes_by_name(result)
    assert by_name["...png"].error_class == "bad_output_name"
    assert "'..'" in by_name["...png"].message
    assert by_name["ok.png"].status == "ok" and (out / "ok" / "ok" / "x.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


# ---------------------------------------------------------------------- finding 6: long names, deep trees

def test_a_255_byte_name_is_written(tmp_path: Path) -> None:
    """The temporary name used to add ~28 bytes to the final one: ENAMETOOLONG, then the
    cleanup raised again and stopped the run. Temporaries are short and fixed now."""
    src, out = tmp_path / "in", tmp_path / "out"
    name = "n" * 251 + ".png"
    make_png(src / name)
    make_png(src / "short.png")
    result = gp("run", src, "-o", out, "--thumbnail", "16")
    assert result.exit_code == 0, result.output
    assert (out / name).is_file() and (out / "short.png").is_file() and not temporaries(out)


def test_a_name_longer_than_name_max_fails_that_input(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_png(src / ("n" * 251 + ".png"))
    make_png(src / "short.png")
    result = gpupipe.run(src, out, gpupipe.Spec.single([ops.Thumbnail(16)], template="{name}.{ext}"),
                         backend="cpu")
    by_name = outcomes_by_name(result)
    assert by_name["n" * 251 + ".png"].error_class == "bad_output_name"
    assert "longer than 255 bytes" in by_name["n" * 251 + ".png"].message
    assert by_name["short.png"].status == "ok" and result.summary.stop_reason is None


def test_a_name_the_filesystem_refuses_fails_cleanly(tmp_path: Path) -> None:
    """Whatever the template allows, the filesystem has the last word: ENAMETOOLONG from the
    kernel is that output's WriteError, and its cleanup (which met the same error) is quiet."""
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(WriteError, match="too long"):
        writer.write_output(str(out), "n" * 300 + ".png", b"data", fsync=False)
    assert os.listdir(out) == []


def _deep_tree(root: Path, depth: int, data: bytes, every: int) -> int:
    """``depth`` nested folders 'd' below ``root`` (made fd-relative: the path outgrows PATH_MAX),
    with an image every ``every`` levels; the number of images."""
    root.mkdir(parents=True)
    fd, images = os.open(root, os.O_RDONLY | os.O_DIRECTORY), 0
    try:
        for level in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            if level % every == every - 1:
                image = os.open("x.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(image, data)
                os.close(image)
                images += 1
    finally:
        os.close(fd)
    return images


@pytest.fixture
def deep_dir(tmp_path: Path):
    """A folder for trees too deep for pytest's own cleanup (shutil.rmtree recurses): GNU rm
    removes them."""
    yield tmp_path
    for name in ("in", "out"):
        subprocess.run(["rm", "-rf", str(tmp_path / name)], check=True)


def test_a_2000_deep_tree_is_mirrored_without_recursion(deep_dir: Path) -> None:
    tmp_path = deep_dir
    make_png(tmp_path / "p.png", size=(8, 8))
    images = _deep_tree(tmp_path / "in", 2000, (tmp_path / "p.png").read_bytes(), every=400)
    result = gpupipe.run(tmp_path / "in", tmp_path / "out", [ops.Thumbnail(4)], backend="cpu")
    assert result.summary.stop_reason is None
    assert len(result.outcomes) == images == 5
    for outcome in result.outcomes:              # written, or failed with a message: never a stop
        assert outcome.status == "ok" or (outcome.status == "failed" and outcome.message), outcome
    assert sum(o.status == "ok" for o in result.outcomes) == images
    fd = os.open(tmp_path / "out", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(2000):
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        assert os.stat("x.png", dir_fd=fd).st_size > 0
    finally:
        os.close(fd)


def test_temporaries_of_killed_runs_are_removed_old_and_new_names(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_png(src / "sub" / "a.png")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / "sub").mkdir(parents=True)
    here = writer.THIS_MACHINE
    elsewhere = "0123abcd" if here != "0123abcd" else "89abcdef"
    stale = [f".gpupipe-{dead.pid}-{here}-0123abcd.tmp", f".gpupipe-{dead.pid}-0123abcd.tmp",
             f".a.png.gpupipe-{dead.pid}-89abcdef.tmp"]
    for name in stale:
        (out / "sub" / name).write_bytes(b"half a png")
    live = [f".gpupipe-{os.getpid()}-{here}-0123abcd.tmp", f".gpupipe-{os.getpid()}-0123abcd.tmp",
            # another machine's (a Ray task's on shared storage): whether its process lives is not known here
            f".gpupipe-{dead.pid}-{elsewhere}-0123abcd.tmp"]
    for name in live:
        (out / "sub" / name).write_bytes(b"a live process's")
    assert gpupipe.run(src, out, [ops.Thumbnail(16)], backend="cpu").exit_code == 0
    assert sorted(os.listdir(out / "sub")) == sorted([*live, "a.png"])


def test_temporary_names_are_unique_and_name_the_process_that_made_them() -> None:
    """Made from a counter, not drawn per file: still never twice the same in a process, always
    in the form the stale-temporary sweep reads (its process and machine), and a forked worker's
    name its own process, not the engine's it was forked from."""
    names = [writer._temporary_name() for _ in range(5000)]
    assert len(set(names)) == len(names)
    for name in names[:3] + names[-3:]:
        match = writer._TEMPORARY.match(name)
        assert match and int(match[1]) == os.getpid() and match[2] == writer.THIS_MACHINE
    read, write = os.pipe()
    child = os.fork()
    if child == 0:                                    # the forked worker: its name, on the pipe
        os.write(write, writer._temporary_name().encode())
        os._exit(0)
    os.close(write)
    made = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(child, 0)
    assert writer._TEMPORARY.match(made)[1] == str(child) and made not in names


# ---------------------------------------------------------------------- finding 16: one run per OUT

def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _locked(directory: Path) -> bool:
    """Whether another process holds the flock on ``directory`` (tried, and let go at once)."""
    if not directory.is_dir():
        return False
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_two_runs_on_one_output_are_refused_whatever_their_journals(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(30):
        shutil.copy(EXAMPLES / "Landscape_1.jpg", src / f"{i:02d}.jpg")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(out), "--resize",
                              "3000x3000", "--exact", "--blur", "4", "--workers", "1", "--quiet"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: _locked(out) or first.poll() is not None)
        assert first.poll() is None, first.communicate()
        for extra in (["--no-journal"], ["--journal", str(tmp_path / "elsewhere.sqlite")], []):
            result = gp("run", src, "-o", out, "--thumbnail", "16", *extra)
            assert result.exit_code == 2, result.output
            assert f"in use by gpupipe pid {first.pid}" in result.text
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=120)
    assert not (tmp_path / "elsewhere.sqlite").exists()
    # The lock went with the run: the next one may write, and --no-journal leaves no trace in OUT.
    assert not _locked(out)
    assert gp("run", src / "00.jpg", "-o", tmp_path / "o2", "--thumbnail", "16", "--no-journal").exit_code == 0
    assert os.listdir(tmp_path / "o2") == ["00.jpg"]


# ---------------------------------------------------------------------- finding 15 (write side): transient errors

@pytest.fixture
def flaky_output(tmp_path: Path, request):
    """An output folder behind a FUSE mount whose first ``request.param`` writes fail with EIO."""
    backing = tmp_path / "backing"
    backing.mkdir()
    yield from fuse_mount(FAULTFS_WRITES, backing, tmp_path / "mnt", ["--fail-writes", str(request.param)])


@pytest.mark.parametrize("flaky_output", [2], indirect=True)
def test_transient_write_errors_are_retried(flaky_output: Path, tmp_path: Path) -> None:
    make_png(tmp_path / "in" / "a.png")
    result = gpupipe.run(tmp_path / "in", flaky_output / "out", [ops.Thumbnail(16)], backend="cpu", retries=3,
                         journal=False)
    assert result.summary.processed == 1 and result.exit_code == 0, result.outcomes
    with Image.open(flaky_output / "out" / "a.png") as im:
        assert im.size == (16, 11)
    assert not temporaries(flaky_output)


@pytest.mark.parametrize("flaky_output", [100], indirect=True)
def test_a_write_that_keeps_failing_fails_that_input_after_the_retries(flaky_output: Path, tmp_path: Path) -> None:
    make_png(tmp_path / "in" / "a.png")
    result = gpupipe.run(tmp_path / "in", flaky_output / "out", [ops.Thumbnail(16)], backend="cpu", retries=2,
                         journal=False)
    outcome = result.outcomes[0]
    assert outcome.error_class == "write_error" and "after 3 attempts" in outcome.message
    assert result.summary.stop_reason is None and not temporaries(flaky_output)


@pytest.fixture
def forgetful_output(tmp_path: Path, request):
    """An output folder behind a FUSE mount whose first fsync (or close: ``request.param``) of an
    output fails with EIO: a disk that could not keep what it was given, or a network filesystem
    reporting a late write error."""
    backing = tmp_path / "backing"
    backing.mkdir()
    yield from fuse_mount(FAULTFS_WRITES, backing, tmp_path / "mnt", ["--fail-writes", "0", request.param, "1"])


@pytest.mark.parametrize("forgetful_output", ["--fail-fsyncs", "--fail-closes"], indirect=True)
def test_an_output_the_disk_could_not_keep_fails_alone(forgetful_output: Path, tmp_path: Path) -> None:
    """One file of a chunk fails its fsync, or its close after it: that input fails as a write
    error and its file never appears under its name; the rest of the chunk is placed, and no
    temporary is left. The chunk's write-back of the whole filesystem does not stand in for each
    file's fsync (on FUSE it never asks the filesystem about the file)."""
    for i in range(6):
        make_png(tmp_path / "in" / f"{i}.png")
    result = gpupipe.run(tmp_path / "in", forgetful_output / "out", [ops.Thumbnail(16)], backend="cpu",
                         workers=1, journal=False)
    assert len(result.outcomes) == 6 and result.summary.processed == 5 and result.exit_code == 1
    [lost] = result.failed
    name = Path(lost.path).name
    assert lost.error_class == "write_error" and lost.message == \
        f"cannot write {forgetful_output / 'out' / name}: Input/output error"
    assert sorted(os.listdir(forgetful_output / "out")) == sorted({f"{i}.png" for i in range(6)} - {name})
    assert result.summary.stop_reason is None and not temporaries(forgetful_output)


def _stage_and_finish(out: Path, files: int, fsync: bool = True, prefix: str = "") -> writer.ChunkWrites:
    chunk = writer.ChunkWrites(str(out), fsync=fsync)
    for i in range(files):
        chunk.stage(i, f"{prefix}{i}.bin", f"{prefix}{i}".encode() * 1000, replace=False)
    assert chunk.finish() == {}
    return chunk


def test_a_chunk_is_written_back_with_its_filesystem_unless_others_hold_much_unwritten(tmp_path: Path) -> None:
    """A chunk's outputs are written back with their whole filesystem once (syncfs), then each is
    fsynced. Where another program holds more than OTHERS_UNWRITTEN_MOST unwritten, which syncfs
    would wait for, each file is fsynced alone. Either way every output is placed whole."""
    out = tmp_path / "out"
    out.mkdir()
    os.sync()                                   # what earlier tests left unwritten
    assert _stage_and_finish(out, writer.WRITE_BACK_FROM, prefix="a").written_back
    other = tmp_path / "other program's file"
    with open(other, "wb") as unwritten:        # written, never synced: it waits in the page cache
        unwritten.write(bytes(2 * writer.OTHERS_UNWRITTEN_MOST))
    try:
        if writer._unwritten_bytes() < writer.OTHERS_UNWRITTEN_MOST:
            pytest.skip(f"{tmp_path} keeps nothing unwritten (a tmpfs): no other program's data to wait for")
        assert not _stage_and_finish(out, writer.WRITE_BACK_FROM, prefix="b").written_back
    finally:
        other.unlink()                          # its pages go with it, unwritten
    assert tree(out) == {f"{c}{i}.bin": hashlib.sha256(f"{c}{i}".encode() * 1000).hexdigest()
                         for c in "ab" for i in range(writer.WRITE_BACK_FROM)}


def test_a_chunk_of_few_outputs_or_without_fsync_is_not_written_back(tmp_path: Path) -> None:
    os.sync()
    assert not _stage_and_finish(tmp_path, writer.WRITE_BACK_FROM - 1).written_back
    assert not _stage_and_finish(tmp_path, writer.WRITE_BACK_FROM, fsync=False, prefix="x").written_back
    assert len(os.listdir(tmp_path)) == 2 * writer.WRITE_BACK_FROM - 1


def test_a_full_disk_still_stops_the_run(tmp_path: Path) -> None:
    """ENOSPC is the disk's failure, not a file's: not retried, one message, the run stops."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    out = tmp_path / "out"
    out.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(out)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        src = tmp_path / "in"
        src.mkdir()
        for i in range(6):
            shutil.copy(EXAMPLES / "chapel.png", src / f"{i}.png")
        result = gpupipe.run(src, out, [], backend="cpu", journal=False, workers=1)
        assert result.exit_code == 1 and "No space left" in (result.summary.stop_reason or "")
        assert not temporaries(out)
    finally:
        subprocess.run(["umount", str(out)], check=False)
    assert errno.ENOSPC in writer.SYSTEM_ERRNOS


# ---------------------------------------------------------------------- the same rules in Ray's tasks

@pytest.mark.parametrize("actor_stages", [False, True])
def test_ray_tasks_write_by_the_same_rules(tmp_path: Path, actor_stages: bool) -> None:
    """Ray tasks write outputs themselves: the policy and the paths the journal wrote travel to them."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'gpupipe[ray]')")
    from gpupipe.engine.options import RunOptions
    from gpupipe.engine.ray_engine import RayEngine
    from gpupipe.journal import Journal

    src, out, victim = tmp_path / "in", tmp_path / "out", tmp_path / "victim"
    for name in ("a.png", "b.png", "sub/c.png"):
        make_png(src / name)
    victim.mkdir()
    mine = make_png(out / "a.png", "white", (5, 5))
    (out / "sub").symlink_to(victim)
    spec = gpupipe.Spec.single([ops.Thumbnail(16)])

    def run(**options):
        journal = Journal(tmp_path / "journal.sqlite", spec.hash(), **options)
        try:
            return RayEngine(spec, "cpu", RunOptions(workers=2, journal=journal),
                             actor_stages=actor_stages).run([src], out)
        finally:
            journal.close()

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 * 2**20)
    try:
        by_name = outcomes_by_name(run())
        assert by_name["a.png"].error_class == "output_exists" and digest(mine) == digest(out / "a.png")
        assert by_name["c.png"].error_class == "write_error" and os.listdir(victim) == []
        assert by_name["b.png"].status == "ok"
        (out / "b.png").write_bytes(b"not what the run wrote")       # recorded by the journal: replaced
        by_name = outcomes_by_name(run(force=True))
        assert by_name["b.png"].status == "ok" and by_name["a.png"].error_class == "output_exists"
        with Image.open(out / "b.png") as im:
            assert im.size == (16, 11)
    finally:
        ray.shutdown()
    assert not temporaries(out)


def test_the_ray_drain_flag_is_not_created_through_a_symlink(tmp_path: Path) -> None:
    """The Ray driver tells its tasks to drain with a flag file in OUT/.gpupipe; a link planted
    there is neither followed nor written through."""
    from gpupipe.engine.ray_engine import _raise_flag

    out, victim = tmp_path / "out", tmp_path / "victim"
    (out / ".gpupipe").mkdir(parents=True)
    flag = out / ".gpupipe" / "drain-1-0123abcd"
    flag.symlink_to(victim)
    _raise_flag(out, str(flag))
    assert not victim.exists() and flag.is_symlink()
    victim.mkdir()
    shutil.rmtree(out / ".gpupipe")
    (out / ".gpupipe").symlink_to(victim)
    _raise_flag(out, str(flag))
    assert os.listdir(victim) == []
    (out / ".gpupipe").unlink()
    _raise_flag(out, str(flag))
    assert flag.is_file()


def test_an_output_exists_failure_is_retried_once_the_file_is_moved_away(tmp_path: Path) -> None:
    """output_exists is the run's situation, not the input's fault: a resume tries again
    without --retry-failed, and succeeds once the user moved the file away."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    shutil.copy(EXAMPLES / "Landscape_1.jpg", inputs / "a.jpg")
    out.mkdir()
    (out / "a.jpg").write_bytes(b"the user's own file")
    first = gpupipe.run(inputs, out, [ops.Thumbnail(32)], backend="cpu", workers=1)
    assert [o.error_class for o in first.outcomes] == ["output_exists"]
    (out / "a.jpg").unlink()
    again = gpupipe.run(inputs, out, [ops.Thumbnail(32)], backend="cpu", workers=1)
    assert [o.status for o in again.outcomes] == ["ok"]
