"""Prometheus metrics of real runs: the textfile at the end, the HTTP endpoint during the run."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

import gpupipe
from gpupipe import ops
from gpupipe.cli import app
from gpupipe.engine.results import RunSummary
from gpupipe.errors import UsageError
from gpupipe.options import parse_address

from tests.support.badfiles import EXPECTED_ERROR_CLASS, make_bad_inputs
from tests.support import REPO_ROOT

ROOT = REPO_ROOT
EXAMPLES = ROOT / "examples" / "photos"
STAGES = ("read", "decode", "process", "encode", "write")
QUEUES = {"admitted", "working"}        # the CPU engine's: inputs waiting for a chunk, inputs in the workers' chunks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, (label, value), ...): value} of a Prometheus text exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, *sorted(sample.labels.items()))] = sample.value
    return found


def scrape(port: int) -> dict[tuple, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return samples(response.read().decode())


def photos(directory: Path, count: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shutil.copy(EXAMPLES / ("chapel.png" if i % 3 == 2 else "Landscape_1.jpg"), directory / f"{i:03d}.jpg")
    return directory


def assert_matches(found: dict[tuple, float], summary: dict, outcomes: list[dict] | None = None) -> None:
    """The textfile's counters say what the run summary says."""
    for status, key in (("ok", "processed"), ("failed", "failed"), ("skipped", "skipped"),
                        ("cancelled", "cancelled")):
        assert found[("gpupipe_files_total", ("status", status))] == summary[key], status
    failures = {dict(labels)["error_class"]: value for (name, *labels), value in found.items()
                if name == "gpupipe_failures_total"}
    assert failures == summary["failures_by_class"]
    assert found[("gpupipe_read_bytes_total",)] == summary["bytes_in"]
    assert found[("gpupipe_written_bytes_total",)] == summary["bytes_out"]
    if outcomes is not None:               # one observation per input that went through each stage
        per_stage = Counter(stage for outcome in outcomes for stage in outcome.get("seconds", {}))
        for stage in STAGES:
            count = found[("gpupipe_stage_seconds_count", ("stage", stage))]
            assert count == per_stage[stage], stage
            assert found[("gpupipe_stage_seconds_bucket", ("le", "+Inf"), ("stage", stage))] == count


def test_textfile_counts_match_the_run_summary(tmp_path: Path) -> None:
    src = photos(tmp_path / "in", 6)
    make_bad_inputs(src / "bad")
    prom = tmp_path / "metrics" / "run.prom"                  # its directory is made, like --report's
    result = gpupipe.run(src, tmp_path / "out", [ops.Thumbnail(64)], backend="cpu", workers=2, metrics_file=prom)
    summary = result.summary.to_dict()
    expected_failures = Counter(c for k, c in EXPECTED_ERROR_CLASS.items() if c and k != "jpeg_named_txt")
    assert summary["failures_by_class"] == dict(expected_failures) and summary["processed"] == 7
    found = samples(prom.read_text())
    assert_matches(found, summary, [o.to_dict() for o in result.outcomes])
    assert found[("gpupipe_stage_seconds_count", ("stage", "write"))] == 7     # every processed input, each stage
    assert found[("gpupipe_stage_seconds_count", ("stage", "read"))] >= 7
    assert {dict(labels)["queue"] for (name, *labels) in found if name == "gpupipe_queue_items"} == QUEUES
    assert found[("gpupipe_inputs_in_flight",)] == 0 and found[("gpupipe_decoded_image_bytes",)] == 0
    assert not [key for key in found if key[0].startswith("gpupipe_gpu_")]     # a CPU run has no GPU gauges
    assert found[("gpupipe_run_info", ("backend", result.summary.backend), ("version", gpupipe.__version__))] == 1
    assert [p.name for p in prom.parent.iterdir()] == ["run.prom"]           # no temporary left beside it

    again = gpupipe.run(src, tmp_path / "out", [ops.Thumbnail(64)], backend="cpu", metrics_file=prom)
    found = samples(prom.read_text())                      # a second run in this process: its own counts
    assert again.summary.processed == 0 and again.summary.skipped >= 7
    assert found[("gpupipe_files_total", ("status", "skipped"))] == again.summary.skipped
    assert found[("gpupipe_files_total", ("status", "ok"))] == 0


