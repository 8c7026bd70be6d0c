"""The journal: an SQLite record of every input, so a re-run does only what is left.

One row per input (path, size, mtime, the hash of the spec that applies to it,
state, attempts, error) and one per output (size, checksum). A re-run skips an
input that is done, unchanged and whose outputs are all still there at the size
written (and, with ``verify``, with the same checksum); an input that failed
before is skipped too unless ``retry_failed`` (corrupt files do not heal), and
``force`` redoes everything.

Paths are stored as the bytes of their absolute path (``os.fsencode``), so any
file name round-trips exactly and ``in/a.jpg`` and ``/abs/in/a.jpg`` are one
entry. The schema's version is in ``PRAGMA user_version``: journals of version 0
(text paths) are migrated in place, newer ones are refused.

The local engine's worker processes record the chunks they finish themselves, each chunk in
one transaction once its files are on disk (``ChunkRecorder``), so the run's own process does
no per-input work here. Records made by the run's own process (inputs that crashed a worker,
a Ray run's outcomes) are committed in small batches (every ``COMMIT_EVERY`` records or
``COMMIT_SECONDS``), or at once while workers record too. A run killed outright loses at most
that much bookkeeping, and those inputs are simply done again on resume — their outputs are
replaced atomically, so every output still exists exactly once. An exclusive lock file keeps
two runs from sharing one journal, and the writers of one run take turns at its transactions
through a second one (``CommitTurns``). Neither those files nor the database is ever opened
through a symbolic link: a link planted there could make gpupipe write outside OUT.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import digests
from .engine.results import FAILED, OK, REJECTED, FileOutcome, json_value
from .engine.writer import forget_parent_only, parent_only
from .errors import (OutputConflict, OutputExists, StageStalled, StoppedBySystemFailure, SystemFailure,
                     UsageError, WorkerCrashed)
from .records import dataclass

log = logging.getLogger("gpupipe")

# Failures caused by the run, not the input (a full disk, a hung mount): a resume retries
# them without --retry-failed, since the input itself may well be fine.
# A worker's crash may be the OOM killer's doing as well as the input's: worth another try.
# A file kept at an output path (output_exists) may have been moved away since.
NOT_THE_INPUTS_FAULT = {StoppedBySystemFailure.error_class, StageStalled.error_class, WorkerCrashed.error_class,
                        OutputExists.error_class}

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS inputs (
    path BLOB PRIMARY KEY,            -- os.fsencode of the absolute path
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    spec_hash TEXT NOT NULL,
    state TEXT NOT NULL,              -- ok | failed | rejected
    attempts INTEGER NOT NULL DEFAULT 0,
    error_class TEXT,
    message TEXT,                     -- failed: what went wrong; rejected: the reason
    updated REAL NOT NULL,
    tags TEXT                         -- what user ops said of it (JSON), since version 2
);
CREATE INDEX IF NOT EXISTS inputs_by_state ON inputs (state, error_class);
CREATE TABLE IF NOT EXISTS outputs (
    path BLOB PRIMARY KEY,            -- os.fsencode of the absolute path
    input_path BLOB NOT NULL,
    size INTEGER NOT NULL,
    checksum TEXT NOT NULL            -- blake2b, 16 bytes, hex
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
# Version 0 stored paths as TEXT, as the caller spelled them: rewrite them as version 1's keys.
MIGRATE_FROM_0 = """
BEGIN IMMEDIATE;
DROP INDEX IF EXISTS inputs_by_state;
DROP INDEX IF EXISTS outputs_by_input;
ALTER TABLE inputs RENAME TO inputs_v0;
ALTER TABLE outputs RENAME TO outputs_v0;
""" + SCHEMA + """
INSERT OR REPLACE INTO inputs (path, size, mtime, spec_hash, state, attempts, error_class, message, updated)
    SELECT gpupipe_key(path), size, mtime, spec_hash, state, attempts, error_class, message, updated
    FROM inputs_v0 ORDER BY updated;
