"""Side files (report, log, trace, metrics file), resource files (spec, watermark image and font)
and the CLI's reporting, tried as a hostile user would: real FIFOs, symlinks, character devices,
full tmpfs mounts, file names that are not UTF-8 and real signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import gpupipe
from gpupipe import ops
from gpupipe.cli import app
from gpupipe.backends.numpy.composite import load_mark
from gpupipe.errors import UsageError
from tests.support import REPO_ROOT

ROOT = REPO_ROOT
EXAMPLES = ROOT / "examples" / "photos"
CAFE = b"caf\xe9.png"                      # Latin-1 bytes: not a valid UTF-8 name

runner = CliRunner()


def gp(*args) -> object:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def gp_process(*args, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """The real command in a process of its own: real stdout, stderr and exit status."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "gpupipe", *map(str, args)], capture_output=True, env=env,
                          timeout=timeout, **kwargs)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLES / "Landscape_1.jpg", src / "a.jpg")
    shutil.copy(EXAMPLES / "chapel.png", src / "c.png")
    return src


@pytest.fixture
def odd_names(tmp_path: Path) -> Path:
    """A good photo and a bad file, both named with bytes that are not UTF-8."""
    src = tmp_path / "odd"
    src.mkdir()
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(src / "good.png")
    with open(os.path.join(os.fsencode(src), b"ok-" + CAFE), "wb") as f:
        f.write((src / "good.png").read_bytes())
    with open(os.path.join(os.fsencode(src), CAFE), "wb") as f:
        f.write(b"these bytes are no image at all")
    return src


class FifoReader:
    """Reads everything written into a FIFO, on a thread, as a `cat fifo > file` would."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path, self.data = path, b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with open(self.path, "rb") as f:
            self.data = f.read()

    def text(self) -> str:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the writer never closed the FIFO"
        return self.data.decode()


@pytest.fixture
def full_disk(tmp_path: Path):
    """A real 64 KB tmpfs filled to the last block (needs root and mount rights: skipped, saying why)."""
    mount = tmp_path / "full-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def private_null(directory: Path) -> Path:
    """A character device of our own, the twin of /dev/null: a test run against code that replaces
    special files must not replace the machine's /dev/null (skipped, saying why, where mknod fails)."""
    null = directory / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        with open(null, "wb") as f:
            f.write(b"x")
    except OSError as exc:
        pytest.skip(f"cannot make and use a character device here: {exc}")
    return null


def flat(text: str | bytes) -> str:
    """Console text with rich's line wrapping and column padding undone."""
    return " ".join((text.decode(errors="replace") if isinstance(text, bytes) else text).split())


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") and p.name != ".gpupipe")


# --- finding 4: side files never replace a special file or a link ------------------------------------------

def test_side_files_write_through_fifos_links_and_devices(photos: Path, tmp_path: Path) -> None:
    report = FifoReader(tmp_path / "report.fifo")
    target = tmp_path / "kept" / "log.jsonl"
    target.parent.mkdir()
    target.write_text("old log\n")
    (tmp_path / "log.link").symlink_to(target)
    metrics_target = tmp_path / "metrics.prom"
    (tmp_path / "metrics.link").symlink_to(metrics_target)      # dangling: written through, the link kept
    null = private_null(tmp_path)
    result = gp("run", photos, "-o", tmp_path / "out", "--thumbnail", "32", "--backend", "cpu",
                "--report", report.path, "--log", tmp_path / "log.link", "--trace", null,
                "--metrics-file", tmp_path / "metrics.link")
    assert result.exit_code == 0, result.output
    assert json.loads(report.text())["summary"]["processed"] == 2
    assert stat.S_ISFIFO(os.lstat(report.path).st_mode)
    assert (tmp_path / "log.link").is_symlink() and os.readlink(tmp_path / "log.link") == str(target)
    states = [json.loads(line)["state"] for line in target.read_text().splitlines()]
    assert states.count("ok") == 2 and "old log" not in target.read_text()
    assert (tmp_path / "metrics.link").is_symlink()
    assert "gpupipe_files_total" in metrics_target.read_text()
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert leftovers(tmp_path) == []


