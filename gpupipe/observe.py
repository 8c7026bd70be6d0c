"""Progress for people: a live bar on a terminal, plain periodic lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from .engine.results import RunSummary

if TYPE_CHECKING:
    from rich.progress import Progress


class ProgressDisplay:
    """Context manager fed ``RunSummary`` snapshots by the engine (``update``)."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False, plain_interval: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.console = None
        if not quiet:                 # a quiet run shows no progress and never loads rich
            from rich.console import Console
            self.console = Console(file=self.stream, stderr=stream is None)
        self.live = self.console is not None and self.console.is_terminal
        self.plain_interval = plain_interval
        self._last_plain = 0.0
        self._announced = False
        self._said_stopping = False
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> "ProgressDisplay":
        self._last_plain = time.monotonic()       # plain lines: the first after one interval
        if self.live:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskProgressColumn,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)
            self._progress = Progress(
                SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), TextColumn("{task.fields[failed]}"), console=self.console, transient=False)
            self._progress.start()
            self._task = self._progress.add_task("scanning", total=None, rate="", failed="")
        return self

    def update(self, summary: RunSummary) -> None:
        if self.quiet:
            return
        done, total = summary.done, summary.discovered + summary.scan_skipped
        rate = summary.images_per_second
        stopping = None
        if summary.interrupted and not summary.finished:
            stopping = (f"stopping — finishing {max(0, total - done)} in flight; Ctrl+C again to abort")
        if self._progress is not None:
            self._progress.update(
                self._task, completed=done, total=total if summary.scan_complete else None,
                description=stopping or ("processing" if summary.scan_complete else f"scanning ({total} found)"),
                rate=f"{rate:.1f} img/s", failed=f"[red]{summary.failed} failed" if summary.failed else "")
            return
        now = time.monotonic()
        if stopping and not self._said_stopping:
            self._said_stopping = True
            print(f"gpupipe: {stopping}", file=self.stream, flush=True)
        elif summary.scan_complete and not self._announced:
            self._announced = True
            self._last_plain = now
            print(f"gpupipe: {total} input(s) found, {done} done so far", file=self.stream, flush=True)
        elif now - self._last_plain >= self.plain_interval:
            self._last_plain = now
            eta = ""
            if summary.scan_complete and rate > 0:
                eta = f", ETA {_duration((total - done) / rate)}"
            of = f"/{total}" if summary.scan_complete else f" (of {total}+ found so far)"
            print(f"gpupipe: {done}{of} done, {summary.failed} failed, {rate:.1f} img/s{eta}",
                  file=self.stream, flush=True)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
