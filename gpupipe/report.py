"""The end of a run: a summary for people and a JSON report for machines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .engine.results import FileOutcome, RunSummary
from .sidefiles import SideFile, printable

if TYPE_CHECKING:
    from rich.console import Console


def print_summary(summary: RunSummary, *, failures_only: bool = False) -> None:
    """The run for people, on stderr. ``failures_only`` (--quiet): just what went wrong, if anything.
    Lines naming paths are not wrapped, so a path can be copied or grepped whole."""
    if failures_only and not (summary.failures_by_class or summary.side_file_errors or summary.stop_reason):
        return                  # nothing to say: a quiet run that went well never loads rich
    from rich.console import Console
    from rich.markup import escape
    console = Console(stderr=True)
    if not failures_only:
        _print_counts(summary, console)
    for cls, count in sorted(summary.failures_by_class.items(), key=lambda kv: -kv[1]):
        console.print(f"[red]{escape(printable(cls))}[/]: {count} file(s)", highlight=False)
        for example in summary.failure_examples[cls]:
            console.print(f"  {printable(example)}", highlight=False, markup=False, soft_wrap=True)
        if count > len(summary.failure_examples[cls]):
            console.print(f"  … and {count - len(summary.failure_examples[cls])} more (see --report)")
    if not failures_only:
        for note in summary.notes:
            console.print(f"[yellow]note[/]: {escape(printable(note))}", highlight=False, soft_wrap=True)
        for problem in summary.scan_problems[:5]:
            console.print(f"[yellow]scan problem[/]: {escape(printable(problem))}", highlight=False,
                          soft_wrap=True)
    for problem in summary.side_file_errors:
        console.print(f"[red]error[/]: {escape(printable(problem))}", highlight=False, soft_wrap=True)
    if summary.stop_reason:
        style = "yellow" if summary.interrupted else "red"
        console.print(f"[{style}]stopped early[/]: {escape(printable(summary.stop_reason))}", highlight=False,
                      soft_wrap=True)


def _print_counts(summary: RunSummary, console: Console) -> None:
    from rich.markup import escape
    from rich.table import Table
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("backend", escape(summary.backend))
    table.add_row("processed", f"{summary.processed}  ({summary.outputs_written} outputs written)")
    table.add_row("failed", f"[red]{summary.failed}[/]" if summary.failed else "0")
    if summary.rejected:
        table.add_row("rejected", f"{summary.rejected} (by user ops: no output)")
    table.add_row("skipped", str(summary.skipped) + (
        f"  ([red]{summary.skipped_failed} failed before[/], still failed: --retry-failed tries them again)"
        if summary.skipped_failed else ""))
    if summary.cancelled:
        table.add_row("not processed", f"{summary.cancelled} (run stopped)")
    table.add_row("wall time", f"{summary.wall_seconds:.2f} s")
    table.add_row("throughput", f"{summary.images_per_second:.1f} images/s, {summary.megabytes_per_second:.1f} MB/s "
                                f"read, {summary.pixels_in / 1e6 / max(summary.wall_seconds, 1e-9):.1f} MP/s")
    console.print(table)


def aborted_summary(tally: RunSummary, backend: str) -> RunSummary:
    """``tally`` (a side file's own count of the outcomes it got) as the summary of a run aborted
    by a second Ctrl+C, whose engine never closed its own."""
    tally.backend, tally.interrupted = backend, True
    tally.stop_reason = "aborted (second interrupt): in-flight work dropped"
    tally.finish()
    return tally


class ReportWriter:
    """Streams every outcome into a JSON report, so memory doesn't grow with the input set.

    Opened before any work (a bad path is a UsageError then) through ``SideFile``: renamed into
    place at the end when the target is a regular file, written straight through to a FIFO, a
    device or a link, ``-`` for stdout. ``close`` raises SystemFailure when it could not be written.
    """

    def __init__(self, path: Path | str, header: dict[str, Any]) -> None:
        self._file = SideFile(path, "--report")
        self.path = self._file.path
        self._file.write("{\n")
        for key, value in header.items():
            self._file.write(f"  {json.dumps(key)}: {json.dumps(value)},\n")
        self._file.write('  "files": [')
        self._first = True
        self._tally = RunSummary()         # what was done so far, for a report written after an abort

    def add(self, outcome: FileOutcome) -> None:
        self._tally.record(outcome)
        self._file.write(("\n    " if self._first else ",\n    ") + json.dumps(outcome.to_dict()))
        self._first = False

    def close(self, summary: RunSummary) -> None:
        self._finish(summary.to_dict())

    def close_aborted(self, backend: str = "?") -> None:
        """Finish the report after a second Ctrl+C: the outcomes so far, marked as aborted."""
        self._finish(aborted_summary(self._tally, backend).to_dict(), aborted=True)

    def _finish(self, summary: dict[str, Any], aborted: bool = False) -> None:
        mark = '  "aborted": true,\n' if aborted else ""
        self._file.write(f"\n  ],\n{mark}  \"summary\": {json.dumps(summary)}\n}}\n")
        self._file.close()

    def abandon(self) -> None:
        self._file.abandon()
