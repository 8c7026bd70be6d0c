"""``--report-html FILE``: one self-contained HTML page about a run, for people to look at.

Throughput over time, the time spent in each stage, the CPU of the run's process and of its
workers, the failures by class with their paths and messages, a contact sheet of a sample of
the outputs of each variant, and thumbnails of the failed inputs that can still be decoded.
No network: the charts are inline SVG and the pictures inline JPEG. What it keeps while the run
goes is bounded (per-second counts, a few samples, the first failures of each class), so a run
of millions of inputs costs it no more memory than one of a hundred.

``gpupipe report OUT --html FILE`` (``write_from_journal``) draws the same kind of page from the
journal, across runs: it streams the journal's rows and keeps only counters and samples, so its
memory is bounded whatever the journal's size.
"""

from __future__ import annotations

import base64
import collections
import html
import io
import os
import time
from pathlib import Path
from typing import Any, Iterable

from .engine.results import FAILED, OK, REJECTED, FileOutcome, RunSummary
from .journal import JournalReader, display, read_only
from .sidefiles import SideFile, printable

SAMPLES_PER_VARIANT = 12          # outputs shown per variant
FAILED_SHOWN = 12                 # failed inputs shown as pictures
FAILURES_LISTED = 100             # paths and messages listed per error class
THUMB = 160                       # pixels, the longer side of a picture in the page
MAX_BARS = 120                    # the throughput chart's bars: seconds grouped beyond that
STAGES = ("read", "decode", "process", "encode", "write")
SHEET_FOLDERS = 8                 # output folders shown in the journal's contact sheet
RUNS_LISTED = 10                  # the journal's last runs listed


class HtmlReport:
    def __init__(self, path: str | Path, variants: Iterable[str], max_pixels: int) -> None:
        self._file = SideFile(path, "--report-html")
        self.path = self._file.path
        self._variants = list(variants)
        self._max_pixels = max_pixels
        self._started = time.perf_counter()
        self._per_second: collections.Counter[int] = collections.Counter()
        self._stage_seconds: collections.Counter[str] = collections.Counter()
        self._failures: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
        self._samples: dict[int, list[str]] = collections.defaultdict(list)
        self._failed_inputs: list[tuple[str, str, str]] = []
        self._tally = RunSummary()          # what was done so far, for a page written after an abort

    def __call__(self, outcome: FileOutcome) -> None:
        self._tally.record(outcome)
        if outcome.status not in (OK, FAILED):
            return
        self._per_second[int(time.perf_counter() - self._started)] += 1
        self._stage_seconds.update(outcome.seconds)
        if outcome.status == OK:
            for index, output in enumerate(outcome.outputs):
                if len(self._samples[index]) < SAMPLES_PER_VARIANT:
                    self._samples[index].append(output)
            return
        cls = outcome.error_class or "error"
        if len(self._failures[cls]) < FAILURES_LISTED:
            self._failures[cls].append((outcome.path, outcome.message or ""))
        if len(self._failed_inputs) < FAILED_SHOWN:
            self._failed_inputs.append((outcome.path, cls, outcome.message or ""))

    def close(self, summary: RunSummary) -> None:
        """Raises SystemFailure when the page could not be written (a full disk)."""
        self._file.write(self.render(summary))
        self._file.close()

    def close_aborted(self, backend: str = "?") -> None:
        """The page after a second Ctrl+C: what was done so far."""
        from .report import aborted_summary
        self.close(aborted_summary(self._tally, backend))

    def abandon(self) -> None:
        self._file.abandon()

    # ------------------------------------------------------------------ the page

    def render(self, summary: RunSummary) -> str:
        parts = ["<h1>gpupipe run</h1>", _summary_table(_run_summary_rows(summary))]
        parts += ["<h2>Throughput</h2>", self._throughput_chart()]
        parts += ["<h2>Time per stage</h2><p>Seconds summed over inputs (a stage's share of the work).</p>",
                  _bars({s: self._stage_seconds.get(s, 0.0) for s in STAGES if s in self._stage_seconds}, "s")]
        if summary.cpu_seconds_by_stage:
            parts += ["<h2>CPU per stage</h2><p>CPU seconds of the scan, the coordination and the worker "
                      "processes.</p>", _bars(dict(summary.cpu_seconds_by_stage), "s")]
        parts += ["<h2>Failures</h2>", self._failure_tables(summary)]
        parts += ["<h2>Outputs</h2>", self._contact_sheet()]
        if self._failed_inputs:
            parts += ["<h2>Failed inputs</h2>", _failed_pictures(self._failed_inputs, self._max_pixels)]
        return _page("gpupipe run", parts)

    def _throughput_chart(self) -> str:
        if not self._per_second:
            return "<p>No input was finished.</p>"
        step, step_text = _bar_step(max(self._per_second))
        bars = _bar_counts(self._per_second.items(), 0, step)
        return (f"<p>Inputs finished per second, in steps of {step_text}.</p>"
                + _column_chart([count / step for count in bars], step_text, "inputs/s"))

    def _failure_tables(self, summary: RunSummary) -> str:
        classes = sorted(summary.failures_by_class.items(), key=lambda kv: -kv[1])
        return _failure_sections([(cls, count, self._failures.get(cls, [])) for cls, count in classes],
                                 " (see --report)")

    def _contact_sheet(self) -> str:
        if not self._samples:
            return "<p>No output was written.</p>"
        sections = []
        for index in sorted(self._samples):
            name = self._variants[index] if index < len(self._variants) and len(self._variants) > 1 else "outputs"
            cells = [_figure(_thumbnail_of_file(path, self._max_pixels), Path(path).name)
                     for path in self._samples[index]]
            sections.append(_sheet(name, cells))
        return "\n".join(sections)