def test_report_to_a_link_to_stdout_and_to_dash_is_the_json_alone(photos: Path, tmp_path: Path) -> None:
    """`--report /dev/stdout` (here a link of our own to this process's stdout, so a failing run cannot
    replace the machine's /dev/stdout) and `--report -` put the JSON alone on stdout; people's
    output goes to stderr."""
    (tmp_path / "stdout").symlink_to("/proc/self/fd/1")
    for i, target in enumerate([tmp_path / "stdout", "-"]):
        done = gp_process("run", photos, "-o", tmp_path / f"out{i}", "--thumbnail", "32", "--backend", "cpu",
                          "--report", target)
        assert done.returncode == 0, done.stderr.decode()
        assert json.loads(done.stdout)["summary"]["processed"] == 2
        assert b"processed" in done.stderr
    assert (tmp_path / "stdout").is_symlink() and not (tmp_path / "-").exists()


def test_two_side_files_cannot_both_take_stdout(photos: Path, tmp_path: Path) -> None:
    result = gp("run", photos, "-o", tmp_path / "out", "--thumbnail", "32", "--report", "-", "--trace", "-")
    assert result.exit_code == 2 and "give at most one of them '-'" in flat(result.output)
    assert not (tmp_path / "out").exists()


def test_regular_report_is_renamed_into_place_from_an_unguessable_temporary(photos: Path, tmp_path: Path) -> None:
    """The temporary is created O_EXCL|O_NOFOLLOW under a fresh name: a link planted where the old
    fixed name (.NAME.tmp) was never redirects the write."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for name in ("report.json", "trace.json"):
        (tmp_path / f".{name}.tmp").symlink_to(victim)
    (tmp_path / "report.json").write_text("an older report")
    result = gp("run", photos, "-o", tmp_path / "out", "--thumbnail", "32", "--backend", "cpu",
                "--report", tmp_path / "report.json", "--trace", tmp_path / "trace.json")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious"
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["processed"] == 2
    assert json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    assert sorted(p.name for p in tmp_path.glob(".*")) == [".report.json.tmp", ".trace.json.tmp"]


def test_a_directory_as_a_side_file_is_a_usage_error_before_any_work(photos: Path, tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    for option in ("--report", "--log", "--trace", "--metrics-file"):
        result = gp("run", photos, "-o", tmp_path / "out", "--thumbnail", "32", option, tmp_path / "adir")
        assert result.exit_code == 2 and "is a directory" in flat(result.output), (option, result.output)
        assert not (tmp_path / "out").exists()


# --- finding 9: files read besides inputs must be regular files --------------------------------------------

@pytest.mark.parametrize("option", ["--spec", "--watermark-image", "--watermark-font"])
def test_a_fifo_as_spec_or_watermark_file_is_a_usage_error_not_a_hang(photos: Path, tmp_path: Path,
                                                                       option: str) -> None:
    fifo = tmp_path / "resource"
    os.mkfifo(fifo)
    extra = ["--watermark-text", "hi"] if option == "--watermark-font" else []
    done = gp_process("run", photos, "-o", tmp_path / "out", option, fifo, *extra, timeout=60)
    assert done.returncode == 2, done.stderr.decode()
    assert "is a FIFO; give a regular file" in flat(done.stderr)
    assert not (tmp_path / "out").exists()


def test_a_fifo_named_in_a_spec_file_is_a_usage_error(photos: Path, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "logo.png")
    (tmp_path / "s.toml").write_text('ops = [{ op = "watermark", image = "logo.png" }]\n')
    done = gp_process("run", photos, "-o", tmp_path / "out", "--spec", tmp_path / "s.toml", timeout=60)
    assert done.returncode == 2 and "watermark image" in flat(done.stderr) and "FIFO" in flat(done.stderr)


def test_a_watermark_swapped_for_a_fifo_mid_run_fails_the_input_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "mark.png")
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            load_mark(tmp_path / "mark.png")
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "reading the watermark blocked on a FIFO"
    assert outcome and "FIFO" in str(outcome[0]) and getattr(outcome[0], "error_class", "") == "processing"


# --- finding 5: names that are not UTF-8 round-trip byte-exact ---------------------------------------------

def test_names_that_are_not_utf8_round_trip_through_report_log_and_trace(odd_names: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report, log, trace, metrics = (tmp_path / n for n in ("r.json", "l.jsonl", "t.json", "m.prom"))
    done = gp_process("run", odd_names, "-o", out, "--thumbnail", "16", "--backend", "cpu", "--no-journal",
                      "--report", report, "--log", log, "--trace", trace, "--metrics-file", metrics)
    assert done.returncode == 1, done.stderr.decode()           # the bad file failed, the rest is done
    assert b"Traceback" not in done.stderr
    expected = {os.path.join(os.fsencode(odd_names), name) for name in (CAFE, b"ok-" + CAFE, b"good.png")}
    files = json.loads(report.read_bytes())["files"]
    assert {os.fsencode(f["path"]) for f in files} == expected
    by_name = {os.fsencode(f["path"]): f for f in files}
    assert by_name[os.path.join(os.fsencode(odd_names), CAFE)]["error_class"] == "not_an_image"
    assert os.fsencode(by_name[os.path.join(os.fsencode(odd_names), b"ok-" + CAFE)]["outputs"][0]) == \
        os.path.join(os.fsencode(out), b"ok-" + CAFE)
    assert os.path.exists(os.path.join(os.fsencode(out), b"ok-" + CAFE))
    logged = {os.fsencode(json.loads(line)["path"]) for line in log.read_bytes().splitlines()}
    assert logged == expected
    traced = {os.fsencode(e["args"]["input"]) for e in json.loads(trace.read_bytes())["traceEvents"]
              if "input" in e.get("args", {})}
    assert traced == {CAFE, b"ok-" + CAFE, b"good.png"}
    assert b'gpupipe_files_total{status="failed"} 1.0' in metrics.read_bytes()   # metrics name no paths
    # People see the bytes escaped, as Python writes them: caf\xe9.png
    assert "caf\\xe9.png: not an image" in flat(done.stderr)


def test_summary_escapes_odd_names_whatever_the_console(odd_names: Path, tmp_path: Path) -> None:
    """In-process (typer's runner), with a C locale, and --quiet: never a UnicodeEncodeError."""
    result = gp("run", odd_names, "-o", tmp_path / "a", "--thumbnail", "16", "--backend", "cpu", "--no-journal")
    assert result.exit_code == 1 and "caf\\xe9.png" in flat(result.output)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LC_ALL": "C", "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([sys.executable, "-m", "gpupipe", "run", str(odd_names), "-o", str(tmp_path / "b"),
                           "--thumbnail", "16", "--backend", "cpu", "--no-journal", "--quiet"],
                          capture_output=True, env=env, timeout=120)
    assert done.returncode == 1 and b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")
    assert "caf\\xe9.png: not an image" in flat(done.stderr)


def test_a_newline_in_a_name_cannot_forge_summary_lines(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "x.png\nnot_an_image: 0 file(s).png").write_bytes(b"no image")
    result = gp("run", src, "-o", tmp_path / "out", "--thumbnail", "16", "--backend", "cpu", "--no-journal")
    assert result.exit_code == 1
    assert "x.png\\nnot_an_image: 0 file(s).png" in flat(result.output)


# --- finding 7: a full disk under a side file ends in one message, the summary and a resumable state -------

@pytest.mark.parametrize("option", ["--report", "--log", "--trace", "--metrics-file"])
def test_full_disk_under_a_side_file(photos: Path, tmp_path: Path, full_disk: Path, option: str) -> None:
    out = tmp_path / "out"
    side = full_disk / "side-file"
    done = gp_process("run", photos, "-o", out, "--thumbnail", "32", "--backend", "cpu", option, side)
    stderr = flat(done.stderr)
    assert done.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert stderr.count(f"cannot write {option} {side}: No space left on device") == 1, stderr
    assert "processed 2" in stderr                                  # the summary is still printed
    assert not side.exists() and sorted(p.name for p in full_disk.iterdir()) == ["filler"]   # no temporary
    assert sorted(p.name for p in out.iterdir()) == [".gpupipe", "a.jpg", "c.png"]
    again = gp("run", photos, "-o", out, "--thumbnail", "32", "--backend", "cpu")   # resumable: all done
    assert again.exit_code == 0 and "skipped 2" in flat(again.output), again.output


def test_a_report_that_cannot_be_written_is_named_in_the_other_side_files(photos: Path, tmp_path: Path,
                                                                            full_disk: Path) -> None:
    report = tmp_path / "r.json"
    result = gp("run", photos, "-o", tmp_path / "out", "--thumbnail", "32", "--backend", "cpu",
                "--log", full_disk / "log", "--report", report)
    assert result.exit_code == 1
    summary = json.loads(report.read_text())["summary"]
    assert summary["side_file_errors"] == [f"cannot write --log {full_disk / 'log'}: No space left on device"]
    assert summary["exit_code"] == 1 and summary["processed"] == 2


def test_api_run_keeps_its_result_when_the_metrics_file_cannot_be_written(photos: Path, tmp_path: Path,
                                                                          full_disk: Path) -> None:
    result = gpupipe.run(photos, tmp_path / "out", [ops.Thumbnail(32)], backend="cpu",
                         metrics_file=full_disk / "m.prom")
    assert result.summary.processed == 2 and result.exit_code == 1
    assert result.summary.side_file_errors == [f"cannot write --metrics-file {full_disk / 'm.prom'}: "
                                               "No space left on device"]


# --- finding 14: failures stay visible -----------------------------------------------------------------------

def test_quiet_still_prints_failures(odd_names: Path, tmp_path: Path) -> None:
    done = gp_process("run", odd_names, "-o", tmp_path / "out", "--thumbnail", "16", "--backend", "cpu",
                      "--no-journal", "--quiet")
    assert done.returncode == 1 and done.stdout == b""
    assert "not_an_image: 1 file(s)" in flat(done.stderr) and "caf\\xe9.png" in flat(done.stderr)
    assert b"processed" not in done.stderr and b"gpupipe:" not in done.stderr        # still quiet otherwise


# A python op that holds each input it gets once HOLD exists (for 30 s at most): a run's workers
# are then inside inputs, and a first Ctrl+C cannot finish its drain before a second one comes.
HOLDING_OP = """
import os, time

def op(image):
    if os.path.exists({hold!r}):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.01)
    return image
"""


def test_second_ctrl_c_still_writes_the_report_marked_aborted(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(150):
        shutil.copy(EXAMPLES / "Landscape_1.jpg", src / f"{i:03d}.jpg")
    out, report, hold = tmp_path / "out", tmp_path / "report.json", tmp_path / "hold"
    (tmp_path / "holding.py").write_text(HOLDING_OP.format(hold=str(hold)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(out), "--blur", "4",
                             "--python", f"{tmp_path / 'holding.py'}:op", "-f", "png", "--workers", "2",
                             "--backend", "cpu", "--report", str(report)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and any(out.glob("*.png"))):
        time.sleep(0.05)
    hold.touch()
    time.sleep(1.0)                       # each worker is now inside an input it holds
    os.killpg(proc.pid, signal.SIGINT)    # the drain waits for those inputs...
    time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)    # ...and the second Ctrl+C comes while it does
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    data = json.loads(report.read_text())
    assert data["aborted"] is True and data["summary"]["interrupted"] is True
    done = [f for f in data["files"] if f["status"] == "ok"]
    assert done and data["summary"]["processed"] == len(done) and len(data["files"]) < 150
    assert all(Path(f["outputs"][0]).exists() for f in done)
    assert leftovers(tmp_path) == []


# --- finding 11: a watermark image above the pixel limit is refused from its header ------------------------

def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG declaring width x height (8-bit grey), with one short IDAT: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [13000, 20000])
def test_a_watermark_image_above_the_pixel_limit_is_a_usage_error(photos: Path, tmp_path: Path, side: int) -> None:
    (tmp_path / "bomb.png").write_bytes(png_header_only(side, side))
    result = gp("run", photos, "-o", tmp_path / "out", "--watermark-image", tmp_path / "bomb.png",
                "--max-pixels", 100_000_000)
    assert result.exit_code == 2, result.output
    assert f"{side}×{side}" in flat(result.output) and "above the limit of 100,000,000" in flat(result.output)
    assert not (tmp_path / "out").exists()


def test_the_watermark_limit_is_max_pixels(photos: Path, tmp_path: Path) -> None:
    Image.new("RGBA", (100, 100), (255, 0, 0, 128)).save(tmp_path / "logo.png")
    result = gp("run", photos, "-o", tmp_path / "out", "--watermark-image", tmp_path / "logo.png",
                "--max-pixels", 5000)
    assert result.exit_code == 2 and "above the limit of 5,000" in flat(result.output)
    with pytest.raises(UsageError, match="above the limit"):
        gpupipe.run(photos, tmp_path / "out", [ops.Watermark(image=str(tmp_path / "logo.png"))], max_pixels=5000)
    assert not (tmp_path / "out").exists()


# --- finding 12: numbers that cannot work are usage errors --------------------------------------------------

@pytest.mark.parametrize("flags", [
    ["--stall-timeout", "0"], ["--stall-timeout", "-1"], ["--stall-timeout", "nan"], ["--stall-timeout", "inf"],
    ["--max-pixels", "0"], ["--max-pixels", "-5"], ["--retries", "-1"], ["--workers", "0"], ["--quality", "0"],
    ["--quality", "101"], ["--watermark-text", "x", "--watermark-opacity", "1.5"],
    ["--watermark-text", "x", "--watermark-opacity", "-0.1"], ["--watermark-text", "x", "--watermark-margin", "-1"],
    ["--watermark-text", "x", "--watermark-size", "0"], ["--max-memory", "0"], ["--gpu-memory", "0"],
])
def test_numbers_that_cannot_work_are_usage_errors(photos: Path, tmp_path: Path, flags: list[str]) -> None:
    result = gp("run", photos, "-o", tmp_path / "out", "--thumbnail", "32", *flags)
    assert result.exit_code == 2, (flags, result.output)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", [dict(stall_timeout=0), dict(stall_timeout=-1.0), dict(stall_timeout=float("nan")),
                                 dict(max_pixels=0), dict(max_pixels=-1), dict(retries=-1), dict(workers=0),
                                 dict(max_memory=0), dict(gpu_memory=-1), dict(max_pixels=1.5)])