INSERT OR REPLACE INTO outputs SELECT gpupipe_key(path), gpupipe_key(input_path), size, checksum FROM outputs_v0;
DROP TABLE inputs_v0;
DROP TABLE outputs_v0;
PRAGMA user_version = 2;
COMMIT;
"""
# Version 1 had no tags.
MIGRATE_FROM_1 = """
BEGIN IMMEDIATE;
ALTER TABLE inputs ADD COLUMN tags TEXT;
PRAGMA user_version = 2;
COMMIT;
"""
COMMIT_EVERY = 256
COMMIT_SECONDS = 1.0
BUSY_SECONDS = 60.0             # how long a writer waits for another one's transaction (workers record chunks)
QUERY_KEYS = 500                # paths per IN (...) query: well under SQLite's 32 766 parameters
RESERVE_BYTES = 2**20                 # room for the journal's last commits (256 records take about 200 KB)
SQLITE_MAGIC = b"SQLite format 3\x00"
SIDE_FILES = ("-wal", "-shm")                 # SQLite opens these next to the database itself
WHAT_TO_DO = "move it aside, pass --journal another path, or use --force to set it aside and start a new one"


def default_path(output: str | Path) -> Path:
    return Path(output) / ".gpupipe" / "journal.sqlite"


def path_key(path: str | os.PathLike) -> bytes:
    """The journal's key for a file: the bytes of its absolute path (links not resolved)."""
    return os.fsencode(os.path.abspath(path))


def path_keys(paths: Iterable[str]) -> list[bytes]:
    """``path_key`` of each. A run's paths are a few folders' files, so each folder's key is made
    once, and a file's key is its folder's and its name's: a name from a listing needs no
    normalising (it is neither "", "." nor ".."). 0.4 µs a path instead of 2."""
    folders: dict[str, bytes] = {}
    keys = []
    for path in paths:
        folder, slash, name = path.rpartition("/")
        if name in ("", ".", "..") or path.startswith("//") or (slash and not folder):
            keys.append(path_key(path))         # "/x", "//host/x", "a/..": as path_key spells them
            continue
        prefix = folders.get(folder)
        if prefix is None:
            prefix = path_key(folder or ".")
            prefix = folders[folder] = prefix if prefix.endswith(b"/") else prefix + b"/"
        keys.append(prefix + name.encode("utf-8", "surrogateescape"))      # os.fsencode
    return keys


def display(key: bytes | str) -> str:
    """A stored path for people: undecodable bytes shown as \\xNN escapes (version 0 stored text)."""
    return key if isinstance(key, str) else key.decode("utf-8", "backslashreplace")


CHECKSUM_BYTES = 16      # the checksum the journal keeps of an output: blake2b of its bytes, this long


def checksum(data: bytes) -> str:
    """The checksum the journal keeps for an output, of its bytes (made in the workers, per output)."""
    return digests.blake2b(data, digest_size=CHECKSUM_BYTES).hexdigest()


def file_checksum(path: str | bytes) -> str:
    """``checksum`` of a file's contents, read a block at a time."""
    digest = digests.blake2b(digest_size=CHECKSUM_BYTES)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tags(tags: dict[str, Any]) -> str | None:
    """Tags as JSON text (what JSON cannot hold, as its repr), None when there are none."""
    if not tags:
        return None
    return _text(json.dumps(tags, ensure_ascii=False, sort_keys=True, default=json_value))


def _text(message: str | None) -> str | None:
    """A message as SQLite text (UTF-8): a non-UTF-8 file name in it shown as \\xNN escapes."""
    if message is None:
        return None
    try:
        return message.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return message.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class Decision:
    """The journal's word on one input found: skip it (and why) or do it."""

    skip: bool
    reason: str = ""
    failed_before: str | None = None     # the error class, when skipped because it failed before


class Corrupt(Exception):
    """The journal file is there but unusable as a journal (says why); --force sets it aside."""


