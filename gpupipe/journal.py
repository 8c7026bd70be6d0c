"""The journal: an SQLite record of every input, so a re-run does only what is left.

One row per input (path, size, mtime, the hash of the spec that applies to it,
state, attempts, error) and one per output (size, checksum). A re-run skips an
input that is done, unchanged and whose outputs are all still there; an input
that failed before is skipped too unless ``retry_failed`` (corrupt files do not
heal), and ``force`` redoes everything.

Records are written by the engine's collecting thread and committed in small
batches (every ``COMMIT_EVERY`` records or ``COMMIT_SECONDS``): a run killed
outright loses at most that much bookkeeping, and those inputs are simply done
again on resume — their outputs are replaced atomically, so every output still
exists exactly once. An exclusive lock file keeps two runs from sharing one
journal.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine.results import FAILED, OK, FileOutcome
from .errors import StageStalled, StoppedBySystemFailure, UsageError, WorkerCrashed

# Failures caused by the run, not the input (a full disk, a hung mount): a resume retries
# them without --retry-failed, since the input itself may well be fine.
# A worker's crash may be the OOM killer's doing as well as the input's: worth another try.
NOT_THE_INPUTS_FAULT = {StoppedBySystemFailure.error_class, StageStalled.error_class, WorkerCrashed.error_class}

SCHEMA = """
CREATE TABLE IF NOT EXISTS inputs (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    spec_hash TEXT NOT NULL,
    state TEXT NOT NULL,              -- ok | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    error_class TEXT,
    message TEXT,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS inputs_by_state ON inputs (state, error_class);
CREATE TABLE IF NOT EXISTS outputs (
    path TEXT PRIMARY KEY,
    input_path TEXT NOT NULL,
    size INTEGER NOT NULL,
    checksum TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outputs_by_input ON outputs (input_path);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    finished REAL,
    spec_hash TEXT NOT NULL,
    summary TEXT
);
"""
COMMIT_EVERY = 256
COMMIT_SECONDS = 1.0


def default_path(output: str | Path) -> Path:
    return Path(output) / ".gpupipe" / "journal.sqlite"


@dataclass(frozen=True)
class Decision:
    skip: bool
    reason: str = ""


class Journal:
    def __init__(self, path: str | Path, spec_hash: str, *, force: bool = False, retry_failed: bool = False) -> None:
        self.path = Path(path)
        self.spec_hash = spec_hash
        self.force = force
        self.retry_failed = retry_failed
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.path.with_name(self.path.name + ".lock"), "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "another process"
            self._lock_file.close()
            raise UsageError(f"the journal {self.path} is in use by {holder}: another gpupipe run is writing to "
                             "this output; wait for it, or use another output or --journal") from None
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(f"gpupipe pid {os.getpid()}\n")
        self._lock_file.flush()
        # One connection shared by the scan thread (look-ups) and the collector (records).
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._mutex = threading.Lock()
        self._pending = 0
        self._last_commit = time.monotonic()
        self._db.execute("BEGIN")
        self._run_id = self._db.execute("INSERT INTO runs (started, spec_hash) VALUES (?, ?)",
                                        (time.time(), spec_hash)).lastrowid

    # ------------------------------------------------------------------ decisions

    def decide(self, path: str, size: int, mtime: float) -> Decision:
        """Whether an input found by the scan can be skipped, and why."""
        if self.force:
            return Decision(False)
        with self._mutex:
            row = self._db.execute("SELECT size, mtime, spec_hash, state, error_class FROM inputs WHERE path = ?",
                                   (path,)).fetchone()
            if row is None:
                return Decision(False)
            old_size, old_mtime, old_spec, state, error_class = row
            if old_size != size or old_mtime != mtime or old_spec != self.spec_hash:
                return Decision(False)
            if state == FAILED:
                if self.retry_failed or error_class in NOT_THE_INPUTS_FAULT:
                    return Decision(False)
                return Decision(True, f"failed before ({error_class}), unchanged; --retry-failed tries again")
            outputs = [r[0] for r in self._db.execute("SELECT path FROM outputs WHERE input_path = ?", (path,))]
        if not all(os.path.exists(o) for o in outputs):
            return Decision(False)
        return Decision(True, "done before, unchanged")

    def wrote(self, output_path: str) -> bool:
        """Whether this journal recorded ``output_path`` as an output gpupipe wrote: a file there
        may be replaced by a new run; any other file at an output path is the user's and is kept."""
        with self._mutex:
            return self._db.execute("SELECT 1 FROM outputs WHERE path = ?", (output_path,)).fetchone() is not None

    # ------------------------------------------------------------------ records

    def record(self, outcome: FileOutcome) -> None:
        """Remember a finished input (ok or failed); cancelled and skipped inputs leave no trace."""
        if outcome.status not in (OK, FAILED) or outcome.mtime is None:
            return
        with self._mutex:
            self._db.execute(
                "INSERT INTO inputs (path, size, mtime, spec_hash, state, attempts, error_class, message, updated) "
                "VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET size = excluded.size, "
                "mtime = excluded.mtime, spec_hash = excluded.spec_hash, state = excluded.state, "
                "attempts = inputs.attempts + 1, error_class = excluded.error_class, message = excluded.message, "
                "updated = excluded.updated",
                (outcome.path, outcome.size, outcome.mtime, self.spec_hash, outcome.status, outcome.error_class,
                 outcome.message, time.time()))
            self._db.execute("DELETE FROM outputs WHERE input_path = ?", (outcome.path,))
            self._db.executemany(
                "INSERT OR REPLACE INTO outputs (path, input_path, size, checksum) VALUES (?, ?, ?, ?)",
                [(path, outcome.path, size, checksum)
                 for path, size, checksum in zip(outcome.outputs, outcome.output_sizes, outcome.output_checksums)])
            self._pending += 1
            if self._pending >= COMMIT_EVERY or time.monotonic() - self._last_commit >= COMMIT_SECONDS:
                self._commit()

    def _commit(self) -> None:
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")
        self._pending = 0
        self._last_commit = time.monotonic()

    def close(self, summary: dict[str, Any] | None = None) -> None:
        with self._mutex:
            self._db.execute("UPDATE runs SET finished = ?, summary = ? WHERE id = ?",
                             (time.time(), json.dumps(summary) if summary else None, self._run_id))
            self._db.execute("COMMIT")
            self._db.close()
        self._lock_file.close()


def report(path: str | Path, examples: int = 5) -> dict[str, Any]:
    """What a journal knows: counts by state, failures by error class, the last runs."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no journal at {path} (run gpupipe run with this output first, or pass --journal)")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        states = dict(db.execute("SELECT state, COUNT(*) FROM inputs GROUP BY state").fetchall())
        failures = {}
        for error_class, count in db.execute("SELECT error_class, COUNT(*) FROM inputs WHERE state = 'failed' "
                                             "GROUP BY error_class ORDER BY COUNT(*) DESC"):
            rows = db.execute("SELECT path, message FROM inputs WHERE state = 'failed' AND error_class = ? "
                              "ORDER BY path LIMIT ?", (error_class, examples)).fetchall()
            failures[error_class] = {"count": count, "examples": [{"path": p, "message": m} for p, m in rows]}
        outputs, out_bytes = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outputs").fetchone()
        runs = [{"started": s, "finished": f, "spec_hash": h, "summary": json.loads(j) if j else None}
                for s, f, h, j in db.execute("SELECT started, finished, spec_hash, summary FROM runs "
                                             "ORDER BY id DESC LIMIT 5")]
    finally:
        db.close()
    return {"journal": str(path), "inputs": states, "outputs": outputs, "output_bytes": out_bytes,
            "failures": failures, "runs": runs}
