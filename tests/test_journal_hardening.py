"""The journal under hostile conditions: odd names, damaged files, full disks, planted links,
outputs changed behind its back, failures that must stay visible."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gpupipe
from gpupipe import ops
from gpupipe.engine.results import FileOutcome
from gpupipe.errors import SystemFailure, UsageError
from gpupipe.journal import SCHEMA_VERSION, Journal, default_path, path_key, path_keys
from gpupipe.spec import Spec
from tests.support import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "photos"
REPO = REPO_ROOT
THUMB = [ops.Thumbnail(48)]
LATIN1 = b"caf\xe9.jpg"                      # not valid UTF-8


def make_inputs(tmp_path: Path, count: int = 4, name: str = "in") -> Path:
    src = tmp_path / name
    src.mkdir()
    for i in range(count):
        shutil.copy(EXAMPLES / "Landscape_1.jpg", src / f"{i:03d}.jpg")
    return src


def make_tiny_inputs(src: Path, count: int) -> None:
    """Many small distinct PNGs: quick to process, so a run records many inputs."""
    src.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (16, 16), (i % 256, (i // 256) % 256, 7)).save(src / f"{i:05d}.png")


def make_noise_inputs(src: Path, count: int, side: int = 64) -> None:
    """PNGs of noise: they do not compress, so each output is about side² x 3 bytes."""
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(14)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(src / f"{i:05d}.png")


def gpupipe_cli(*args: str | Path, cwd: Path | None = None, **how) -> subprocess.CompletedProcess:
    """Run the command line; stderr comes back with its line wrapping undone."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    how.setdefault("timeout", 300)
    result = subprocess.run([sys.executable, "-m", "gpupipe", *map(str, args)], capture_output=True, text=True,
                            cwd=cwd, env=env, **how)
    result.stderr = " ".join(result.stderr.split())
    return result


def outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and ".gpupipe" not in p.parts)