def test_scraped_during_the_run_and_the_port_freed_after(tmp_path: Path) -> None:
    src = photos(tmp_path / "in", 12)
    port = free_port()
    scrapes = []
    seen = []

    def on_outcome(outcome) -> None:                      # the caller's hook still runs beside the metrics
        seen.append(outcome.path)
        scrapes.append(scrape(port))

    result = gpupipe.run(src, tmp_path / "out", [ops.GaussianBlur(2)], backend="cpu", workers=1,
                         metrics_port=port, on_outcome=on_outcome)
    assert result.summary.processed == 12 and len(seen) == 12
    for number, found in enumerate(scrapes, 1):
        assert found[("gpupipe_files_total", ("status", "ok"))] == number
        assert {dict(labels)["queue"] for (name, *labels) in found if name == "gpupipe_queue_items"} == QUEUES
        assert ("gpupipe_inputs_in_flight",) in found and ("gpupipe_decoded_image_bytes",) in found
    assert max(found[("gpupipe_inputs_in_flight",)] for found in scrapes) > 0
    with pytest.raises(urllib.error.URLError):            # the server is gone once the run returns
        scrape(port)
    result = gpupipe.run(src, tmp_path / "out2", [ops.Thumbnail(16)], backend="cpu", metrics_port=port)
    assert result.summary.processed == 12                  # and the same port serves the next run


