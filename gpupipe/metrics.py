"""Prometheus metrics for a run (``--metrics-port``, ``--metrics-file``), via prometheus-client.

Counters and the per-stage histogram are fed each input's ``FileOutcome`` (the
engine's ``on_outcome`` hook, main thread). Queue depths, inputs in flight,
decoded-image bytes and device memory are read at scrape time from the engine's
``stage_state()`` and ``device_memory()``, so they cost nothing
between scrapes. Every ``RunMetrics`` has its own registry: several runs in one
process never share or clash over metrics.

    gpupipe_files_total{status}                  inputs finished: ok, failed, rejected, skipped, cancelled
    gpupipe_failures_total{error_class}          failed inputs by error class
    gpupipe_read_bytes_total                     input bytes read (every input, as in the summary)
    gpupipe_written_bytes_total                  output bytes written by inputs that succeeded
    gpupipe_stage_seconds{stage}                 histogram: read, decode, process, encode, write
    gpupipe_queue_items{queue}, gpupipe_queue_bytes{queue}
    gpupipe_inputs_in_flight                     found and not finished yet
    gpupipe_decoded_image_bytes                  decoded images held anywhere in the pipeline
    gpupipe_gpu_memory_used_bytes, gpupipe_gpu_memory_limit_bytes   only on a GPU backend
    gpupipe_run_info{backend, version}           always 1
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .engine.results import CANCELLED, FAILED, OK, REJECTED, SKIPPED, FileOutcome
from .errors import SystemFailure, UsageError
from .options import DEFAULT_METRICS_HOST
from .sidefiles import STDOUT, SideFile, printable

log = logging.getLogger("gpupipe")

STAGES = ("read", "decode", "process", "encode", "write")
# 1 ms .. 5 min: a thumbnail's encode is a few ms, a huge TIFF over a slow mount takes minutes.
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                 300.0)


class _LiveState(Collector):
    """Gauges read at collection time from the engine."""

    def __init__(self) -> None:
        self.engine: Any = None

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(self._families(describing=True))

    def collect(self) -> Iterable[GaugeMetricFamily]:
        state = None
        if self.engine is not None:
            try:
                state = self.engine.stage_state()
            except Exception:                       # a scrape must never disturb the run
                log.debug("metrics: stage_state() failed", exc_info=True)
        memory = described = None
        if self.engine is not None:
            try:
                # As the summary says it: a failing GPU is handed over to the CPU mid-run.
                described = self.engine.summary.backend
                memory = self.engine.device_memory()
            except Exception:                       # a scrape must never disturb the run
                log.debug("metrics: device_memory() failed", exc_info=True)
        return list(self._families(state, memory, described))

    @staticmethod
    def _families(state: dict | None = None, memory: dict | None = None, backend: str | None = None,
                  describing: bool = False) -> Iterable[GaugeMetricFamily]:
        from . import __version__
        info = GaugeMetricFamily("gpupipe_run_info", "The backend doing the work (it changes if a failing GPU "
                                 "hands over to the CPU) and the gpupipe version; always 1.",
                                 labels=["backend", "version"])
        if backend is not None:
            info.add_metric([backend, __version__], 1)
        if describing or backend is not None:
            yield info
        items = GaugeMetricFamily("gpupipe_queue_items", "Inputs waiting in each queue between stages.",
                                  labels=["queue"])
        size = GaugeMetricFamily("gpupipe_queue_bytes", "Bytes (compressed or decoded) waiting in each queue.",
                                 labels=["queue"])
        for name, queue in (state or {}).get("queues", {}).items():
            items.add_metric([name], queue.get("items", 0))
            size.add_metric([name], queue.get("bytes", 0))
        yield items
        yield size
        in_flight = GaugeMetricFamily("gpupipe_inputs_in_flight", "Inputs found and not finished yet.")
        held = GaugeMetricFamily("gpupipe_decoded_image_bytes",
                                 "Bytes of decoded images held anywhere in the pipeline.")
        if state is not None:
            in_flight.add_metric([], state.get("in_flight", 0))
            held.add_metric([], state.get("images_bytes", 0))
        if describing or state is not None:
            yield in_flight
            yield held
        if describing or memory is not None:        # exported only on a GPU backend
            used = GaugeMetricFamily("gpupipe_gpu_memory_used_bytes", "GPU memory in use by the backend.")
            limit = GaugeMetricFamily("gpupipe_gpu_memory_limit_bytes", "GPU memory the backend may use.")
            if memory is not None:
                used.add_metric([], memory["used"])
                limit.add_metric([], memory["limit"])
            yield used
            yield limit


class RunMetrics:
    """The metrics of one run, in a registry of their own.

    ``observe`` each outcome, ``attach`` the engine and backend for live gauges,
    ``serve`` them over HTTP while the run goes, ``write_textfile`` at the end and
    ``close`` to free the port.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.files = Counter("gpupipe_files", "Inputs finished, by outcome.", ["status"], registry=self.registry)
        self.failures = Counter("gpupipe_failures", "Failed inputs, by error class.", ["error_class"],
                                registry=self.registry)
        self.bytes_read = Counter("gpupipe_read_bytes", "Input bytes read.", registry=self.registry)
        self.bytes_written = Counter("gpupipe_written_bytes", "Output bytes written by inputs that succeeded.",
                                     registry=self.registry)
        self.stage_seconds = Histogram("gpupipe_stage_seconds", "Seconds one input spent in each stage.",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=self.registry)
        for status in (OK, FAILED, REJECTED, SKIPPED, CANCELLED):      # present at 0, so rate() works from the start
            self.files.labels(status)
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        self._live = _LiveState()
        self.registry.register(self._live)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    def observe(self, outcome: FileOutcome) -> None:
        """Count one finished input (the same arithmetic as ``RunSummary.record``)."""
        self.files.labels(outcome.status).inc()
        self.bytes_read.inc(outcome.bytes_in)
        if outcome.status == OK:
            self.bytes_written.inc(outcome.bytes_out)
        elif outcome.status == FAILED:
            self.failures.labels(outcome.error_class or "error").inc()
        for stage, seconds in outcome.seconds.items():
            self.stage_seconds.labels(stage).observe(seconds)

    def attach(self, engine: Any) -> None:
        """Live gauges from ``engine.stage_state()``, ``engine.device_memory()`` and its summary."""
        self._live.engine = engine

    def serve(self, port: int, host: str = DEFAULT_METRICS_HOST) -> None:
        """Serve http://HOST:PORT/metrics in a daemon thread until ``close``.

        A port that is taken (or not ours to take) is a UsageError, raised at once."""
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            why = ("is already in use" if exc.errno == errno.EADDRINUSE else
                   "needs privileges this process lacks" if exc.errno == errno.EACCES else f"cannot be used: {exc}")
            raise UsageError(f"--metrics-port: {host}:{port} {why}; choose another port") from None
        self.address = (host, self._server.server_address[1])

    def check_textfile(self, path: str | Path) -> None:
        """Before any work: the textfile can be written (its directory made if needed).
        A directory, a block device or an unwritable place is a UsageError."""
        path = Path(path)
        if str(path) == STDOUT:
            return
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise UsageError(f"--metrics-file {printable(str(path))}: {exc.strerror or exc}") from None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise UsageError(f"--metrics-file {printable(str(path))} is a directory; give a file name such as "
                             "gpupipe.prom")
        if st is not None and not stat.S_ISREG(st.st_mode):
            return                  # a FIFO or a device: written straight through at the end
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--metrics-file {printable(str(path))}: cannot create its directory: "
                             f"{exc.strerror or exc}") from None
        if not os.access(path.parent, os.W_OK):
            raise UsageError(f"--metrics-file {printable(str(path))}: cannot write in {printable(str(path.parent))}")

    def write_textfile(self, path: str | Path) -> None:
        """Every metric in the text format, for node_exporter's textfile collector: renamed into
        place from a temporary (a reader never sees half a file), or written straight through to
        a FIFO, a device or a symlink, or stdout for ``-`` (see gpupipe.sidefiles).
        Raises SystemFailure when it cannot be written (a full disk)."""
        try:
            file = SideFile(path, "--metrics-file")
        except UsageError as exc:
            raise SystemFailure(str(exc)) from None
        file.write(generate_latest(self.registry).decode("utf-8", "backslashreplace"))
        file.close()

    def close(self) -> None:
        """Stop serving and free the port (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)
