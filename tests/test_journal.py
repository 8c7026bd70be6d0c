"""The journal: re-runs skip what is done, resume after a kill, refuse a second writer."""

from __future__ import annotations

import json
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
from gpupipe.errors import UsageError
from gpupipe.journal import Journal, default_path
from tests.support import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "photos"
THUMB = [ops.Thumbnail(48)]


def make_inputs(tmp_path: Path, count: int = 6) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(count):
        shutil.copy(EXAMPLES / "Landscape_1.jpg", src / f"{i:03d}.jpg")
    return src


def outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and ".gpupipe" not in p.parts)


def committed_inputs(journal: Path) -> int:
    """Rows another process has committed (WAL lets a reader look while it writes)."""
    import sqlite3
    if not journal.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM inputs").fetchone()[0]
        finally:
            db.close()
    except sqlite3.OperationalError:                # schema not created yet
        return 0


def test_a_rerun_skips_what_is_done_and_unchanged(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path), tmp_path / "out"
    first = gpupipe.run(src, out, THUMB, backend="cpu")
    assert first.summary.processed == 6 and default_path(out).exists()
    stamps = {p: p.stat().st_mtime_ns for p in outputs(out)}
    again = gpupipe.run(src, out, THUMB, backend="cpu")
    assert (again.summary.processed, again.summary.skipped) == (0, 6)
    assert all(o.message == "done before, unchanged" for o in again.outcomes)
    assert {p: p.stat().st_mtime_ns for p in outputs(out)} == stamps        # nothing rewritten


def test_changed_inputs_changed_spec_and_missing_outputs_are_redone(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path), tmp_path / "out"
    gpupipe.run(src, out, THUMB, backend="cpu")
    shutil.copy(EXAMPLES / "chapel.png", src / "001.jpg")                  # new content, same name
    (out / "002.jpg").unlink()                                             # an output went missing
    shutil.copy(EXAMPLES / "Portrait_6.jpg", src / "new.jpg")              # a new input
    result = gpupipe.run(src, out, THUMB, backend="cpu")
    redone = sorted(Path(o.path).name for o in result.outcomes if o.status == "ok")
    assert redone == ["001.jpg", "002.jpg", "new.jpg"] and result.summary.skipped == 4
    changed_spec = gpupipe.run(src, out, [ops.Thumbnail(32)], backend="cpu")
    assert changed_spec.summary.processed == 7 and changed_spec.summary.skipped == 0


def test_failures_are_skipped_unless_retried_and_force_redoes_all(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path, 3), tmp_path / "out"
    (src / "bad.jpg").write_bytes(b"not an image at all")
    first = gpupipe.run(src, out, THUMB, backend="cpu")
    assert (first.summary.processed, first.summary.failed) == (3, 1)
    again = gpupipe.run(src, out, THUMB, backend="cpu")
    assert (again.summary.processed, again.summary.failed, again.summary.skipped) == (0, 0, 4)
    assert any("--retry-failed" in (o.message or "") for o in again.outcomes)
    retried = gpupipe.run(src, out, THUMB, backend="cpu", retry_failed=True)
    assert (retried.summary.failed, retried.summary.skipped) == (1, 3)
    forced = gpupipe.run(src, out, THUMB, backend="cpu", force=True)
    assert (forced.summary.processed, forced.summary.failed) == (3, 1)
    report = gpupipe.journal.report(default_path(out))
    assert report["inputs"] == {"ok": 3, "failed": 1}
    assert report["failures"]["not_an_image"]["count"] == 1


def test_a_second_run_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path, 2), tmp_path / "out"
    holder = Journal(default_path(out), "someone-else")
    try:
        with pytest.raises(UsageError, match="in use"):
            gpupipe.run(src, out, THUMB, backend="cpu")
        result = CliRunner().invoke(app, ["run", str(src), "-o", str(out), "--thumbnail", "48"])
        assert result.exit_code == 2 and "in use" in result.output
    finally:
        holder.close()
    assert gpupipe.run(src, out, THUMB, backend="cpu").summary.processed == 2   # free again