def input_keys(journal: Path) -> list[bytes]:
    db = sqlite3.connect(journal)
    try:
        return sorted(row[0] for row in db.execute("SELECT path FROM inputs"))
    finally:
        db.close()


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A real, small tmpfs mount (root only: checked at run time)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the file system holding ``directory`` until ENOSPC, then free ``leave`` bytes."""
    filler = directory / "filler"
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def skips_promised(stderr: str) -> int:
    match = re.search(r"the journal skips the (\d+) input\(s\)", stderr)
    assert match, stderr
    return int(match.group(1))


# ---------------------------------------------------------------------- finding 5: names and paths

def test_non_utf8_names_round_trip_byte_exact_through_the_journal(tmp_path: Path) -> None:
    src = make_inputs(tmp_path, 2)
    latin = os.path.join(os.fsencode(src), LATIN1)
    shutil.copy(EXAMPLES / "Portrait_6.jpg", latin)
    shutil.copy(EXAMPLES / "chapel.png", src / "zz-after.png")     # an input the scan meets after it
    out = tmp_path / "out"
    first = gpupipe.run(src, out, THUMB, backend="cpu")
    assert (first.summary.processed, first.summary.failed, first.summary.cancelled) == (4, 0, 0)
    assert path_key(os.fsdecode(latin)) in input_keys(default_path(out))          # the bytes, exactly
    again = gpupipe.run(src, out, THUMB, backend="cpu")
    assert (again.summary.skipped, again.summary.processed) == (4, 0)
    report = gpupipe.journal.report(default_path(out))
    assert report["inputs"] == {"ok": 4}


def test_a_relative_and_an_absolute_spelling_are_one_entry(tmp_path: Path) -> None:
    make_inputs(tmp_path, 3)
    relative = gpupipe_cli("run", "in", "-o", "out", "--thumbnail", "48", "--backend", "cpu", cwd=tmp_path)
    assert relative.returncode == 0, relative.stderr
    absolute = gpupipe.run(tmp_path / "in", tmp_path / "out", THUMB, backend="cpu")
    assert (absolute.summary.skipped, absolute.summary.processed) == (3, 0)
    assert len(input_keys(default_path(tmp_path / "out"))) == 3
    assert all(key.startswith(os.fsencode(tmp_path)) for key in input_keys(default_path(tmp_path / "out")))


@pytest.mark.parametrize("cwd", ["tmp", "/"])
def test_keys_made_a_folder_at_a_time_are_each_paths_own_key(tmp_path: Path, monkeypatch, cwd: str) -> None:
    """path_keys makes a folder's key once and adds each name to it: the same bytes path_key gives
    one path at a time, for every spelling (relative, "//", "..", non-UTF-8, the root itself)."""
    monkeypatch.chdir(tmp_path if cwd == "tmp" else cwd)
    spellings = ["/a/b.jpg", "a.jpg", "./a.jpg", "a/./b.jpg", "a//b.jpg", "/x", "//x", "//h/x", "/a/../b.jpg",
                 "a/..", "a/.", "a/", "../a.jpg", "x/y/../../z.jpg", "/", ".", "..", "café/é.jpg",
                 os.fsdecode(b"a\xe9/b.jpg"), "///a", "/a//", "a/b/"]
    assert path_keys(spellings) == [path_key(p) for p in spellings]


def test_a_failure_message_naming_a_non_utf8_file_is_recorded(tmp_path: Path) -> None:
    src = make_inputs(tmp_path, 1)
    Path(os.fsdecode(os.path.join(os.fsencode(src), b"bad\xff.jpg"))).write_bytes(b"not an image, whatever the name says")
    result = gpupipe.run(src, tmp_path / "out", THUMB, backend="cpu")
    assert (result.summary.processed, result.summary.failed) == (1, 1)
    report = gpupipe.journal.report(default_path(tmp_path / "out"))
    assert [e["path"] for e in report["failures"]["not_an_image"]["examples"]] == [f"{src}/bad\\xff.jpg"]


# ---------------------------------------------------------------------- finding 8: damaged journals, versions

def damage(journal: Path, how: str) -> None:
    data = journal.read_bytes()
    if how == "truncated":
        journal.write_bytes(data[: len(data) // 3])
    elif how == "garbage":
        journal.write_bytes(os.urandom(len(data)))
    elif how == "garbage-inside":
        journal.write_bytes(data[:100] + os.urandom(len(data) - 100))
    elif how == "directory":
        journal.unlink()
        journal.mkdir()


@pytest.mark.parametrize("how", ["truncated", "garbage", "garbage-inside", "directory"])
def test_a_damaged_journal_is_a_usage_error_that_says_what_to_do(tmp_path: Path, how: str) -> None:
    src, out = make_inputs(tmp_path, 2), tmp_path / "out"
    make_tiny_inputs(src / "many", 300)                 # a journal of several pages, so damage lands in them
    assert gpupipe.run(src, out, THUMB, backend="cpu").summary.processed == 302
    journal = default_path(out)
    damage(journal, how)
    before = sorted(p.name for p in journal.parent.iterdir())
    result = gpupipe_cli("run", src, "-o", out, "--thumbnail", "48", "--backend", "cpu")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and str(journal) in result.stderr
    assert "--journal" in result.stderr and ("--force" in result.stderr or how == "directory")
    assert sorted(p.name for p in journal.parent.iterdir()) == before               # nothing redone, nothing moved
    report = gpupipe_cli("report", out)
    assert report.returncode == 2 and "Traceback" not in report.stderr and str(journal) in report.stderr


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_force_sets_a_damaged_journal_aside_and_says_so(tmp_path: Path, how: str) -> None:
    src, out = make_inputs(tmp_path, 2), tmp_path / "out"
    make_tiny_inputs(src / "many", 300)
    gpupipe.run(src, out, THUMB, backend="cpu")
    journal = default_path(out)
    damage(journal, how)
    damaged = journal.read_bytes()
    result = gpupipe_cli("run", src, "-o", out, "--thumbnail", "48", "--backend", "cpu", "--force")
    assert result.returncode == 0, result.stderr
    assert "moved aside" in result.stderr
    aside = [p for p in journal.parent.iterdir() if p.name.startswith("journal.sqlite.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == damaged
    assert gpupipe.run(src, out, THUMB, backend="cpu").summary.skipped == 302        # the new one works


def test_a_directory_at_the_journal_path_is_refused_even_with_force(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path, 1), tmp_path / "out"
    default_path(out).mkdir(parents=True)
    with pytest.raises(UsageError, match="is a folder"):
        gpupipe.run(src, out, THUMB, backend="cpu", force=True)


def test_an_unreadable_journal_is_a_usage_error(tmp_path: Path) -> None:
    """Opened by another user (a forked child that drops root: root reads a file whatever its mode)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")
    src, out = make_inputs(tmp_path, 1), tmp_path / "out"
    gpupipe.run(src, out, THUMB, backend="cpu")
    for directory in tmp_path.parents[:2]:
        os.chmod(directory, os.stat(directory).st_mode | 0o005)
    for path in [tmp_path, *tmp_path.rglob("*")]:
        os.chmod(path, 0o777 if path.is_dir() else 0o666)
    os.chmod(default_path(out), 0)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:                                    # the child: never returns into pytest
        try:
            os.setgid(65534)
            os.setuid(65534)
            gpupipe.run(src, out, THUMB, backend="cpu")
            message = "no error"
        except BaseException as exc:                  # noqa: BLE001 - reported to the parent
            message = f"{type(exc).__name__}: {exc}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(child, 0)
    assert message.startswith("UsageError") and "cannot be read" in message and "--force" in message, message


