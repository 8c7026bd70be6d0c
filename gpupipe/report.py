"""The end of a run: a summary for people and a JSON report for machines."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .engine.results import FileOutcome, RunSummary


def print_summary(summary: RunSummary, console: Console) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("backend", summary.backend)
    table.add_row("processed", f"{summary.processed}  ({summary.outputs_written} outputs written)")
    table.add_row("failed", f"[red]{summary.failed}[/]" if summary.failed else "0")
    table.add_row("skipped", str(summary.skipped) + (
        f"  ([red]{summary.skipped_failed} failed before[/], still failed: --retry-failed tries them again)"
        if summary.skipped_failed else ""))
    if summary.cancelled:
        table.add_row("not processed", f"{summary.cancelled} (run stopped)")
    table.add_row("wall time", f"{summary.wall_seconds:.2f} s")
    table.add_row("throughput", f"{summary.images_per_second:.1f} images/s, {summary.megabytes_per_second:.1f} MB/s "
                                f"read, {summary.pixels_in / 1e6 / max(summary.wall_seconds, 1e-9):.1f} MP/s")
    console.print(table)
    for cls, count in sorted(summary.failures_by_class.items(), key=lambda kv: -kv[1]):
        console.print(f"[red]{escape(cls)}[/]: {count} file(s)", highlight=False)
        for example in summary.failure_examples[cls]:
            console.print(f"  {example}", highlight=False, markup=False)
        if count > len(summary.failure_examples[cls]):
            console.print(f"  … and {count - len(summary.failure_examples[cls])} more (see --report)")
    for note in summary.notes:
        console.print(f"[yellow]note[/]: {escape(note)}", highlight=False)
    for problem in summary.scan_problems[:5]:
        console.print(f"[yellow]scan problem[/]: {escape(problem)}", highlight=False)
    if summary.stop_reason:
        style = "yellow" if summary.interrupted else "red"
        console.print(f"[{style}]stopped early[/]: {escape(summary.stop_reason)}", highlight=False)


class ReportWriter:
    """Streams every outcome into a JSON report, so memory doesn't grow with the input set.

    Written to a temporary name and renamed at the end, like every output.
    """

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._file: TextIO = open(self._tmp, "w", encoding="utf-8")
        self._file.write("{\n")
        for key, value in header.items():
            self._file.write(f"  {json.dumps(key)}: {json.dumps(value)},\n")
        self._file.write('  "files": [')
        self._first = True

    def add(self, outcome: FileOutcome) -> None:
        self._file.write(("\n    " if self._first else ",\n    ") + json.dumps(outcome.to_dict()))
        self._first = False

    def close(self, summary: RunSummary) -> None:
        self._file.write(f"\n  ],\n  \"summary\": {json.dumps(summary.to_dict())}\n}}\n")
        self._file.close()
        os.replace(self._tmp, self.path)

    def abandon(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)