# ---------------------------------------------------------------------- the journal's page

def write_from_journal(journal_path: str | Path, html_path: str | Path, *, max_pixels: int) -> None:
    """``gpupipe report OUT --html FILE``: the page about what the journal at ``journal_path``
    records across runs, written as ``--report-html`` is (``-``: stdout). Raises UsageError for a
    journal that cannot be read or a page that cannot be opened, SystemFailure when it cannot be
    written (a full disk)."""
    page = SideFile(html_path, "--html")
    try:
        with read_only(journal_path) as journal:
            text = _journal_page(journal, Path(journal_path), max_pixels)
    except BaseException:
        page.abandon()
        raise
    page.write(text)
    page.close()


def _journal_page(journal: JournalReader, path: Path, max_pixels: int) -> str:
    failures = [(cls or "error", count, rows) for cls, count, rows in journal.failures(FAILURES_LISTED)]
    failed_inputs = [(os.fsdecode(key), cls, message or "") for cls, _, rows in failures
                     for key, message in rows][:FAILED_SHOWN]
    runs = journal.run_count()
    parts = ["<h1>gpupipe journal</h1>", _summary_table(_journal_summary_rows(journal, path, runs))]
    parts += ["<h2>Runs</h2>", _runs_table(journal.runs(RUNS_LISTED), runs)]
    parts += ["<h2>Inputs done over time</h2>", _done_over_time(journal)]
    parts += ["<h2>CPU per stage</h2>", _stage_timings(journal.last_finished_run())]
    parts += ["<h2>Failures</h2>", _failure_sections(
        [(cls, count, [(display(key), message or "") for key, message in rows]) for cls, count, rows in failures], "")]
    parts += ["<h2>Outputs</h2>", _journal_contact_sheet(journal.outputs(), max_pixels)]
    if failed_inputs:
        parts += ["<h2>Failed inputs</h2>", _failed_pictures(failed_inputs, max_pixels)]
    return _page("gpupipe journal", parts)


def _journal_summary_rows(journal: JournalReader, path: Path, runs: int) -> list[tuple[str, object]]:
    states = journal.inputs_by_state()
    outputs, output_bytes = journal.output_totals()
    return [("journal", path), ("inputs done", states.get(OK, 0)), ("inputs failed", states.get(FAILED, 0)),
            *([("inputs rejected by user ops", states[REJECTED])] if states.get(REJECTED) else []),
            ("outputs", f"{outputs} ({output_bytes / 1e6:.1f} MB)"), ("runs", runs)]


