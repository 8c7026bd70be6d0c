"""Per-input records for people and tools: a JSON-lines state log and a Chrome trace.

Both are fed finished ``FileOutcome``s (with their stage spans) by the engine's
``on_outcome`` hook on the main thread, and stream to disk as they go, so memory
does not grow with the number of inputs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .engine.results import FileOutcome
from .sidefiles import SideFile

# Stage name → the state an input is in once that stage is done.
STATE_AFTER = {"read": "read", "decode": "decoded", "process": "processed", "encode": "encoded",
               "write": "written"}


class _Clock:
    """perf_counter seconds → wall-clock ISO time, anchored once."""

    def __init__(self) -> None:
        self.perf0 = time.perf_counter()
        self.wall0 = time.time()

    def iso(self, perf: float) -> str:
        wall = self.wall0 + (perf - self.perf0)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1e6):06d}Z"


class StateLog:
    """``--log FILE``: one JSON object per line for each state an input reaches.

    {"t": ISO time, "path": ..., "state": queued|read|decoded|processed|encoded|written|
     ok|failed|skipped|cancelled, "seconds": time spent reaching it, ...}
    """

    def __init__(self, path: str | Path) -> None:
        self._file = SideFile(path, "--log")
        self.path = self._file.path
        self._clock = _Clock()

    def __call__(self, outcome: FileOutcome) -> None:
        write = self._file.write
        if outcome.queued_at is not None:
            write(json.dumps({"t": self._clock.iso(outcome.queued_at), "path": outcome.path,
                              "state": "queued"}) + "\n")
        for stage, start, end, thread in outcome.spans:
            write(json.dumps({"t": self._clock.iso(end), "path": outcome.path, "state": STATE_AFTER[stage],
                              "seconds": round(end - start, 6), "thread": thread}) + "\n")
        final = {"t": self._clock.iso(time.perf_counter()), "path": outcome.path, "state": outcome.status}
        if outcome.error_class:
            final.update(error_class=outcome.error_class, message=outcome.message)
        if outcome.outputs:
            final["outputs"] = outcome.outputs
        write(json.dumps(final) + "\n")

    def close(self) -> None:
        """Raises SystemFailure when the log could not be written (a full disk)."""
        self._file.close()

    def abandon(self) -> None:
        self._file.abandon()


class ChromeTrace:
    """``--trace FILE.json``: one span per input per stage, on the thread that ran it.

    Open in Perfetto (ui.perfetto.dev) or chrome://tracing to see where time goes
    and whether the stages overlap.
    """

    def __init__(self, path: str | Path) -> None:
        self._file = SideFile(path, "--trace")
        self.path = self._file.path
        self._file.write('{"displayTimeUnit": "ms", "traceEvents": [\n')
        self._clock = _Clock()
        self._threads: dict[str, int] = {}
        self._pid = os.getpid()

    def _tid(self, thread: str) -> int:
        return self._threads.setdefault(thread, len(self._threads) + 1)

    def __call__(self, outcome: FileOutcome) -> None:
        name = outcome.relative or Path(outcome.path).name
        for stage, start, end, thread in outcome.spans:
            event = {"name": stage, "cat": "stage", "ph": "X", "pid": self._pid, "tid": self._tid(thread),
                     "ts": round((start - self._clock.perf0) * 1e6, 1), "dur": round((end - start) * 1e6, 1),
                     "args": {"input": name}}
            self._file.write(json.dumps(event) + ",\n")
        if outcome.status == "failed":
            end = outcome.spans[-1][2] if outcome.spans else time.perf_counter()
            self._file.write(json.dumps({"name": f"failed: {outcome.error_class}", "ph": "i", "s": "p",
                                         "pid": self._pid, "ts": round((end - self._clock.perf0) * 1e6, 1),
                                         "args": {"input": name, "message": outcome.message}}) + ",\n")

    def close(self) -> None:
        """Raises SystemFailure when the trace could not be written (a full disk)."""
        names = [{"name": "thread_name", "ph": "M", "pid": self._pid, "tid": tid, "args": {"name": thread}}
                 for thread, tid in self._threads.items()]
        names.append({"name": "process_name", "ph": "M", "pid": self._pid, "args": {"name": "gpupipe run"}})
        self._file.write(",\n".join(json.dumps(n) for n in names) + "\n]}\n")
        self._file.close()

    def abandon(self) -> None:
        self._file.abandon()
