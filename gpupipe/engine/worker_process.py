"""A CPU worker as a process of its own: decode, process and encode one input at a time.

Threads share one interpreter lock, and each input holds it for the Python around the
codecs: about a fifth of W1's CPU time on small images (perf, 2-core VM), which would cap
threads near five cores' worth of that work whatever the host has (benchmarks/scaling.py
measures it on a many-core host). A worker process has its own lock.
It also isolates the codecs: a crash or the OOM killer costs the input it was on
(``WorkerCrashed``), and a fresh process takes the next one.

The engine keeps everything else — reading, the memory budget, output claims, writing,
the journal — so only file bytes go to a worker and only encoded files come back.
A worker is a fresh interpreter (``worker_process.main``, 0.3 s and
60 MB here), not a fork: forking the engine, with its threads running, could copy a lock
some thread held, and multiprocessing's spawn and fork server re-run the caller's main
script in every child, which a library must not do to its user's script.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import PurePath
from typing import NoReturn

from ..errors import InputError, SystemFailure, WorkerCrashed
from ..spec import OpTrie, Spec
from . import stages
from .process import process_batch
from .queues import Closed


log = logging.getLogger("gpupipe")

READY = "ready"              # a worker's first word: imported, spec received, backend built
START_TIMEOUT = 120.0        # seconds a worker may take to get there (a cold disk, a loaded host)


@dataclass
class Computed:
    """What a worker sends back for one input."""

    format: str | None = None
    size: tuple[int, int] | None = None                               # decoded (height, width)
    encoded: stages.Encoded = field(default_factory=stages.Encoded)
    failure: InputError | None = None                                 # the input failed before its variants
    spans: list[tuple[str, float, float]] = field(default_factory=list)  # perf_counter: one clock for all processes


def compute(data: bytes, relative: PurePath, spec: Spec, trie: OpTrie, backend, max_pixels: int) -> Computed:
    """One input through decode → ops → encode, as the local engine's compute threads do it."""
    computed = Computed()
    started = time.perf_counter()
    try:
        decoded = stages.decode_input(data, spec, max_pixels=max_pixels)
    except InputError as exc:
        computed.failure = exc
        return computed
    images, decoded.pixels = [decoded.pixels], None        # process_batch frees them as it goes
    computed.format, computed.size = decoded.format, images[0].shape[:2]
    decoded_at = _span(computed, "decode", started)
    results = process_batch(backend, images, spec, trie, [decoded.format])[0]
    processed_at = _span(computed, "process", decoded_at)
    computed.encoded = stages.encode_variants(spec, results, relative, decoded.format, decoded.icc_profile)
    _span(computed, "encode", processed_at)
    return computed


def _span(computed: Computed, stage: str, since: float) -> float:
    now = time.perf_counter()
    computed.spans.append((stage, since, now))
    return now


def _serve(conn: Connection) -> None:
    """The worker's main loop: the spec first, then (bytes, relative path) in and Computed
    out, until told to stop."""
    # Ctrl+C reaches the whole process group, and systemd's stop signals the whole cgroup: the
    # engine drains, and its workers finish the input they are on. The engine kills them itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from ..backends import select_backend
    from .tuning import tune_allocator

    tune_allocator()
    spec, max_pixels = conn.recv()
    backend = select_backend("cpu", workers=1)
    trie = OpTrie.build(spec.variants)
    conn.send(READY)
    while True:
        try:
            request = conn.recv()
        except EOFError:                 # the engine is gone
            return
        if request is None:
            return
        data, relative = request
        try:
            reply = compute(data, relative, spec, trie, backend, max_pixels)
        except Exception as exc:         # a bug costs this input, never the worker
            reply = Computed(failure=stages.unexpected(exc))
        try:
            conn.send(reply)
        except OSError:                  # the engine stopped without waiting for it
            return
        del request, data, reply         # an idle worker holds no input (one may be 100 MB)


class WorkerProcess:
    """One worker process, owned by one engine thread; restarted after it dies."""

    def __init__(self, spec: Spec, max_pixels: int, name: str) -> None:
        self._spec, self._max_pixels, self.name = spec, max_pixels, name
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._closed = threading.Event()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        # The same imports as this interpreter: gpupipe may be found through sys.path only.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        with theirs:
            try:
                self._process = subprocess.Popen(
                    # -P: no working directory first on its path, so it imports this gpupipe, not one
                    # that happens to sit in the directory the run was started from.
                    [sys.executable, "-P", "-c", f"from {__name__} import main; main({theirs.fileno()})"],
                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
            except OSError as exc:       # no interpreter to run (an embedded Python), no processes left
                ours.close()
                raise SystemFailure(f"--parallel processes: cannot start a worker process with "
                                    f"{sys.executable!r}: {exc}") from exc
        # Only the worker holds its end now: its death reads as end-of-file here.
        self._conn = Connection(ours.detach())
        try:
            self._conn.send((self._spec, self._max_pixels))
            ready = self._conn.poll(START_TIMEOUT) and self._conn.recv() == READY
        except (EOFError, OSError):
            ready = False
        if not ready:
            cause = self._death()
            self._discard()
            raise SystemFailure(f"--parallel processes: a worker process did not start ({cause}; its own "
                                f"error, if any, is above); --parallel threads needs none")
        log.debug("%s: worker process %d ready", self.name, self._process.pid)

    def compute(self, data: bytes, relative: PurePath) -> Computed:
        """The input's result. WorkerCrashed when the worker died on it (the next call starts a
        new one); Closed when the engine closed this worker meanwhile."""
        if self._closed.is_set():
            raise Closed()
        if self._process is None:        # it died on the last input
            self.start()
        request = (data, relative)
        try:
            self._conn.send(request)
        except OSError:                  # it died idle, before this input reached it: a new one takes it
            self._restart()
            try:
                self._conn.send(request)
            except OSError:
                self._crashed()
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            if self._closed.is_set():
                raise Closed() from None
            self._crashed()

    def _crashed(self) -> NoReturn:
        cause = self._death()
        self._discard()
        raise WorkerCrashed(f"the worker process died on this input ({cause})")

    def _restart(self) -> None:
        self._discard()
        self.start()

    def _death(self) -> str:
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "it stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"killed by {name}" + ("; out of memory?" if -code == signal.SIGKILL else "")
        return f"exit status {code}"

    def close(self) -> None:
        """Stop the worker once it is idle: called by the thread that owns it."""
        self._closed.set()
        if self._conn is not None:
            try:
                self._conn.send(None)
            except OSError:
                pass
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._discard()

    def kill(self) -> None:
        """Stop the worker now, from any thread: its owner, if waiting on it, gets Closed."""
        self._closed.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def _discard(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None


def main(fd: int) -> None:
    """The worker process's entry point: serve the engine on the socket ``fd``."""
    _serve(Connection(fd))