def _runs_table(runs: list[dict[str, Any]], total: int) -> str:
    if not runs:
        return "<p>No run is recorded.</p>"
    shown = f"The last {len(runs)} of {total} runs" if total > len(runs) else "The runs"
    return (f"<p>{shown}, newest first.</p>"
            + _grid(("started", "finished", "processed", "failed", "skipped", "wall time"), map(_run_row, runs)))


def _run_row(run: dict[str, Any]) -> list[object]:
    summary = run["summary"] or {}
    finished = _when(run["finished"]) if run["finished"] else "did not finish"      # killed: no end recorded
    if run["finished"] and not summary:
        finished += " (no summary: the run stopped on an error)"
    elif summary.get("stop_reason"):
        finished += f" (stopped early: {summary['stop_reason']})"
    counts = [summary.get(key, "—") for key in ("processed", "failed", "skipped")]
    return [_when(run["started"]), finished, *counts, _seconds(summary.get("wall_seconds"))]


def _seconds(value: object) -> str:
    return f"{value:.2f} s" if isinstance(value, (int, float)) else "—"


def _done_over_time(journal: JournalReader) -> str:
    span = journal.done_span()
    if span is None:
        return "<p>No input is recorded as done.</p>"
    first, last = span
    step, step_text = _bar_step(last - first)
    return (f"<p>Inputs recorded as done, per {step_text}, from {_when(first)} to {_when(last)}: an input done "
            "again counts once, when it was last done.</p>"
            + _column_chart(_bar_counts(((t, 1) for t in journal.done_times()), first, step), step_text, "inputs"))


def _stage_timings(run: dict[str, Any] | None) -> str:
    summary = (run or {}).get("summary") or {}
    stages = summary.get("cpu_seconds_by_stage")
    timings = {str(k): v for k, v in stages.items() if isinstance(v, (int, float))} if isinstance(stages, dict) else {}
    if run is None or not timings:
        return ("<p>No stage timings: no run of this journal finished and recorded them (a run killed, or "
                "stopped by an error, records none).</p>")
    return (f"<p>CPU seconds of the scan, the coordination and the worker processes in the last finished run "
            f"(started {_when(run['started'])}, wall time {_seconds(summary.get('wall_seconds'))}).</p>"
            + _bars(timings, "s"))


def _journal_contact_sheet(outputs: Iterable[tuple[bytes | str, int]], max_pixels: int) -> str:
    root, folders, more = _sample_outputs(outputs)
    if root is None:
        return "<p>No output is recorded.</p>"
    which = f"each of the first {SHEET_FOLDERS} folders" if more else "each folder"
    sections = [f"<p>The first {SAMPLES_PER_VARIANT} outputs recorded in {which} under <code>{_text(root)}</code>; "
                "those gone since or not drawn (not an image any more, above --max-pixels) are left out.</p>"]
    for folder, paths in folders.items():
        drawn = [(Path(path).name, _thumbnail_of_file(path, max_pixels)) for path in paths]
        cells = [_figure(data, name) for name, data in drawn if data is not None]
        left_out = f"<p>{len(paths) - len(cells)} of {len(paths)} left out.</p>" if len(cells) < len(paths) else ""
        sections.append(_sheet(os.path.relpath(folder, root) if folder != root else "(top folder)", cells) + left_out)
    return "\n".join(sections)


def _sample_outputs(outputs: Iterable[tuple[bytes | str, int]]) -> tuple[str | None, dict[str, list[str]], bool]:
    """The folder all outputs are under, the first SAMPLES_PER_VARIANT outputs of each of the first
    SHEET_FOLDERS folders, and whether other folders hold outputs too: one pass, bounded memory."""
    root: str | None = None
    folders: dict[str, list[str]] = {}
    more = False
    for key, _ in outputs:
        path = os.fsdecode(key)
        folder = os.path.dirname(path)
        root = folder if root is None else _common_folder(root, folder)
        if folder in folders:
            if len(folders[folder]) < SAMPLES_PER_VARIANT:
                folders[folder].append(path)
        elif len(folders) < SHEET_FOLDERS:
            folders[folder] = [path]
        else:
            more = True
    return root, folders, more


