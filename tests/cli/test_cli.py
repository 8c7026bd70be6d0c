"""End-to-end: the `gpupipe` command on real photos and real bad files."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gpupipe.cli import app
from gpupipe.engine.host import usable_cores
from gpupipe.engine.options import default_max_memory

from tests.support import procs
from tests.support.badfiles import EXPECTED_ERROR_CLASS, make_bad_inputs
from tests.support.corpus import CORPUS
from tests.support import REPO_ROOT

ROOT = REPO_ROOT
EXAMPLES = ROOT / "examples" / "photos"
EXIF = CORPUS / "exif-orientation"

runner = CliRunner()


def gp(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(EXAMPLES / "Landscape_1.jpg", src / "a.jpg")
    shutil.copy(EXAMPLES / "Portrait_6.jpg", src / "sub" / "b.jpg")
    shutil.copy(EXAMPLES / "chapel.png", src / "sub" / "deeper" / "c.png")
    return src


def sizes(directory: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and ".gpupipe" not in path.parts:
            with Image.open(path) as im:
                found[str(path.relative_to(directory))] = im.size
    return found


def test_thumbnail_to_webp_mirrors_structure(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = gp("run", photos, "-o", out, "--thumbnail", "256", "--format", "webp", "--quality", "80")
    assert result.exit_code == 0, result.output
    assert sizes(out) == {"a.webp": (256, 171), "sub/b.webp": (171, 256), "sub/deeper/c.webp": (256, 191)}   # chapel.png is 1400×1045
    assert "processed" in result.output and "3" in result.output


def test_flags_apply_in_the_order_given(photos: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    src = photos / "a.jpg"                                   # 1800×1200
    assert gp("run", src, "-o", one, "--rotate", "90", "--crop", "100x50+0+0", "-f", "png").exit_code == 0
    assert gp("run", src, "-o", two, "--crop", "100x50+0+0", "--rotate", "90", "-f", "png").exit_code == 0
    assert sizes(one) == {"a.png": (100, 50)}
    assert sizes(two) == {"a.png": (50, 100)}


def test_resize_modes(photos: Path, tmp_path: Path) -> None:
    src = photos / "a.jpg"                                   # 1800×1200
    expected = {"--fit": (300, 200), "--fill": (300, 300), "--exact": (300, 300), "--pad": (300, 300)}
    for flag, size in expected.items():
        out = tmp_path / flag.strip("-")
        assert gp("run", src, "-o", out, "--resize", "300x300", flag, "-f", "png").exit_code == 0
        assert sizes(out) == {"a.png": size}, flag
    out = tmp_path / "width-only"
    assert gp("run", src, "-o", out, "--resize", "600x", "-f", "png").exit_code == 0
    assert sizes(out) == {"a.png": (600, 400)}


def test_every_exif_orientation_gives_the_same_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = gp("run", EXIF, "-o", out, "--thumbnail", "96", "-f", "png")
    assert result.exit_code == 0, result.output
    for kind in ("Landscape", "Portrait"):
        reference = np.asarray(Image.open(out / f"{kind}_1.png").convert("RGB"), dtype=np.int16)
        for n in range(9):
            image = np.asarray(Image.open(out / f"{kind}_{n}.png").convert("RGB"), dtype=np.int16)
            assert image.shape == reference.shape, (kind, n)
            assert np.abs(image - reference).mean() < 3, (kind, n)


def test_spec_file_makes_every_variant_from_one_decode(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = gp("run", photos, "-o", out, "--spec", ROOT / "examples" / "web.toml")
    assert result.exit_code == 0, result.output
    made = sizes(out)
    assert made["a_thumb.jpg"] == (256, 171)
    assert made["web/a.webp"] == (1600, 1067)
    assert made["sub/deeper/web/c.webp"][0] <= 1600
    assert len(made) == 6


def test_bad_inputs_fail_one_by_one_and_the_rest_is_processed(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    made = make_bad_inputs(src)
    shutil.copy(EXAMPLES / "Landscape_1.jpg", src / "good.jpg")
    out, report = tmp_path / "out", tmp_path / "report.json"
    result = gp("run", src, "-o", out, "--thumbnail", "64", "-f", "png", "--report", report)
    assert result.exit_code == 1, result.output
    data = json.loads(report.read_text())
    by_path = {Path(f["path"]).name: f for f in data["files"]}
    assert by_path["good.jpg"]["status"] == "ok"
    for name, path in made.items():
        expected = EXPECTED_ERROR_CLASS[name]
        if path.name not in by_path:          # not an image extension: only found with --all-files
            continue
        record = by_path[path.name]
        if expected is None:
            assert record["status"] == "ok", record
        else:
            assert record["status"] == "failed" and record["error_class"] == expected, record
            assert record["message"]
    assert data["summary"]["failed"] == sum(1 for f in data["files"] if f["status"] == "failed")
    assert "failed" in result.output


def test_exit_code_2_with_a_message_for_usage_errors(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cases = [
        (["run", photos, "-o", out, "--rotate", "45"], "rotate"),
        (["run", tmp_path / "missing", "-o", out], "missing"),
        (["run", photos, "-o", out, "--format", "tga"], "format"),
        (["run", photos, "-o", out, "--resize", "abc"], "--resize"),
        (["run", photos, "-o", out, "--backend", "gpu"], "CUDA not available"),
        (["run", photos, "-o", out, "--max-memory", "lots"], "--max-memory"),
    ]
    (tmp_path / "a-file").write_text("x")
    cases.append((["run", photos, "-o", tmp_path / "a-file"], "not a directory"))
    bad_spec = tmp_path / "bad.toml"
    bad_spec.write_text('[[variant]]\nname = "x"\nops = [{ op = "resize", widht = 3 }]\n')
    cases.append((["run", photos, "-o", out, "--spec", bad_spec], "widht"))
    for args, needle in cases:
        result = gp(*args)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output, (args, result.output)
    assert not out.exists()


def test_output_conflicts_are_reported_not_overwritten(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLES / "Landscape_1.jpg", src / "x.jpg")
    shutil.copy(EXAMPLES / "chapel.png", src / "x.png")
    out, report = tmp_path / "out", tmp_path / "r.json"
    result = gp("run", src, "-o", out, "--thumbnail", "64", "-f", "webp", "--report", report)
    assert result.exit_code == 1
    files = json.loads(report.read_text())["files"]
    assert sorted(f["status"] for f in files) == ["failed", "ok"]
    assert [f["error_class"] for f in files if f["status"] == "failed"] == ["output_conflict"]
    assert sizes(out) == {"x.webp": (64, 43)}            # the first input (x.jpg) wins


def test_output_inside_input_is_never_read_back(photos: Path) -> None:
    out = photos / "thumbs"
    for _ in range(2):
        result = gp("run", photos, "-o", out, "--thumbnail", "32", "-f", "png")
        assert result.exit_code == 0
    assert len(sizes(out)) == 3


def test_dry_run_writes_nothing(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = gp("run", photos, "-o", out, "--thumbnail", "64", "-f", "jpeg", "--dry-run")
    assert result.exit_code == 0
    assert "a.jpg" in result.output and "3 input(s)" in result.output
    assert not out.exists()


def test_on_error_stop_ends_the_run_at_the_first_failure(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "0-broken.jpg").write_bytes(b"this is not a jpeg")
    for i in range(20):
        shutil.copy(EXAMPLES / "Landscape_1.jpg", src / f"{i + 1:02d}.jpg")
    out, report = tmp_path / "out", tmp_path / "r.json"
    result = gp("run", src, "-o", out, "--thumbnail", "64", "--on-error", "stop", "--workers", "1",
                "--report", report)
    assert result.exit_code == 1
    summary = json.loads(report.read_text())["summary"]
    assert summary["failed"] == 1 and summary["processed"] < 20
    assert "--on-error stop" in summary["stop_reason"]


def test_on_error_stop_writes_nothing_after_a_failure_in_the_ops(tmp_path: Path) -> None:
    """Small images go through the ops in batches: one that fails there (a crop outside it) stops
    the run with the inputs after it in its batch unwritten, as those after it in its chunk."""
    from PIL import Image
    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate("abcdefghij"):
        Image.new("RGB", (8, 8) if name == "c" else (64, 64), (20 * i, 90, 200)).save(src / f"{name}.jpg")
    out, report = tmp_path / "out", tmp_path / "r.json"
    result = gp("run", src, "-o", out, "--crop", "32x32+0+0", "--on-error", "stop", "--workers", "1",
                "--report", report)
    assert result.exit_code == 1
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".jpg") == ["a.jpg", "b.jpg"]
    summary = json.loads(report.read_text())["summary"]
    assert (summary["processed"], summary["failed"], summary["cancelled"]) == (2, 1, 7)
    assert "c.jpg: crop 32×32+0+0 lies outside the 8×8 image" in summary["stop_reason"]


def test_inspect_and_ops(photos: Path, tmp_path: Path) -> None:
    (photos / "junk.jpg").write_bytes(b"hello")
    result = gp("inspect", photos, "--json")
    assert result.exit_code == 1
    rows = {Path(r["path"]).name: r for r in map(json.loads, result.output.splitlines())}
    assert rows["b.jpg"]["orientation"] == 6 and rows["b.jpg"]["format"] == "jpeg"
    assert rows["c.png"]["width"] > 0
    assert rows["junk.jpg"]["problems"]
    listing = gp("ops")
    assert listing.exit_code == 0
    for name in ("resize", "thumbnail", "gaussian_blur", "unsharp", "convolve", "watermark", "edges"):
        assert name in listing.output


def test_output_format_json_prints_the_summary_and_every_failure_on_stdout(photos: Path, tmp_path: Path) -> None:
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    done = subprocess.run([sys.executable, "-m", "gpupipe", "run", str(photos), "-o", str(tmp_path / "out"),
                           "--thumbnail", "32", "--output-format", "json", "--quiet"], capture_output=True, text=True)
    assert done.returncode == 1
    told = json.loads(done.stdout)                                        # stdout holds the JSON alone
    assert told["summary"]["processed"] == 3 and told["summary"]["failed"] == 1 and told["summary"]["exit_code"] == 1
    [failure] = told["failures"]
    assert failure["path"].endswith("broken.jpg") and failure["error_class"] in ("corrupt", "truncated", "not_an_image")
    assert failure["message"] and "broken.jpg" in done.stderr             # --quiet still prints failures
    clash = gp("run", photos, "-o", tmp_path / "x", "--thumbnail", "32", "--output-format", "json", "--report", "-")
    assert clash.exit_code == 2 and "stdout" in clash.output
    typo = gp("run", photos, "-o", tmp_path / "y", "--thumbnail", "32", "--output-format", "jsno")
    assert typo.exit_code == 2 and "did you mean 'json'" in typo.output


@pytest.mark.parametrize("flags, message", [
    (["--thumbnail", "100", "--filter", "bilinear"], "--filter modifies --resize"),
    (["--thumbnail", "100", "--fill"], "--fill modifies --resize"),
    (["--blur", "2", "--sharpen-amount", "2"], "--sharpen-amount modifies --sharpen"),
    (["--grayscale", "--watermark-size", "30"], "--watermark-size modifies --watermark-text or --watermark-image"),
    (["--resize", "100x100", "--fill", "--pad"], "--fill and --pad are different resize modes"),
])
def test_a_modifier_without_its_op_is_an_error_not_ignored(photos: Path, tmp_path: Path, flags: list[str],
                                                           message: str) -> None:
    result = gp("run", photos, "-o", tmp_path / "out", *flags)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()                               # refused before any work


def test_verbose_says_how_the_run_is_set_up_and_very_verbose_each_chunk(photos: Path, tmp_path: Path) -> None:
    def run(*flags: str) -> str:
        out = tmp_path / f"out{len(flags)}{''.join(flags)}"
        done = subprocess.run([sys.executable, "-m", "gpupipe", "run", str(photos), "-o", str(out), "--thumbnail",
                               "32", "--quiet", "-j", "2", *flags], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stderr
    assert run() == ""
    setup = run("-v")
    assert "cpu (NumPy/OpenCV/Pillow, 2 worker processes); " in setup and "takes" not in setup
    assert re.search(r"worker \d takes \d+ input\(s\)", run("-vv"))


def test_quiet_and_plain_progress(photos: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    quiet = subprocess.run([sys.executable, "-m", "gpupipe", "run", str(photos), "-o", str(tmp_path / "q"),
                            "--thumbnail", "32", "--quiet"], capture_output=True, text=True, env=env)
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    plain = subprocess.run([sys.executable, "-m", "gpupipe", "run", str(photos), "-o", str(tmp_path / "p"),
                            "--thumbnail", "32"], capture_output=True, text=True, env=env)
    assert plain.returncode == 0
    assert "gpupipe: 3 input(s) found" in plain.stderr                  # a plain progress line, not a bar
    assert "\x1b[" not in plain.stderr and "━" not in plain.stderr
    assert "processed" in plain.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_cleanly_with_exit_130(tmp_path: Path, signum: int) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(150):
        shutil.copy(EXIF / "Landscape_1.jpg", src / f"{i:03d}.jpg")
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    proc = subprocess.Popen([sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(out), "--blur", "4",
                             "-f", "png", "--workers", "2", "--report", str(report)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and any(out.glob("*.png"))):
        time.sleep(0.05)
    os.killpg(proc.pid, signum)         # as a terminal's Ctrl+C, or systemd's stop: the whole group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "stopped early" in stderr and "interrupted" in stderr
    assert "gpupipe: stopping — finishing" in stderr and "Ctrl+C again to abort" in stderr     # said at once
    assert re.search(r"\d+ input\(s\) left to do; to finish, run the same command again: the journal skips "
                     r"the \d+ input\(s\) it recorded", stderr), stderr                      # and how to resume
    written = [p for p in out.iterdir() if p.name != ".gpupipe"]              # the journal is not an output
    assert all(not p.name.startswith(".") for p in written), written       # no temporary left behind
    assert 0 < len(written) < 150
    for path in written:                                                    # and every output is whole
        with Image.open(path) as im:
            im.load()
    files = json.loads(report.read_text())["files"]                        # every input accounted for once
    import collections
    dupes = [p for p, n in collections.Counter(f["path"] for f in files).items() if n > 1]
    assert not dupes, [f for f in files if f["path"] in dupes]
    assert len(files) == 150
    assert {f["status"] for f in files} <= {"ok", "cancelled"}
    assert sum(f["status"] == "ok" for f in files) == len(written)


def test_version_and_module_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "gpupipe", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("gpupipe ")
    import PIL
    assert f"Pillow {PIL.__version__} (libjpeg-turbo " in result.stdout and "OpenCV " in result.stdout
    assert "CuPy" in result.stdout.splitlines()[-1]                  # installed with its version, or not
    script = Path(sys.executable).with_name("gpupipe")        # the console script pip installed
    result = subprocess.run([str(script), "ops", "thumbnail"], capture_output=True, text=True)
    assert result.returncode == 0 and "50×25" in result.stdout


def test_shell_completion_completes_flags() -> None:
    """The shell asks the installed command (bash's protocol): a flag's beginning completes."""
    script = Path(sys.executable).with_name("gpupipe")
    env = {**os.environ, "COMP_WORDS": "gpupipe run --thu", "COMP_CWORD": "2", "_GPUPIPE_COMPLETE": "complete_bash"}
    done = subprocess.run([str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == ["--thumbnail"], done
    # Named, not detected: detection looks for a shell among the test's parent processes, and a
    # suite started in the background has none.
    named = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    shown = subprocess.run([str(script), "--show-completion", "bash"], capture_output=True, text=True, env=named)
    assert shown.returncode == 0 and "_GPUPIPE_COMPLETE=complete_bash" in shown.stdout


def test_doctor_reports_backend_and_cuda(tmp_path: Path) -> None:
    result = gp("doctor")
    assert result.exit_code == 0
    assert "--backend auto" in result.output and "CUDA" in result.output and "write formats" in result.output
    auto = default_max_memory(usable_cores())
    assert re.search(rf"--max-memory auto\s+{auto / 2**20:.0f} MB \(for {usable_cores()} workers\)", result.output)
    assert re.search(r"worker processes\s+a worker process starts and answers in \d+\.\d{3} s", result.output)
    # the resampler's build this CPU runs: AVX2 where it has it and GCC built the clones
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    clones = platform.machine() == "x86_64" and "gcc" in (sysconfig.get_config_var("CC") or "")
    build = "avx2" if clones and re.search(r"^flags\s*:.*\bavx2\b", cpuinfo, re.M) else "baseline"
    assert re.search(rf"resize \(CPU\)\s+Pillow 13's algorithm in gpupipe's C, {build} build", result.output)
    # the WebP writer the process's own check chose: OpenCV's call only where it writes Pillow's bytes
    from PIL import features
    from gpupipe.codecs import encoding
    writer = "OpenCV" if encoding._opencv_writes_pillows_webp() else "Pillow"
    assert re.search(rf"WebP encode\s+libwebp {re.escape(features.version('webp'))} through {writer}", result.output)


def test_max_memory_takes_auto_or_a_size(photos: Path, tmp_path: Path) -> None:
    for value in ("auto", "AUTO", "64MB"):
        result = gp("run", photos, "-o", tmp_path / value, "--thumbnail", "32", "--max-memory", value)
        assert result.exit_code == 0, (value, result.output)
    result = gp("run", photos, "-o", tmp_path / "bad", "--max-memory", "automatic")
    assert result.exit_code == 2 and "or auto" in result.output


def test_brackets_in_user_text_are_shown_verbatim(photos: Path, tmp_path: Path) -> None:
    result = gp("run", photos, "-o", tmp_path / "out", "--watermark-text", "[draft] [red]x[/]", "--dry-run")
    assert result.exit_code == 0
    assert "[draft] [red]x[/]" in result.output


def test_state_log_and_trace(photos: Path, tmp_path: Path) -> None:
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    log, trace = tmp_path / "run.jsonl", tmp_path / "trace.json"
    result = gp("run", photos, "-o", tmp_path / "out", "--thumbnail", "64", "--log", log, "--trace", trace)
    assert result.exit_code == 1
    records = [json.loads(line) for line in log.read_text().splitlines()]
    by_path: dict[str, list[str]] = {}
    for record in records:
        by_path.setdefault(Path(record["path"]).name, []).append(record["state"])
    assert by_path["a.jpg"] == ["queued", "read", "decoded", "processed", "encoded", "written", "ok"]
    assert by_path["broken.jpg"][0] == "queued" and by_path["broken.jpg"][-1] == "failed"
    failed = [r for r in records if r["state"] == "failed"][0]
    assert failed["error_class"] in ("corrupt", "truncated") and failed["message"]
    events = json.loads(trace.read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["name"] for e in spans} == {"read", "decode", "process", "encode", "write"}
    assert len([e for e in spans if e["args"]["input"] == "a.jpg"]) == 5
    threads = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    # each worker process reads, decodes, processes, encodes and writes the inputs of its chunks
    assert {t.rsplit("-", 1)[0] for t in threads} == {"gpupipe-worker"}
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in spans)


def test_second_ctrl_c_aborts_at_once_and_leaves_no_temporary(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(150):
        shutil.copy(EXIF / "Landscape_1.jpg", src / f"{i:03d}.jpg")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(out), "--blur", "4",
                             "-f", "png", "--workers", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and any(out.glob("*.png"))):
        time.sleep(0.05)
    children = procs.children(proc.pid)
    assert len(children) == 2
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    deadline = time.monotonic() + 10                      # no worker outlives the run it served
    while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".gpupipe"]
    for path in (p for p in out.iterdir() if p.name != ".gpupipe"):
        with Image.open(path) as im:
            im.load()


def test_engine_flags_are_checked_before_any_work(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = gp("run", photos, "-o", out, "--thumbnail", "32", "--engine", "spark")
    assert result.exit_code == 2 and "--engine) must be one of local, ray" in result.output
    result = gp("run", photos, "-o", out, "--thumbnail", "32", "--ray-address", "auto")
    assert result.exit_code == 2 and "--engine ray" in result.output
    assert not out.exists()
