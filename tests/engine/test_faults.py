"""Real I/O faults: a FUSE filesystem whose reads fail with EIO (tests/support/faultfs.py)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

import gpupipe
from gpupipe import ops

from tests.support.fusemount import fuse_mount
from tests.support import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "photos"
FAULTFS = REPO_ROOT / "tests" / "support" / "faultfs.py"


@pytest.fixture
def flaky_files(tmp_path: Path, request):
    """Four photos behind a FUSE mount whose reads fail ``request.param`` times per file first
    (or, for the parameter "hang", whose reads of 2.jpg never return)."""
    fault = ["--fail-reads", "0", "--hang", "2.jpg"] if request.param == "hang" else ["--fail-reads",
                                                                                       str(request.param)]
    yield from _mounted(tmp_path, 4, fault)


@pytest.fixture
def dead_mount(tmp_path: Path):
    """Forty photos behind a FUSE mount whose every read fails with EIO (a dead disk or mount)."""
    yield from _mounted(tmp_path, 40, ["--fail-reads", str(10**6)])


def _mounted(tmp_path: Path, count: int, fault: list[str]):
    source = tmp_path / "source"
    source.mkdir()
    for i in range(count):
        shutil.copy(EXAMPLES / "Landscape_1.jpg", source / f"{i}.jpg")
    yield from fuse_mount(FAULTFS, source, tmp_path / "mnt", fault)


@pytest.mark.parametrize("flaky_files", [2], indirect=True)
def test_transient_read_errors_are_retried(flaky_files: Path, tmp_path: Path) -> None:
    result = gpupipe.run(flaky_files, tmp_path / "out", [ops.Thumbnail(32)], backend="cpu", retries=3,
                         journal=False)
    assert result.summary.processed == 4 and result.summary.failed == 0
    assert [o.attempts for o in result.outcomes] == [3, 3, 3, 3]        # two EIO, then the read worked


@pytest.mark.parametrize("flaky_files", [100], indirect=True)
def test_a_read_that_keeps_failing_fails_that_input_after_the_retries(flaky_files: Path, tmp_path: Path) -> None:
    result = gpupipe.run(flaky_files, tmp_path / "out", [ops.Thumbnail(32)], backend="cpu", retries=2,
                         journal=False)
    assert result.summary.failed == 4 and result.exit_code == 1
    for outcome in result.outcomes:
        assert outcome.error_class == "unreadable" and outcome.attempts == 3
        assert "after 3 attempts" in outcome.message and "input/output error" in outcome.message.lower()


@pytest.mark.parametrize("flaky_files", ["hang"], indirect=True)
def test_a_read_that_never_returns_trips_the_stall_watchdog(flaky_files: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    result = gpupipe.run(flaky_files, tmp_path / "out", [ops.Thumbnail(32)], backend="cpu", journal=False,
                         stall_timeout=1.5)
    assert time.monotonic() - started < 30                               # it stopped, rather than hanging
    assert result.exit_code == 1 and "stalled" in result.summary.stop_reason
    assert "2.jpg" in result.summary.stop_reason
    by_name = {Path(o.path).name: o for o in result.outcomes}
    assert by_name["2.jpg"].status == "failed" and by_name["2.jpg"].error_class == "stalled"
    assert len(by_name) == 4                                             # every input accounted for


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_inputs_on_a_dead_mount_stop_the_run_with_one_message(dead_mount: Path, tmp_path: Path, engine: str) -> None:
    """Every read fails with EIO: after READ_FAULTS_IN_A_ROW inputs in a row the run stops with
    one message naming the cause and how to resume, instead of failing all 40 one by one. Ray's
    tasks run the same unit of work, which says which failures were the system's."""
    from gpupipe.engine.driver import READ_FAULTS_IN_A_ROW

    if engine == "ray":
        pytest.importorskip("ray", reason="Ray is not installed (pip install 'gpupipe[ray]')")
    started = time.monotonic()
    result = gpupipe.run(dead_mount, tmp_path / "out", [ops.Thumbnail(32)], backend="cpu", workers=1,
                         journal=tmp_path / "journal.sqlite", engine=engine)
    assert time.monotonic() - started < 60
    summary = result.summary
    assert result.exit_code == 1
    assert "in a row" in summary.stop_reason and "EIO" in summary.stop_reason
    assert "run the same command again" in summary.stop_reason                      # the resume hint
    assert READ_FAULTS_IN_A_ROW <= summary.failed < 40
    assert summary.failed + summary.cancelled + summary.processed == summary.discovered <= 40
    assert all(o.error_class == "unreadable" for o in result.failed)


@pytest.mark.parametrize("flaky_files", [2], indirect=True)
def test_reads_that_recover_never_trip_the_input_breaker(flaky_files: Path, tmp_path: Path) -> None:
    result = gpupipe.run(flaky_files, tmp_path / "out", [ops.Thumbnail(32)], backend="cpu", retries=3,
                         journal=False)
    assert result.summary.stop_reason is None and result.summary.processed == 4