def test_a_port_in_use_is_refused_before_any_work(tmp_path: Path) -> None:
    src = photos(tmp_path / "in", 2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"127.0.0.1:{port} is already in use"):
            gpupipe.run(src, tmp_path / "out", [ops.Thumbnail(16)], backend="cpu", metrics_port=port,
                        metrics_file=tmp_path / "m.prom")
        assert not (tmp_path / "out" / ".gpupipe").exists()      # no journal opened, nothing done
        assert not (tmp_path / "m.prom").exists()
        result = CliRunner().invoke(app, ["run", str(src), "-o", str(tmp_path / "out"), "--thumbnail", "16",
                                          "--metrics-port", str(port)], catch_exceptions=False)
        assert result.exit_code == 2 and "already in use" in result.output
    assert not any(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    with pytest.raises(UsageError, match="1-65535"):
        gpupipe.run(src, tmp_path / "out", [ops.Thumbnail(16)], metrics_port=70000)


def test_parse_address() -> None:
    assert parse_address("9108") == ("127.0.0.1", 9108)
    assert parse_address("0.0.0.0:9108") == ("0.0.0.0", 9108)
    assert parse_address("[::1]:9108") == ("::1", 9108)
    for bad in ("", "0", "65536", "http", "host:", ":9108"):
        with pytest.raises(UsageError, match="--metrics-port"):
            parse_address(bad)


def test_textfile_written_when_the_run_fails(tmp_path: Path) -> None:
    src = photos(tmp_path / "in", 8)
    prom = tmp_path / "run.prom"
    port = free_port()
    token = gpupipe.CancelToken()

    calls = []

    def explode(outcome) -> None:
        calls.append(outcome)
        if len(calls) == 1:
            token.cancel("the test stops it")                 # so the engine's threads wind down
            raise RuntimeError("a caller's hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        gpupipe.run(src, tmp_path / "out", [ops.Thumbnail(16)], backend="cpu", workers=1, cancel=token,
                    on_outcome=explode, metrics_file=prom, metrics_port=port)
    found = samples(prom.read_text())
    assert found[("gpupipe_files_total", ("status", "ok"))] >= 1
    with pytest.raises(urllib.error.URLError):
        scrape(port)


def test_cli_metrics_end_to_end(tmp_path: Path) -> None:
    src = photos(tmp_path / "in", 3)
    make_bad_inputs(src / "bad")
    prom, report = tmp_path / "run.prom", tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(tmp_path / "out"),
                           "--thumbnail", "32", "--quiet", "--metrics-file", str(prom), "--report", str(report),
                           "--metrics-port", f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 1, done.stderr                  # the bad inputs failed
    data = json.loads(report.read_text())
    assert_matches(samples(prom.read_text()), data["summary"], data["files"])


def test_cli_scraped_while_running_then_interrupted(tmp_path: Path) -> None:
    src = photos(tmp_path / "in", 80)
    out, prom, report = tmp_path / "out", tmp_path / "run.prom", tmp_path / "report.json"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gpupipe", "run", str(src), "-o", str(out), "--blur", "4",
                             "-f", "png", "--workers", "1", "--metrics-port", str(port), "--metrics-file",
                             str(prom), "--report", str(report)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        found, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                found = scrape(port)
            except (urllib.error.URLError, ConnectionError):
                found = None
            if found and found[("gpupipe_files_total", ("status", "ok"))] >= 1:
                break
            time.sleep(0.05)
        assert found, "the metrics endpoint never answered"
        assert found[("gpupipe_inputs_in_flight",)] > 0
        assert {dict(labels)["queue"] for (name, *labels) in found if name == "gpupipe_queue_items"} == QUEUES
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    data = json.loads(report.read_text())
    assert 0 < data["summary"]["processed"] < 80 and data["summary"]["cancelled"] > 0
    assert_matches(samples(prom.read_text()), data["summary"], data["files"])


class _Engine:
    """Anything with ``stage_state()``, ``device_memory()`` and a summary feeds the gauges."""

    def __init__(self, memory=None, backend: str = "gpu (test)") -> None:
        self.memory, self.summary = memory, RunSummary(backend=backend)

    def stage_state(self) -> dict:
        return {"queues": {"read": {"items": 3, "bytes": 4096}}, "images_bytes": 1 << 20, "in_flight": 7}

    def device_memory(self):
        if isinstance(self.memory, Exception):
            raise self.memory
        return self.memory


def test_live_gauges_and_gpu_memory_only_when_the_engine_has_it(tmp_path: Path) -> None:
    from gpupipe.metrics import RunMetrics
    metrics = RunMetrics()
    metrics.attach(_Engine({"used": 123, "limit": 456}))
    metrics.write_textfile(tmp_path / "gpu.prom")
    found = samples((tmp_path / "gpu.prom").read_text())
    assert found[("gpupipe_queue_items", ("queue", "read"))] == 3
    assert found[("gpupipe_queue_bytes", ("queue", "read"))] == 4096
    assert found[("gpupipe_inputs_in_flight",)] == 7 and found[("gpupipe_decoded_image_bytes",)] == 1 << 20
    assert found[("gpupipe_gpu_memory_used_bytes",)] == 123 and found[("gpupipe_gpu_memory_limit_bytes",)] == 456
    other = RunMetrics()                                   # its own registry: no clash with the first
    other.attach(_Engine(RuntimeError("device already closed")))
    other.write_textfile(tmp_path / "closed.prom")         # a failing probe drops the GPU gauges, not the file
    found = samples((tmp_path / "closed.prom").read_text())
    assert found[("gpupipe_inputs_in_flight",)] == 7
    assert not [key for key in found if key[0].startswith("gpupipe_gpu_")]
    last = RunMetrics()                                    # a failing GPU handed the run to the CPU:
    last.attach(_Engine(None, backend="cpu (after handover)"))   # the summary's words are what counts
    last.write_textfile(tmp_path / "cpu.prom")
    found = samples((tmp_path / "cpu.prom").read_text())
    assert not [key for key in found if key[0].startswith("gpupipe_gpu_")]
    assert found[("gpupipe_run_info", ("backend", "cpu (after handover)"), ("version", gpupipe.__version__))] == 1