def test_api_refuses_numbers_that_cannot_work(photos: Path, tmp_path: Path, bad: dict) -> None:
    with pytest.raises(UsageError, match=next(iter(bad))):
        gpupipe.run(photos, tmp_path / "out", [ops.Thumbnail(32)], backend="cpu", **bad)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["run", "--dry-run", "--thumbnail", "16", "-o", "OUT"], ["inspect"]])
def test_dry_run_and_inspect_print_odd_names_to_a_strict_utf8_stdout(odd_names: Path, tmp_path: Path,
                                                                     command: list[str]) -> None:
    """PYTHONIOENCODING=utf-8 makes stdout strict (as under an en_US.UTF-8 locale): a raw surrogate
    printed there is a UnicodeEncodeError."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8", "COLUMNS": "300"}
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    done = subprocess.run([sys.executable, "-m", "gpupipe", args[0], str(odd_names), *args[1:]],
                          capture_output=True, env=env, timeout=120)
    assert b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")
    assert b"caf\\xe9.png" in done.stdout


def test_a_run_refused_after_the_side_files_opened_leaves_their_targets_as_they_were(photos: Path,
                                                                                     tmp_path: Path) -> None:
    """The side files open before api.run checks the rest (here an input that does not exist): a
    link's target keeps its bytes, stdout and a FIFO get nothing, no temporary is left."""
    target = tmp_path / "old-report.json"
    target.write_text("yesterday's report")
    (tmp_path / "report.link").symlink_to(target)
    fifo = FifoReader(tmp_path / "log.fifo")
    done = gp_process("run", photos / "nosuch", "-o", tmp_path / "out", "--thumbnail", "32",
                      "--report", tmp_path / "report.link", "--log", fifo.path, "--trace", "-")
    assert done.returncode == 2, done.stderr.decode()
    assert target.read_text() == "yesterday's report" and done.stdout == b"" and fifo.text() == ""
    assert leftovers(tmp_path) == []