def test_the_journal_has_a_schema_version_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path, 1), tmp_path / "out"
    gpupipe.run(src, out, THUMB, backend="cpu")
    db = sqlite3.connect(default_path(out))
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(UsageError, match="newer gpupipe"):
        gpupipe.run(src, out, THUMB, backend="cpu")
    report = gpupipe_cli("report", out)
    assert report.returncode == 2 and "newer gpupipe" in report.stderr


VERSION_0 = """
CREATE TABLE inputs (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime REAL NOT NULL, spec_hash TEXT NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, error_class TEXT, message TEXT, updated REAL NOT NULL);
CREATE INDEX inputs_by_state ON inputs (state, error_class);
CREATE TABLE outputs (path TEXT PRIMARY KEY, input_path TEXT NOT NULL, size INTEGER NOT NULL, checksum TEXT NOT NULL);
CREATE INDEX outputs_by_input ON outputs (input_path);
CREATE TABLE runs (id INTEGER PRIMARY KEY, started REAL NOT NULL, finished REAL, spec_hash TEXT NOT NULL,
    summary TEXT);
"""


def test_a_version_0_journal_with_text_paths_is_migrated_in_place(tmp_path: Path, monkeypatch) -> None:
    """Journals written before the schema version: TEXT paths as spelled (here relative)."""
    src, out = make_inputs(tmp_path, 3), tmp_path / "out"
    first = gpupipe.run(src, out, THUMB, backend="cpu")
    old_rows = sqlite3.connect(default_path(out))
    inputs = old_rows.execute("SELECT path, size, mtime, spec_hash, state, attempts, error_class, message, updated "
                              "FROM inputs").fetchall()              # version 0's columns
    outs = old_rows.execute("SELECT * FROM outputs").fetchall()
    old_rows.close()
    shutil.rmtree(default_path(out).parent)
    default_path(out).parent.mkdir()
    v0 = sqlite3.connect(default_path(out))
    v0.executescript(VERSION_0)
    monkeypatch.chdir(tmp_path)
    relative = lambda key: os.path.relpath(os.fsdecode(key))              # noqa: E731
    v0.executemany("INSERT INTO inputs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [(relative(r[0]), *r[1:]) for r in inputs])
    v0.executemany("INSERT INTO outputs VALUES (?, ?, ?, ?)", [(relative(p), relative(i), s, c) for p, i, s, c in outs])
    v0.commit()
    v0.close()
    again = gpupipe.run("in", "out", THUMB, backend="cpu")
    assert first.summary.processed == 3 and (again.summary.skipped, again.summary.processed) == (3, 0)
    db = sqlite3.connect(default_path(out))
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert sorted(r[0] for r in db.execute("SELECT path FROM inputs")) == sorted(r[0] for r in inputs)
    db.close()


# ---------------------------------------------------------------------- finding 7: full disks under the journal

def test_a_journal_that_fills_its_disk_ends_cleanly_and_the_resume_hint_is_exact(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_tiny_inputs(src, 1500)
    with tmpfs(tmp_path / "small", "2m") as small:
        journal = small / "journal.sqlite"
        seed = make_inputs(tmp_path, 1, "seed")
        assert gpupipe.run(seed, tmp_path / "seed-out", THUMB, backend="cpu", journal=journal).exit_code == 0
        filler = fill(small, leave=520 * 1024)
        full = gpupipe_cli("run", src, "-o", out, "--thumbnail", "8", "--backend", "cpu", "--journal", journal,
                           "--workers", "1")
        assert full.returncode == 1, full.stderr
        assert "Traceback" not in full.stderr and "OperationalError" not in full.stderr
        assert "cannot record progress in the journal" in full.stderr and "stopped early" in full.stderr
        promised = skips_promised(full.stderr)
        assert 0 < promised < 1500, full.stderr
        filler.unlink()
        resumed = gpupipe_cli("run", src, "-o", out, "--thumbnail", "8", "--backend", "cpu", "--journal", journal,
                              "--report", tmp_path / "r.json")
        assert resumed.returncode == 0, resumed.stderr
        summary = json.loads((tmp_path / "r.json").read_text())["summary"]
        assert summary["skipped"] == promised and summary["processed"] == 1500 - promised
    assert len(outputs(out)) == 1500


def test_outputs_filling_the_disk_under_the_default_journal_end_cleanly_and_resume(tmp_path: Path) -> None:
    src = tmp_path / "in"
    make_noise_inputs(src, 300)              # ~12 KB outputs: the last one fails with a few KB left for the journal
    with tmpfs(tmp_path / "out", "2m") as out:
        full = gpupipe_cli("run", src, "-o", out, "--backend", "cpu", "--workers", "1", "-f", "png")
        assert full.returncode == 1, full.stderr
        assert "Traceback" not in full.stderr and "OperationalError" not in full.stderr
        assert "stopped early" in full.stderr
        promised = skips_promised(full.stderr)
        written = len(outputs(out))
        assert 0 < written < 300 and promised == written     # the journal's reserve kept the record of them all
        subprocess.run(["mount", "-o", "remount,size=64m", str(out)], check=True)
        resumed = gpupipe_cli("run", src, "-o", out, "--backend", "cpu", "-f", "png", "--report", tmp_path / "r.json")
        assert resumed.returncode == 0, resumed.stderr
        summary = json.loads((tmp_path / "r.json").read_text())["summary"]
        assert summary["skipped"] == promised and summary["processed"] == 300 - promised
        assert len(outputs(out)) == 300 and not list(out.rglob("*.tmp"))


def test_a_journal_on_a_full_disk_is_one_clear_message(tmp_path: Path) -> None:
    src = make_inputs(tmp_path, 2)
    with tmpfs(tmp_path / "small", "256k") as small:
        fill(small)
        result = gpupipe_cli("run", src, "-o", tmp_path / "out", "--thumbnail", "48", "--backend", "cpu",
                             "--journal", small / "journal.sqlite")
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr and "journal" in result.stderr and "--no-journal" in result.stderr
    assert not outputs(tmp_path / "out")


def test_a_journal_whose_commit_fails_at_the_end_says_so(tmp_path: Path) -> None:
    """A full disk met by the last commit (the batch still open when the run ends)."""
    src = make_inputs(tmp_path, 3)
    with tmpfs(tmp_path / "small", "1m") as small:
        journal_path = small / "journal.sqlite"
        journal = Journal(journal_path, Spec.single(THUMB).hash())
        assert not (small / "journal.sqlite.reserve").exists()      # 1 MB: no room for a reserve
        filler = fill(small)
        result = gpupipe.run(src, tmp_path / "out", THUMB, backend="cpu", journal=False)
        for outcome in result.outcomes:
            journal.record(outcome)
        with pytest.raises(SystemFailure, match="cannot record progress"):
            journal.commit()
        assert journal.will_skip() == 0                # nothing of it was committed
        journal.record(result.outcomes[0])             # a journal that failed records nothing more
        journal.close()
        filler.unlink()


def test_the_journal_reserve_lets_it_commit_on_a_full_disk(tmp_path: Path) -> None:
    """Room held while the journal is open is given up to commit the batch a full disk would lose."""
    src = make_inputs(tmp_path, 3)
    result = gpupipe.run(src, tmp_path / "out", THUMB, backend="cpu", journal=False)
    with tmpfs(tmp_path / "small", "4m") as small:
        journal = Journal(small / "journal.sqlite", Spec.single(THUMB).hash())
        reserve = small / "journal.sqlite.reserve"
        assert reserve.stat().st_size > 0
        fill(small)
        for outcome in result.outcomes:
            journal.record(outcome)
        journal.commit()                               # the reserve made room
        assert journal.will_skip() == 3 and not reserve.exists()
        journal.close()
        assert len(input_keys(small / "journal.sqlite")) == 3


# ---------------------------------------------------------------------- finding 13: outputs checked on resume

def test_an_output_truncated_after_the_run_is_redone(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path, 3), tmp_path / "out"
    gpupipe.run(src, out, THUMB, backend="cpu")
    victim = out / "001.jpg"
    good = victim.read_bytes()
    victim.write_bytes(b"")
    again = gpupipe.run(src, out, THUMB, backend="cpu")
    assert (again.summary.processed, again.summary.skipped) == (1, 2)
    assert victim.read_bytes() == good


def test_verify_redoes_an_output_changed_at_the_same_size(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path, 3), tmp_path / "out"
    gpupipe.run(src, out, THUMB, backend="cpu")
    victim = out / "002.jpg"
    good = victim.read_bytes()
    victim.write_bytes(good[:-10] + b"\0" * 10)                       # same size, other bytes
    plain = gpupipe.run(src, out, THUMB, backend="cpu")
    assert plain.summary.skipped == 3                                  # sizes are all that is checked
    result = gpupipe_cli("run", src, "-o", out, "--thumbnail", "48", "--backend", "cpu", "--verify",
                         "--report", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert (summary["processed"], summary["skipped"]) == (1, 2) and victim.read_bytes() == good


def test_replacing_a_watermark_image_at_the_same_path_redoes_the_outputs(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path, 2), tmp_path / "out"
    mark = tmp_path / "mark.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 255)).save(mark)
    spec = [ops.Thumbnail(48), ops.Watermark(image=str(mark), opacity=1.0)]
    gpupipe.run(src, out, spec, backend="cpu")
    assert gpupipe.run(src, out, spec, backend="cpu").summary.skipped == 2
    Image.new("RGBA", (8, 8), (0, 0, 255, 255)).save(mark)             # same path, same size, new bytes
    again = gpupipe.run(src, out, spec, backend="cpu")
    assert (again.summary.processed, again.summary.skipped) == (2, 0)


def test_the_spec_hash_covers_the_bytes_of_a_watermark_font(tmp_path: Path) -> None:
    font = tmp_path / "font.ttf"
    font.write_bytes(b"first font bytes")
    spec = Spec.single([ops.Watermark(text="hi", font=str(font))])
    before = spec.hash()
    font.write_bytes(b"other font bytes")
    assert spec.hash() != before
    assert Spec.single(THUMB).hash() == Spec.single(THUMB).hash()


def test_the_spec_hash_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "mark.png"
    os.mkfifo(fifo)
    assert len(Spec.single([ops.Watermark(image=str(fifo))]).hash()) == 16     # returns: nothing opened it blocking


# ---------------------------------------------------------------------- finding 14: failures stay visible

def test_a_run_skipping_earlier_failures_says_so_and_exits_1(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path, 3), tmp_path / "out"
    for i in range(4):
        (src / f"bad{i}.jpg").write_bytes(b"not an image " * (i + 1))
    first = gpupipe_cli("run", src, "-o", out, "--thumbnail", "48", "--backend", "cpu", "--quiet")
    assert first.returncode == 1
    again = gpupipe_cli("run", src, "-o", out, "--thumbnail", "48", "--backend", "cpu")
    assert again.returncode == 1, again.stderr
    assert "4 failed before" in again.stderr and "--retry-failed" in again.stderr
    api = gpupipe.run(src, out, THUMB, backend="cpu")
    assert (api.summary.skipped, api.summary.skipped_failed, api.exit_code) == (7, 4, 1)
    assert sorted(o.failed_before for o in api.outcomes if o.failed_before) == ["not_an_image"] * 4
    for i in range(4):
        (src / f"bad{i}.jpg").unlink()
    assert gpupipe_cli("run", src, "-o", out, "--thumbnail", "48", "--backend", "cpu").returncode == 0


# ---------------------------------------------------------------------- finding 2: never through a link

def test_a_planted_lock_file_link_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path, 1), tmp_path / "out"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (out / ".gpupipe").mkdir(parents=True)
    (out / ".gpupipe" / "journal.sqlite.lock").symlink_to(victim)
    result = gpupipe_cli("run", src, "-o", out, "--thumbnail", "48", "--backend", "cpu")
    assert result.returncode == 2 and "symbolic link" in result.stderr, result.stderr
    assert victim.read_bytes() == b"precious" and not outputs(out)


def test_a_planted_turns_file_link_is_never_followed(tmp_path: Path) -> None:
    """The writers' turns file is opened only where it is a regular file: with a link there they go
    without taking turns (SQLite still keeps their transactions apart), and the link's target is
    never opened. Here the target is a file another program holds locked: followed, the link would
    make every worker wait for that program."""
    import fcntl
    src, out = make_inputs(tmp_path, 6), tmp_path / "out"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (out / ".gpupipe").mkdir(parents=True)
    (out / ".gpupipe" / "journal.sqlite.turns").symlink_to(victim)
    with open(victim, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = gpupipe_cli("run", src, "-o", out, "--thumbnail", "48", "--backend", "cpu", "--workers", "2",
                             timeout=60)
    assert result.returncode == 0, result.stderr
    assert victim.read_bytes() == b"precious" and len(outputs(out)) == 6
    assert (out / ".gpupipe" / "journal.sqlite.turns").is_symlink()
    again = gpupipe_cli("run", src, "-o", out, "--thumbnail", "48", "--backend", "cpu", "--workers", "2")
    assert again.returncode == 0 and re.search(r"skipped\s+6\b", again.stderr), again.stderr      # all recorded


@pytest.mark.parametrize("name", ["journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"])
def test_a_planted_database_link_is_refused(tmp_path: Path, name: str) -> None:
    src, out = make_inputs(tmp_path, 1), tmp_path / "out"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (out / ".gpupipe").mkdir(parents=True)
    (out / ".gpupipe" / name).symlink_to(victim)
    with pytest.raises(UsageError, match="symbolic link"):
        gpupipe.run(src, out, THUMB, backend="cpu")
    assert victim.read_bytes() == b"precious"


def test_a_gpupipe_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path, 1), tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / ".gpupipe").symlink_to(elsewhere)
    result = gpupipe_cli("run", src, "-o", out, "--thumbnail", "48", "--backend", "cpu")
    assert result.returncode == 2 and "symbolic link" in result.stderr, result.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_thread_that_comes_back_after_the_journal_closed_gets_a_clear_error(tmp_path: Path) -> None:
    """A thread a stall left behind may ask the journal after the run closed it: a clean
    SystemFailure, never SQLite used on a closed connection (that crashed the process)."""
    journal = Journal(tmp_path / "journal.sqlite", "spec")
    journal.close()
    with pytest.raises(SystemFailure, match="closed"):
        journal.decide(str(tmp_path / "a.jpg"), 1, 1.0)
    journal.record(FileOutcome(path=str(tmp_path / "a.jpg"), status="ok", size=1, mtime=1.0))
    journal.close()                                           # twice: nothing happens