def test_killed_run_resumes_with_every_output_exactly_once(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path, 80), tmp_path / "out"
    command = [sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(out), "--blur", "3", "-f", "png",
               "--workers", "2", "--quiet"]
    proc = subprocess.Popen(command)
    deadline = time.monotonic() + 60
    recorded = 0
    while time.monotonic() < deadline and recorded < 5:          # kill once the journal has committed some
        time.sleep(0.05)
        recorded = committed_inputs(default_path(out))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (out / f".013.png.gpupipe-{proc.pid}-0123abcd.tmp").write_bytes(b"half a png")   # as a kill can leave
    recorded = committed_inputs(default_path(out))
    assert 5 <= recorded < 80 and len(outputs(out)) < 80
    resumed = subprocess.run(command + ["--report", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["skipped"] == recorded and summary["processed"] == 80 - recorded
    final = outputs(out)
    assert [p.name for p in final] == [f"{i:03d}.png" for i in range(80)]   # each once, none missing
    assert not [p for p in out.rglob(".*.tmp")]                             # no half-written file anywhere
    for path in final:
        with Image.open(path) as im:
            im.load()
    report = CliRunner().invoke(app, ["report", str(out), "--json"])
    assert report.exit_code == 0 and json.loads(report.output)["inputs"] == {"ok": 80}


def test_report_command_and_no_journal(tmp_path: Path) -> None:
    src, out = make_inputs(tmp_path, 2), tmp_path / "out"
    (src / "empty.jpg").write_bytes(b"")
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(src), "-o", str(out), "--thumbnail", "48"]).exit_code == 1
    text = runner.invoke(app, ["report", str(out)])
    assert text.exit_code == 0 and "inputs done: 2, failed: 1" in text.output and "empty" in text.output
    plain = tmp_path / "plain"
    assert runner.invoke(app, ["run", str(src), "-o", str(plain), "--thumbnail", "48", "--no-journal"]).exit_code == 1
    assert not (plain / ".gpupipe").exists()
    missing = runner.invoke(app, ["report", str(plain)])
    assert missing.exit_code == 2 and "no journal" in missing.output


def _hold_the_turn(path: str, taken) -> None:
    from gpupipe.journal import CommitTurns
    with CommitTurns(Path(path)).taken():
        taken.set()
        time.sleep(60)                      # killed long before


def test_writers_take_turns_and_a_dead_holder_frees_its_turn(tmp_path: Path) -> None:
    """A worker's chunk commits once the writer before it is done, and a writer killed while it
    holds the turn holds nobody up: the kernel frees its flock."""
    import multiprocessing
    import threading
    from gpupipe.engine.results import FileOutcome
    from gpupipe.journal import ChunkRecorder
    path = tmp_path / "journal.sqlite"
    Journal(path, "spec").close()
    fork = multiprocessing.get_context("fork")
    taken = fork.Event()
    holder = fork.Process(target=_hold_the_turn, args=(str(path), taken))
    holder.start()
    assert taken.wait(10)
    recorder = ChunkRecorder(path, "spec", forget_earlier=False, reserve=tmp_path / "reserve")
    chunk = [FileOutcome(path=str(tmp_path / f"in{i}.jpg"), status="ok", relative=f"in{i}.jpg", size=1, mtime=1.0)
             for i in range(3)]
    writer = threading.Thread(target=recorder.record, args=(chunk,))
    writer.start()
    writer.join(0.5)
    assert writer.is_alive(), "a chunk was committed while another writer held the turn"
    holder.kill()
    writer.join(5)
    assert not writer.is_alive(), "a dead writer's turn was never freed"
    journal = Journal(path, "spec")
    try:
        assert all(journal.decide(o.path, 1, 1.0).skip for o in chunk)      # recorded: a re-run skips them
    finally:
        journal.close()