def _common_folder(root: str, folder: str) -> str:
    if folder == root or folder.startswith(root.rstrip(os.sep) + os.sep):
        return root              # the usual case, without commonpath's cost on every row
    return os.path.commonpath([root, folder])


# ---------------------------------------------------------------------- pieces

_STYLE = """<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table.summary td { padding: 2px 12px 2px 0; } table.summary td:first-child { font-weight: 600; }
table.grid { border-collapse: collapse; } table.grid th, table.grid td { padding: 2px 12px 2px 0; text-align: left; }
.sheet { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: 170px; text-align: center; font-size: 12px; word-break: break-all; }
figure img { max-width: 160px; max-height: 160px; border: 1px solid #ccc; }
figure .missing { width: 160px; height: 100px; line-height: 100px; background: #f3f3f3; color: #888; }
h3.failure { color: #b00; } code { font-size: 12px; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
</style>"""


def _page(title: str, parts: list[str]) -> str:
    head = f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_text(title)}</title>\n"
    return head + _STYLE + "</head><body>\n" + "\n".join(parts) + "\n</body></html>\n"


def _text(value: object) -> str:
    return html.escape(printable(str(value)))


def _when(seconds: float) -> str:
    """A unix time as local time, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _run_summary_rows(summary: RunSummary) -> list[tuple[str, object]]:
    rows = [("backend", summary.backend), ("processed", summary.processed), ("failed", summary.failed),
            *([("rejected by user ops", summary.rejected)] if summary.rejected else []),
            ("skipped", summary.skipped), ("cancelled", summary.cancelled),
            ("wall time", f"{summary.wall_seconds:.2f} s"), ("throughput", f"{summary.images_per_second:.1f} images/s")]
    if summary.stop_reason:
        rows.append(("stopped early", summary.stop_reason))
    return rows + [("note", note) for note in summary.notes]


def _summary_table(rows: list[tuple[str, object]]) -> str:
    body = "".join(f"<tr><td>{_text(k)}</td><td>{_text(v)}</td></tr>" for k, v in rows)
    return f"<table class='summary'>{body}</table>"


def _grid(header: Iterable[str], rows: Iterable[list[object]]) -> str:
    head = "".join(f"<th>{_text(name)}</th>" for name in header)
    body = "".join("<tr>" + "".join(f"<td>{_text(value)}</td>" for value in row) + "</tr>" for row in rows)
    return f"<table class='grid'><tr>{head}</tr>{body}</table>"


_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


def _bar_step(last: float) -> tuple[int, str]:
    """Seconds per bar, a whole number of days, hours, minutes or seconds, so that at most MAX_BARS
    bars cover 0 to ``last`` seconds; and that step in words."""
    least = max(1, -(-(int(last) + 1) // MAX_BARS))
    unit, name = next((unit, name) for unit, name in _UNITS if least >= unit)
    count = -(-least // unit)
    return count * unit, f"{count} {name}"


def _bar_counts(counts: Iterable[tuple[float, int]], start: float, step: int) -> list[int]:
    """(time, count) pairs summed per ``step`` seconds from ``start``, up to the last time's bar."""
    bars: collections.Counter[int] = collections.Counter()
    for moment, count in counts:
        bars[int((moment - start) // step)] += count
    return [bars.get(i, 0) for i in range(max(bars, default=0) + 1)]


def _failure_sections(failures: list[tuple[str, int, list[tuple[str, str]]]], where_the_rest_are: str) -> str:
    """Per error class, commonest first: its count and the (path, message) of the first listed."""
    if not failures:
        return "<p>None.</p>"
    sections = []
    for cls, count, listed in failures:
        more = f"<li>… and {count - len(listed)} more{where_the_rest_are}</li>" if count > len(listed) else ""
        items = "".join(f"<li><code>{_text(path)}</code>: {_text(message)}</li>" for path, message in listed)
        sections.append(f"<h3 class='failure'>{_text(cls)}: {count} file(s)</h3><ul>{items}{more}</ul>")
    return "\n".join(sections)


def _sheet(heading: str, figures: list[str]) -> str:
    return f"<h3>{_text(heading)}</h3><div class='sheet'>{''.join(figures)}</div>"


def _failed_pictures(failed: list[tuple[str, str, str]], max_pixels: int) -> str:
    """(path, error class, message) of failed inputs: those that still decode drawn."""
    cells = [_figure(_thumbnail_of_file(path, max_pixels), f"{Path(path).name} ({cls})", missing="cannot be decoded",
                     title=message) for path, cls, message in failed]
    return f"<div class='sheet'>{''.join(cells)}</div>"


def _column_chart(values: list[float], step: str, unit: str, width: int = 900, height: int = 160) -> str:
    top = max(values) or 1.0
    bar = width / len(values)
    rects = "".join(f"<rect x='{i * bar:.1f}' y='{height - v / top * height:.1f}' width='{max(bar - 1, 0.5):.1f}' "
                    f"height='{v / top * height:.1f}' fill='#4a7ab5'><title>{v:.1f} {unit}</title></rect>"
                    for i, v in enumerate(values))
    return (f"<svg width='{width + 60}' height='{height + 30}' role='img'>"
            f"<g transform='translate(50,5)'>{rects}<line x1='0' y1='{height}' x2='{width}' y2='{height}' "
            f"stroke='#888'/><text x='-4' y='10' text-anchor='end'>{top:.0f}</text><text x='-4' y='{height}' "
            f"text-anchor='end'>0</text><text x='{width}' y='{height + 18}' text-anchor='end'>time ({step} a bar)"
            f"</text></g></svg>")


def _bars(values: dict[str, float], unit: str, width: int = 600) -> str:
    if not values:
        return "<p>Nothing measured.</p>"
    top = max(values.values()) or 1.0
    row = 22
    items = []
    for i, (name, value) in enumerate(values.items()):
        length = value / top * width
        items.append(f"<text x='0' y='{i * row + 15}'>{_text(name)}</text>"
                     f"<rect x='110' y='{i * row + 4}' width='{length:.1f}' height='{row - 8}' fill='#4a7ab5'/>"
                     f"<text x='{116 + length:.1f}' y='{i * row + 15}'>{value:.2f} {unit}</text>")
    return (f"<svg width='{width + 200}' height='{len(values) * row + 6}' "
            f"role='img'>{''.join(items)}</svg>")


def _figure(data: bytes | None, caption: str, missing: str = "not readable", title: str = "") -> str:
    tip = f" title='{_text(title)}'" if title else ""
    picture = (f"<img alt='{_text(caption)}' src='data:image/jpeg;base64,{base64.b64encode(data).decode()}'>"
               if data is not None else f"<div class='missing'>{_text(missing)}</div>")
    return f"<figure{tip}>{picture}<figcaption>{_text(caption)}</figcaption></figure>"


def _thumbnail_of_file(path: str, max_pixels: int) -> bytes | None:
    """A small JPEG of the image at ``path``, decoded as a run decodes (bombs refused from their
    header, EXIF orientation applied), or None when it cannot be."""
    from PIL import Image

    from . import codecs
    from .sources import read_bytes
    try:
        data = read_bytes(path)         # as a run reads: a FIFO or a device put there is refused, never waited on
        pixels = codecs.decode(data, max_pixels=max_pixels, min_size=(THUMB, THUMB)).pixels
        image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        image = image.convert("RGB") if image.mode not in ("L", "RGB") else image
        image.thumbnail((THUMB, THUMB))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=80)
        return out.getvalue()
    except Exception:               # a picture that cannot be shown is shown as missing, nothing more
        return None
