"""``--report-html FILE``: one self-contained HTML page about a run, for people to look at.

Throughput over time, the time spent in each stage, the CPU of the run's process and of its
workers, the failures by class with their paths and messages, a contact sheet of a sample of
the outputs of each variant, and thumbnails of the failed inputs that can still be decoded.
No network: the charts are inline SVG and the pictures inline JPEG. What it keeps while the run
goes is bounded (per-second counts, a few samples, the first failures of each class), so a run
of millions of inputs costs it no more memory than one of a hundred.
"""

from __future__ import annotations

import base64
import collections
import html
import io
import time
from pathlib import Path
from typing import Iterable

from .engine.results import FAILED, OK, FileOutcome, RunSummary
from .sidefiles import SideFile, printable

SAMPLES_PER_VARIANT = 12          # outputs shown per variant
FAILED_SHOWN = 12                 # failed inputs shown as pictures
FAILURES_LISTED = 100             # paths and messages listed per error class
THUMB = 160                       # pixels, the longer side of a picture in the page
MAX_BARS = 120                    # the throughput chart's bars: seconds grouped beyond that
STAGES = ("read", "decode", "process", "encode", "write")


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
        parts = [_HEAD, "<h1>gpupipe run</h1>", _summary_table(summary)]
        parts += ["<h2>Throughput</h2>", self._throughput_chart()]
        parts += ["<h2>Time per stage</h2><p>Seconds summed over inputs (a stage's share of the work).</p>",
                  _bars({s: self._stage_seconds.get(s, 0.0) for s in STAGES if s in self._stage_seconds}, "s")]
        if summary.cpu_seconds_by_stage:
            parts += ["<h2>CPU per stage</h2><p>CPU seconds of the scan, the coordination and the worker "
                      "processes.</p>", _bars(dict(summary.cpu_seconds_by_stage), "s")]
        parts += ["<h2>Failures</h2>", self._failure_tables(summary)]
        parts += ["<h2>Outputs</h2>", self._contact_sheet()]
        if self._failed_inputs:
            parts += ["<h2>Failed inputs</h2>", self._failed_pictures()]
        return "\n".join(parts) + "\n</body></html>\n"

    def _throughput_chart(self) -> str:
        if not self._per_second:
            return "<p>No input was finished.</p>"
        last = max(self._per_second)
        group = max(1, -(-(last + 1) // MAX_BARS))
        bars = collections.Counter()
        for second, count in self._per_second.items():
            bars[second // group] += count
        values = [bars.get(i, 0) / group for i in range(last // group + 1)]
        return (f"<p>Inputs finished per second, in steps of {group} s.</p>"
                + _column_chart(values, f"{group} s", "inputs/s"))

    def _failure_tables(self, summary: RunSummary) -> str:
        if not summary.failures_by_class:
            return "<p>None.</p>"
        rows = []
        for cls, count in sorted(summary.failures_by_class.items(), key=lambda kv: -kv[1]):
            listed = self._failures.get(cls, [])
            more = f"<li>… and {count - len(listed)} more (see --report)</li>" if count > len(listed) else ""
            items = "".join(f"<li><code>{_text(path)}</code>: {_text(message)}</li>" for path, message in listed)
            rows.append(f"<h3 class='failure'>{_text(cls)}: {count} file(s)</h3><ul>{items}{more}</ul>")
        return "\n".join(rows)

    def _contact_sheet(self) -> str:
        if not self._samples:
            return "<p>No output was written.</p>"
        sections = []
        for index in sorted(self._samples):
            name = self._variants[index] if index < len(self._variants) and len(self._variants) > 1 else "outputs"
            cells = [_figure(_thumbnail_of_file(path, self._max_pixels), Path(path).name)
                     for path in self._samples[index]]
            sections.append(f"<h3>{_text(name)}</h3><div class='sheet'>{''.join(cells)}</div>")
        return "\n".join(sections)

    def _failed_pictures(self) -> str:
        cells = []
        for path, cls, message in self._failed_inputs:
            cells.append(_figure(_thumbnail_of_file(path, self._max_pixels), f"{Path(path).name} ({cls})",
                                 missing="cannot be decoded", title=message))
        return f"<div class='sheet'>{''.join(cells)}</div>"


# ---------------------------------------------------------------------- pieces

_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>gpupipe run</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table.summary td { padding: 2px 12px 2px 0; } table.summary td:first-child { font-weight: 600; }
.sheet { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: 170px; text-align: center; font-size: 12px; word-break: break-all; }
figure img { max-width: 160px; max-height: 160px; border: 1px solid #ccc; }
figure .missing { width: 160px; height: 100px; line-height: 100px; background: #f3f3f3; color: #888; }
h3.failure { color: #b00; } code { font-size: 12px; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
</style></head><body>"""


def _text(value: object) -> str:
    return html.escape(printable(str(value)))


def _summary_table(summary: RunSummary) -> str:
    rows = [("backend", summary.backend), ("processed", summary.processed), ("failed", summary.failed),
            ("skipped", summary.skipped), ("cancelled", summary.cancelled),
            ("wall time", f"{summary.wall_seconds:.2f} s"), ("throughput", f"{summary.images_per_second:.1f} images/s")]
    if summary.stop_reason:
        rows.append(("stopped early", summary.stop_reason))
    rows += [("note", note) for note in summary.notes]
    body = "".join(f"<tr><td>{_text(k)}</td><td>{_text(v)}</td></tr>" for k, v in rows)
    return f"<table class='summary'>{body}</table>"


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
    try:
        with open(path, "rb") as f:
            data = f.read()
        pixels = codecs.decode(data, max_pixels=max_pixels, min_size=(THUMB, THUMB)).pixels
        image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        image = image.convert("RGB") if image.mode not in ("L", "RGB") else image
        image.thumbnail((THUMB, THUMB))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=80)
        return out.getvalue()
    except Exception:               # a picture that cannot be shown is shown as missing, nothing more
        return None