class Journal:
    def __init__(self, path: str | Path, spec_hash: str, *, force: bool = False, retry_failed: bool = False,
                 verify: bool = False) -> None:
        self.path = Path(path)
        self.spec_hash = spec_hash
        self.force = force
        self.retry_failed = retry_failed
        self.verify = verify
        self.notes: list[str] = []            # what the user must know about the journal itself
        self._failure: str | None = None      # set once writing failed: the journal then records nothing
        self._closed = False                   # close() ran: nothing may touch the connection again
        self._skipped = 0                     # inputs this run skipped: the next one skips them too
        self._resumable_committed = 0         # inputs this run recorded, committed, that the next one skips
        self._batch: list[FileOutcome] = []   # recorded since the last commit
        self._writing = False                 # a write transaction is open (begun by the batch's first record)
        self._shared = False                  # worker processes record too (chunk_recorder): commit at once
        self._mutex = threading.Lock()
        self._last_commit = time.monotonic()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SystemFailure(f"cannot create the journal's folder {self.path.parent}: {exc.strerror}; pass "
                                "--journal another path, or --no-journal") from None
        self._lock_fd = parent_only(_open_lock(self.path.with_name(self.path.name + ".lock"), self.path))
        try:
            self._db = self._open_database()
        except BaseException:
            forget_parent_only(self._lock_fd)
            os.close(self._lock_fd)
            raise
        self._reserve = Reserve(self.path.with_name(self.path.name + ".reserve"))
        self._turns = CommitTurns(self.path)  # taken while worker processes record too (chunk_recorder)

    @classmethod
    def for_output(cls, output: str | Path, spec_hash: str, **options: Any) -> "Journal":
        """The journal in its default place, OUT/.gpupipe: that folder must be a real one, since a
        link there could make gpupipe write outside OUT."""
        path = default_path(output)
        if path.parent.is_symlink():
            raise UsageError(f"{path.parent} is a symbolic link: gpupipe does not write its journal through "
                             "links; remove it, or pass --journal another path")
        return cls(path, spec_hash, **options)

    # ------------------------------------------------------------------ opening

    def _open_database(self) -> sqlite3.Connection:
        """Connect, checked and at the current schema; a corrupt journal is refused, or with --force set aside."""
        for suffix in ("", *SIDE_FILES):
            _refuse_non_regular(Path(f"{self.path}{suffix}"))
        try:
            try:
                db = _connect_checked(self.path)
            except Corrupt as exc:
                if not self.force:
                    raise UsageError(f"the journal {self.path} {exc}: {WHAT_TO_DO}") from None
                self._set_aside(str(exc))
                db = _connect_checked(self.path)
            try:
                # One connection shared by the scan thread (look-ups) and the collector (records).
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                # Committed at once: a disk that cannot take a commit fails here, before any work.
                self._run_id = db.execute("INSERT INTO runs (started, spec_hash) VALUES (?, ?)",
                                          (time.time(), self.spec_hash)).lastrowid
                # A journal without inputs (a first run) has nothing to decide or forget: no queries.
                self._empty = db.execute("SELECT 1 FROM inputs LIMIT 1").fetchone() is None
            except BaseException:
                db.close()
                raise
        except (sqlite3.Error, OSError, Corrupt) as exc:
            raise SystemFailure(f"cannot open the journal {self.path}: {exc}; free space there, pass --journal "
                                "another path, or --no-journal") from None
        return db

    def _set_aside(self, problem: str) -> None:
        aside = f"{self.path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
        for suffix in ("", *SIDE_FILES):
            if os.path.lexists(f"{self.path}{suffix}"):
                os.rename(f"{self.path}{suffix}", f"{aside}{suffix}")
        note = f"the journal {self.path} {problem}: moved aside to {aside} (--force); starting a new journal"
        log.warning("%s", note)
        self.notes.append(note)

    # ------------------------------------------------------------------ decisions

    def decide(self, path: str, size: int, mtime: float) -> Decision:
        """Whether an input found by the scan can be skipped, and why."""
        return self.decide_many([(path, size, mtime)])[0]

    def decide_many(self, found: list[tuple[str, int, float]]) -> list[Decision]:
        """``decide`` for several inputs (path, size, mtime) at once: one query per few hundred."""
        if self._closed:
            raise SystemFailure(f"the journal {self.path} was closed: the run is over")
        if self.force or self._empty:
            return [Decision(False)] * len(found)
        keys = path_keys([path for path, _, _ in found])
        rows: dict[bytes, tuple] = {}
        outputs: dict[bytes, list[tuple]] = {}
        with self._mutex:
            for start in range(0, len(keys), QUERY_KEYS):
                part = keys[start:start + QUERY_KEYS]
                marks = ",".join("?" * len(part))
                for row in self._read("SELECT path, size, mtime, spec_hash, state, error_class FROM inputs "
                                      f"WHERE path IN ({marks})", tuple(part)):
                    rows[bytes(row[0])] = row[1:]
                for row in self._read(f"SELECT input_path, path, size, checksum FROM outputs WHERE input_path IN "
                                      f"({marks})", tuple(part)):
                    outputs.setdefault(bytes(row[0]), []).append(row[1:])
        decisions = []
        skipped = 0
        for key, (_, size, mtime) in zip(keys, found):
            decision = self._decision(rows.get(key), size, mtime, outputs.get(key, []))
            skipped += decision.skip
            decisions.append(decision)
        with self._mutex:
            self._skipped += skipped
        return decisions

    def _decision(self, row: tuple | None, size: int, mtime: float, outputs: list[tuple]) -> Decision:
        if row is None:
            return Decision(False)
        old_size, old_mtime, old_spec, state, error_class = row
        if old_size != size or old_mtime != mtime or old_spec != self.spec_hash:
            return Decision(False)
        if state == REJECTED:
            return Decision(True, "rejected before by a user op, unchanged")
        if state == FAILED:
            if self.retry_failed or error_class in NOT_THE_INPUTS_FAULT:
                return Decision(False)
            return Decision(True, f"failed before ({error_class}), unchanged; --retry-failed tries again",
                            failed_before=error_class)
        if not all(self._intact(*output) for output in outputs):
            return Decision(False)
        return Decision(True, "done before, unchanged")

    def _intact(self, path: bytes, size: int, checksum: str) -> bool:
        """An output is still as written: a regular file of the same size (and, with verify, checksum)."""
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_size != size:
                return False
            return not self.verify or file_checksum(path) == checksum
        except OSError:
            return False

    def wrote(self, output_path: str) -> bool:
        """Whether this journal recorded ``output_path`` as an output gpupipe wrote: a file there
        may be replaced by a new run; any other file at an output path is the user's and is kept."""
        with self._mutex:
            return bool(self._read("SELECT 1 FROM outputs WHERE path = ?", (path_key(output_path),)))

    def recorded_outputs(self, output: str | Path) -> "RecordedOutputs":
        """The output paths (relative to ``output``) this journal recorded, as a container that
        a worker process forked from this one asks with a read-only connection of its own."""
        return RecordedOutputs(self.path, Path(output))

    @property
    def fork_guard(self) -> threading.Lock:
        """Held while the run forks a worker: no thread is then inside SQLite (a child must never
        inherit one of its locks held)."""
        return self._mutex

    def will_skip(self) -> int:
        """How many inputs of this run the same command will skip next time: those it skipped and
        those whose outcome is committed (records lost with an uncommitted batch are done again)."""
        with self._mutex:
            return self._skipped + self._resumable_committed

    # ------------------------------------------------------------------ records

    def record(self, outcome: FileOutcome) -> None:
        """Remember a finished input (ok or failed); cancelled and skipped inputs leave no trace.
        Raises SystemFailure if the journal cannot be written (a full disk): it then records nothing more."""
        self.record_many([outcome])

    def record_many(self, outcomes: list[FileOutcome]) -> None:
        """``record`` for several inputs at once (a chunk's): three statements, whatever their number."""
        kept = recordable(outcomes)
        if not kept:
            return
        with self._mutex:
            if self._failure or self._closed:
                return
            with self._turns.taken() if self._shared else contextlib.nullcontext():
                self._write(self._store, kept)
                self._batch.extend(kept)
                if (self._shared or len(self._batch) >= COMMIT_EVERY
                        or time.monotonic() - self._last_commit >= COMMIT_SECONDS):
                    self._write(self._commit)

    def chunk_recorder(self) -> "ChunkRecorder":
        """A recorder for the worker processes forked from this process: each records the chunks it
        finishes in transactions of its own. From now on this process commits its own records at
        once, so it never holds up theirs."""
        with self._mutex:
            self._shared = True
            if self._batch and not self._failure and not self._closed:
                self._write(self._commit)
        return ChunkRecorder(self.path, self.spec_hash, forget_earlier=not self._empty, reserve=self._reserve.path)

    def recorded_elsewhere(self, outcomes: list[FileOutcome], went_well: int = 0) -> None:
        """A worker committed these outcomes (ChunkRecorder), and ``went_well`` more inputs that
        went well (given as a count): the next run skips those it may."""
        with self._mutex:
            self._resumable_committed += sum(map(self._next_run_skips, recordable(outcomes)))
            if not self.force:
                self._resumable_committed += went_well

    def _store(self, outcomes: list[FileOutcome]) -> None:
        self._begin()
        store_outcomes(self._db, outcomes, self.spec_hash, forget_earlier=not self._empty)

    def _begin(self) -> None:
        """Open the batch's write transaction, if it is not open yet. Taken as a write at once
        (IMMEDIATE): a deferred one that read first could not become a write once a worker had
        committed since its read."""
        if not self._writing:
            self._db.execute("BEGIN IMMEDIATE")
            self._writing = True

    def _next_run_skips(self, outcome: FileOutcome) -> bool:
        if self.force:
            return False          # the same command (with --force) redoes everything
        if outcome.status in (OK, REJECTED):
            return True
        if outcome.error_class == OutputConflict.error_class:
            return False          # found before the journal is asked: it fails again
        return not self.retry_failed and outcome.error_class not in NOT_THE_INPUTS_FAULT

    def commit(self) -> None:
        """Commit what is recorded (the end of a run). Raises SystemFailure if it cannot be written."""
        with self._mutex:
            if not self._failure and not self._closed:
                self._write(self._commit)

    def _commit(self) -> None:
        if self._writing:
            self._db.execute("COMMIT")
            self._writing = False
        self._resumable_committed += sum(map(self._next_run_skips, self._batch))
        self._batch.clear()
        self._last_commit = time.monotonic()

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Record the run's summary and release the journal. Raises SystemFailure if that cannot be
        written (every input's outcome committed before stays)."""
        # Under the mutex, and closed for good: a thread a stall left behind may still come back
        # to decide or record, and SQLite must never see a closed connection used (it crashes).
        with self._mutex:
            try:
                if not self._failure and not self._closed:
                    self._write(self._finish_run, summary)
            finally:
                if not self._closed:
                    self._closed = True
                    try:
                        self._db.close()
                    except sqlite3.Error:
                        pass          # what is committed is in the database or its WAL either way
                    self._reserve.release()
                    self._turns.close()
                    forget_parent_only(self._lock_fd)
                    os.close(self._lock_fd)

    def _finish_run(self, summary: dict[str, Any] | None) -> None:
        self._begin()
        self._db.execute("UPDATE runs SET finished = ?, summary = ? WHERE id = ?",
                         (time.time(), json.dumps(summary) if summary else None, self._run_id))
        self._commit()

    # ------------------------------------------------------------------ SQLite errors

    def _read(self, sql: str, args: tuple) -> list[tuple]:
        if self._closed:
            raise SystemFailure(f"the journal {self.path} was closed: the run is over")
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise SystemFailure(f"cannot read the journal {self.path}: {exc}") from None

    def _write(self, step, *args) -> None:
        """Run one write step. When the disk is full, give up the reserve and do the open batch
        again; when that fails too (or for any other error) give up the batch and stop recording:
        what was committed stays, and a resume does the rest again."""
        try:
            step(*args)
        except sqlite3.Error as exc:
            if not (_disk_full(exc) and self._reserve.release()):
                self._give_up(exc)
            try:
                self._rollback()
                if self._batch:
                    self._store(self._batch)
                step(*args)
            except sqlite3.Error as again:
                self._give_up(again)

    def _rollback(self) -> None:
        self._writing = False
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass                              # SQLite may have rolled back already (or no transaction was open)

    def _give_up(self, exc: sqlite3.Error) -> None:
        self._failure = str(exc)
        self._batch.clear()
        self._rollback()
        raise SystemFailure(f"cannot record progress in the journal {self.path}: {exc}") from None


def recordable(outcomes: Iterable[FileOutcome]) -> list[FileOutcome]:
    """The outcomes a journal keeps: finished inputs (ok, failed, rejected) as the scan saw them;
    cancelled and skipped ones leave no trace."""
    return [o for o in outcomes if o.status in (OK, FAILED, REJECTED) and o.mtime is not None]


def store_outcomes(db: sqlite3.Connection, outcomes: list[FileOutcome], spec_hash: str, *,
                   forget_earlier: bool) -> None:
    """Write the rows of ``outcomes`` (recordable ones) in the open transaction: each input's row,
    and its outputs' in place of those an earlier run recorded (``forget_earlier``: the journal
    held inputs when the run began)."""
    now = time.time()
    keys = path_keys([outcome.path for outcome in outcomes])
    db.executemany(
        "INSERT INTO inputs (path, size, mtime, spec_hash, state, attempts, error_class, message, updated, "
        "tags) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET size = excluded.size, "
        "mtime = excluded.mtime, spec_hash = excluded.spec_hash, state = excluded.state, "
        "attempts = inputs.attempts + 1, error_class = excluded.error_class, message = excluded.message, "
        "updated = excluded.updated, tags = excluded.tags",
        [(key, o.size, o.mtime, spec_hash, o.status, o.error_class, _text(o.message), now,
          _tags(o.tags)) for key, o in zip(keys, outcomes)])
    if forget_earlier:          # a new journal has no outputs of earlier runs to forget
        db.executemany("DELETE FROM outputs WHERE input_path = ?", [(key,) for key in keys])
    output_keys = path_keys([output for o in outcomes for output in o.outputs])     # one folder cache
    rows, start = [], 0
    for key, o in zip(keys, outcomes):
        end = start + len(o.outputs)
        rows += [(output, key, size, checksum) for output, size, checksum
                 in zip(output_keys[start:end], o.output_sizes, o.output_checksums)]
        start = end
    db.executemany("INSERT OR REPLACE INTO outputs (path, input_path, size, checksum) VALUES (?, ?, ?, ?)", rows)


class ChunkRecorder:
    """A worker process's way into the run's journal: ``record`` commits the outcomes of a chunk
    whose files are on disk in one transaction, on a connection of its own (opened on first use,
    in the process that records; WAL lets it write beside the run's look-ups). A full disk gives
    up the journal's reserve and tries once more. Raises SystemFailure when it cannot record: the
    run then stops, and a resume does those inputs again."""

    def __init__(self, path: Path, spec_hash: str, *, forget_earlier: bool, reserve: Path) -> None:
        self.path, self.spec_hash, self.forget_earlier, self.reserve = path, spec_hash, forget_earlier, reserve
        self.turns = CommitTurns(path)
        self._db: sqlite3.Connection | None = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {**vars(self), "_db": None, "_pid": -1}      # a connection never travels

    def record(self, outcomes: list[FileOutcome]) -> None:
        kept = recordable(outcomes)
        if not kept:
            return
        try:
            try:
                self._transaction(kept)
            except sqlite3.Error as exc:
                self._rollback()
                if not (_disk_full(exc) and _remove_reserve(self.reserve)):
                    raise
                self._transaction(kept)
        except sqlite3.Error as exc:
            self._rollback()
            raise SystemFailure(f"cannot record progress in the journal {self.path}: {exc}") from None

    def _transaction(self, outcomes: list[FileOutcome]) -> None:
        db = self._connection()
        with self.turns.taken():
            db.execute("BEGIN IMMEDIATE")
            store_outcomes(db, outcomes, self.spec_hash, forget_earlier=self.forget_earlier)
            db.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():         # never a connection another process opened
            try:
                _refuse_non_regular(self.path)     # swapped for a link since the run opened it
            except UsageError as exc:
                raise SystemFailure(f"cannot record progress in the journal: {exc}") from None
            self._db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._pid = os.getpid()
        return self._db

    def _rollback(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")


class CommitTurns:
    """The writers of one journal (a run's worker processes, and its own process while they record)
    take turns at their transactions through an exclusive flock on ``<journal>.turns``: a writer
    whose turn it is not sleeps in the kernel until the turn is free. SQLite alone makes it poll,
    sleeping up to 100 ms between looks while the lock it waits for may long be free (2-core VM,
    chunks of 256, benchmarks/journal_writers.py: with 2 writers a commit's worst wait 106-111 ms,
    taking turns 6-20 ms; 32 writers recorded 33 000-34 000 inputs/s, taking turns 48 000-70 000).
    The kernel releases a turn whose holder dies, so a worker killed in a commit holds nobody up.
    Where the turns file cannot be opened or locked, writers go without (SQLite still keeps them
    apart)."""

    def __init__(self, journal: Path) -> None:
        self.path = journal.with_name(journal.name + ".turns")
        self._fd: int | None = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {**vars(self), "_fd": None, "_pid": -1}      # a descriptor never travels

    @contextlib.contextmanager
    def taken(self) -> Iterator[None]:
        fd = self._open()
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:                        # a filesystem without flock: SQLite's waits alone
            fd = None
        try:
            yield
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _open(self) -> int | None:
        """This process's own descriptor (a forked worker opens one: a shared one would share the lock)."""
        if self._pid != os.getpid():
            self._fd, self._pid = None, os.getpid()
            with contextlib.suppress(OSError, UsageError):
                self._fd = _open_regular(self.path)
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


def _disk_full(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed for want of room (or an I/O error a full disk gives): the reserve may help."""
    return getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_FULL", "SQLITE_IOERR"))


def _remove_reserve(path: Path) -> bool:
    """Give the journal's reserve (Reserve) back to a full disk, from any process; whether it was there."""
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


class RecordedOutputs:
    """``path in recorded``: whether the journal at ``journal`` recorded writing OUT/path. Opens a
    read-only connection on first use, in the process that asks (a worker): the writers ask only
    when a file is in the way. Sees what the journal committed, which is all an earlier run wrote."""

    def __init__(self, journal: Path, output: Path) -> None:
        self._journal, self._output = journal, output
        self._db: sqlite3.Connection | None = None
        self._pid = -1

    def __contains__(self, path: object) -> bool:
        if self._pid != os.getpid():         # never a connection another process opened
            self._db = sqlite3.connect(f"{self._journal.absolute().as_uri()}?mode=ro", uri=True,
                                       check_same_thread=False)
            self._pid = os.getpid()
        try:
            return self._db.execute("SELECT 1 FROM outputs WHERE path = ?",
                                    (path_key(self._output / str(path)),)).fetchone() is not None
        except sqlite3.Error as exc:
            raise SystemFailure(f"cannot read the journal {self._journal}: {exc}") from None


class Reserve:
    """Room for the journal on its disk, held by a file and given up when the disk is full, so
    the journal can still commit what the run did: a disk filled by the outputs must not lose
    the record of outputs that were written. Best effort: no room, no reserve. Like the lock
    and SQLite's -wal and -shm files, the file beside the journal is the journal's own (a killed
    run leaves it; the next one, holding the lock, takes it over)."""

    def __init__(self, path: Path, size: int = RESERVE_BYTES) -> None:
        self.path = path
        self.held = self._take(size)

    def _take(self, size: int) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError:
            return False
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False                  # not ours to fill, nor to remove
            os.posix_fallocate(fd, 0, size)
            return True
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            return False
        finally:
            os.close(fd)

    def release(self) -> bool:
        """Give the room back to the disk; whether there was any to give."""
        if not self.held:
            return False
        self.held = False
        return _remove_reserve(self.path)


# ---------------------------------------------------------------------- opening safely

def _refuse_non_regular(path: Path) -> None:
    """A journal file must be a regular file or absent: never a link, a folder, a FIFO or a device."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        return
    kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
            else "not a regular file")
    raise UsageError(f"{path} is {kind}, not a journal gpupipe wrote: gpupipe does not open it; remove it, "
                     "or pass --journal another path")


def _open_regular(path: Path, flags: int = 0) -> int:
    """Open (or create) ``path`` for reading and writing, only as a regular file, never through a
    link: UsageError for anything else (a link, a folder, a FIFO, one swapped in since the look),
    OSError where it cannot be opened."""
    _refuse_non_regular(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | flags, 0o644)
    try:
        _refuse_non_regular_fd(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_lock(lock_path: Path, journal: Path) -> int:
    """Open and lock the journal's lock file, never through a link; write our pid in it."""
    try:
        fd = _open_regular(lock_path, os.O_NONBLOCK)
    except OSError as exc:
        raise SystemFailure(f"cannot open the journal's lock file {lock_path}: {exc.strerror}; pass --journal "
                            "another path, or --no-journal") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise UsageError(f"the journal {journal} is in use by {holder}: another gpupipe run is writing to "
                             "this output; wait for it, or use another output or --journal") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"gpupipe pid {os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise SystemFailure(f"cannot write the journal's lock file {lock_path}: {exc.strerror}; free space "
                            "there, pass --journal another path, or --no-journal") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_non_regular_fd(fd: int, path: Path) -> None:
    if not stat.S_ISREG(os.fstat(fd).st_mode):          # swapped in since the lstat
        raise UsageError(f"{path} is not a regular file: gpupipe does not open it; remove it, or pass "
                         "--journal another path")


def _connect_checked(path: Path) -> sqlite3.Connection:
    """Connect to the journal at the current schema, or raise Corrupt saying what is wrong with it."""
    _check_header(path)
    db = sqlite3.connect(path, timeout=BUSY_SECONDS, check_same_thread=False, isolation_level=None)
    try:
        _check_database(db)
        _bring_schema_up_to_date(db)
    except sqlite3.DatabaseError as exc:
        db.close()
        if getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
            raise Corrupt(f"is damaged ({exc})") from None
        raise
    except BaseException:
        db.close()
        raise
    return db


def _check_header(path: Path) -> None:
    """An existing, non-empty journal must be readable and start as an SQLite database does."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise Corrupt(f"cannot be read ({exc.strerror})") from None
    try:
        head = os.read(fd, len(SQLITE_MAGIC))
    except OSError as exc:
        raise Corrupt(f"cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if head and head != SQLITE_MAGIC:
        raise Corrupt("is not an SQLite database (its first bytes are not SQLite's)")


def _check_database(db: sqlite3.Connection) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise Corrupt(f"was written by a newer gpupipe (journal schema {version}; this one knows up to "
                      f"{SCHEMA_VERSION}): use that gpupipe")
    problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        raise Corrupt(f"is damaged ({'; '.join(problems)})")


def _bring_schema_up_to_date(db: sqlite3.Connection) -> None:
    if db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "inputs" in tables:
        db.create_function("gpupipe_key", 1, path_key, deterministic=True)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        try:
            db.executescript(MIGRATE_FROM_1 if version == 1 else MIGRATE_FROM_0)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    else:
        db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")


# ---------------------------------------------------------------------- reading

@contextlib.contextmanager
def read_only(path: str | Path) -> Iterator["JournalReader"]:
    """The journal at ``path`` opened read-only, checked as a run checks it (never through a link,
    never a file that is not SQLite's); anything wrong with it, then or while it is read, is a
    UsageError that says so."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no journal at {path} (run gpupipe run with this output first, or pass --journal)")
    for suffix in ("", *SIDE_FILES):
        _refuse_non_regular(Path(f"{path}{suffix}"))
    try:
        _check_header(path)
        # As a URI of the absolute path: a '?' or '#' in a folder's name stays part of the name.
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except (Corrupt, sqlite3.Error) as exc:
        raise UsageError(f"the journal {path} {exc}") from None
    try:
        _check_database(db)
        db.execute("BEGIN")         # one snapshot: the counts and the rows agree while a run writes
        yield JournalReader(db)
    except Corrupt as exc:
        raise UsageError(f"the journal {path} {exc}") from None
    except sqlite3.Error as exc:
        raise UsageError(f"the journal {path} cannot be read: {exc}") from None
    finally:
        db.close()


class JournalReader:
    """What a journal records, for reports: totals, and generators over rows that hold one row at
    a time, so a journal of millions of inputs is read in bounded memory. Paths come as stored
    (bytes; text in a version 0 journal): ``display`` shows them, ``os.fsdecode`` opens them."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def inputs_by_state(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT state, COUNT(*) FROM inputs GROUP BY state").fetchall())

    def output_totals(self) -> tuple[int, int]:
        """How many outputs, and their bytes."""
        return self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outputs").fetchone()

    def failures(self, examples: int) -> Iterator[tuple[str, int, list[tuple[bytes | str, str | None]]]]:
        """(error class, count, the first ``examples`` (path, message) by path), the commonest class first."""
        counts = self._db.execute("SELECT error_class, COUNT(*) FROM inputs WHERE state = 'failed' "
                                  "GROUP BY error_class ORDER BY COUNT(*) DESC").fetchall()
        for error_class, count in counts:
            rows = self._db.execute("SELECT path, message FROM inputs WHERE state = 'failed' AND error_class IS ? "
                                    "ORDER BY path LIMIT ?", (error_class, examples)).fetchall()
            yield error_class, count, rows

    def done_times(self) -> Iterator[float]:
        """When each input done was last recorded (unix time), in no particular order."""
        for (updated,) in self._db.execute("SELECT updated FROM inputs WHERE state = 'ok'"):
            yield updated

    def done_span(self) -> tuple[float, float] | None:
        """The first and last of ``done_times``; None when no input is done."""
        first, last = self._db.execute("SELECT MIN(updated), MAX(updated) FROM inputs WHERE state = 'ok'").fetchone()
        return None if first is None else (first, last)

    def outputs(self) -> Iterator[tuple[bytes | str, int]]:
        """(path, size) of every output, in the order they were recorded."""
        yield from self._db.execute("SELECT path, size FROM outputs ORDER BY rowid")

    def run_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def runs(self, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` runs, newest first; ``finished`` is None for a run that was killed."""
        return [_run(*row) for row in self._db.execute("SELECT started, finished, spec_hash, summary FROM runs "
                                                       "ORDER BY id DESC LIMIT ?", (limit,))]

    def last_finished_run(self) -> dict[str, Any] | None:
        """The newest run that finished and recorded its summary."""
        row = self._db.execute("SELECT started, finished, spec_hash, summary FROM runs WHERE finished IS NOT NULL "
                               "AND summary IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else _run(*row)


def _run(started: float, finished: float | None, spec_hash: str, summary: str | None) -> dict[str, Any]:
    return {"started": started, "finished": finished, "spec_hash": spec_hash, "summary": _summary(summary)}


def _summary(text: str | None) -> dict[str, Any] | None:
    """A run's stored summary; None when there is none, or it is not a JSON object."""
    try:
        summary = json.loads(text) if text else None
    except ValueError:
        return None
    return summary if isinstance(summary, dict) else None


def report(path: str | Path, examples: int = 5) -> dict[str, Any]:
    """What a journal knows: counts by state, failures by error class, the last runs."""
    with read_only(path) as journal:
        failures = {error_class: {"count": count, "examples": [{"path": display(p), "message": m} for p, m in rows]}
                    for error_class, count, rows in journal.failures(examples)}
        outputs, out_bytes = journal.output_totals()
        return {"journal": str(Path(path)), "inputs": journal.inputs_by_state(), "outputs": outputs,
                "output_bytes": out_bytes, "failures": failures, "runs": journal.runs(5)}
