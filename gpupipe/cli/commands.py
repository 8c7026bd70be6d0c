"""`gpupipe inspect`, `report`, `ops` and `doctor`: the commands besides `run`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

import typer

from .. import __version__, codecs, ops as op_catalogue, sources
from ..backends import select_backend
from ..engine.host import usable_cores, usable_memory
from ..engine.options import DEFAULT_MAX_PIXELS, default_max_memory
from ..errors import GpupipeError, UsageError
from ..journal import default_path, report as journal_report
from ..sidefiles import STDOUT, printable
from .app import app, escape, exit_with_error


@app.command()
def inspect(
    inputs: list[str] = typer.Argument(..., metavar="IN", help="Directories, files or glob patterns."),
    no_recursive: bool = typer.Option(False, "--no-recursive", help="Don't descend into subdirectories."),
    hidden: bool = typer.Option(False, "--hidden", help="Include hidden files."),
    all_files: bool = typer.Option(False, "--all-files", help="Consider every file, whatever its extension."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", help="Flag images declaring more pixels."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line instead of a table."),
) -> None:
    """List what `run` would process: format, bytes, size, mode, orientation and problems. Writes nothing.

    Exit code 1 when any input has a problem that would make it fail.
    """
    try:
        sources.check_inputs(inputs)
    except GpupipeError as exc:
        exit_with_error(exc)
    from rich.console import Console
    from rich.table import Table
    out = Console()
    table = Table("path", "format", "bytes", "size", "mode", "bits", "orient.", "problems")
    bad = 0
    for item in sources.discover(inputs, recursive=not no_recursive, include_hidden=hidden, all_files=all_files):
        if not isinstance(item, sources.SourceFile):
            continue
        row: dict[str, Any] = {"path": item.path, "bytes": item.size}
        try:
            info = codecs.probe(sources.read_bytes(item.path), max_pixels=max_pixels, name=os.path.basename(item.path))
            row.update(format=info.format, width=info.width, height=info.height, mode=info.mode, bits=info.bits,
                       orientation=info.orientation, problems=list(info.problems))
        except GpupipeError as exc:
            row.update(problems=[f"{getattr(exc, 'error_class', 'error')}: {exc}"])
            bad += 1
        if as_json:
            print(json.dumps(row), flush=True)
        else:
            size = f"{row['width']}×{row['height']}" if "width" in row else "—"
            table.add_row(escape(printable(row["path"])), row.get("format", "—"), str(row["bytes"]), size,
                          row.get("mode", "—"), str(row.get("bits", "—")), str(row.get("orientation", "—")),
                          escape(printable("; ".join(row.get("problems", [])))))
    if not as_json:
        out.print(table)
    raise typer.Exit(1 if bad else 0)


@app.command("report")
def report_command(
    output: Path = typer.Argument(..., metavar="OUT", help="The output directory of earlier runs."),
    journal_path: Optional[Path] = typer.Option(None, "--journal", metavar="PATH",
                                                help="Journal file \\[default: OUT/.gpupipe/journal.sqlite]."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON."),
    html_file: Optional[Path] = typer.Option(None, "--html", metavar="FILE.html", help="Also write one "
                                             "self-contained page to look at: inputs done over time, failures by "
                                             "class, a contact sheet of the outputs."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", help="With --html: pictures of inputs "
                                   "declaring more pixels are not drawn."),
) -> None:
    """Summarise what the journal knows: inputs done and failed, failures by error class, recent runs."""
    if as_json and str(html_file) == STDOUT:
        exit_with_error(UsageError("--json and --html - both ask for stdout; give --html a file"))
    try:
        journal_file = journal_path or default_path(output)
        data = journal_report(journal_file)
        if html_file is not None:
            from ..htmlreport import write_from_journal
            write_from_journal(journal_file, html_file, max_pixels=max_pixels)
    except GpupipeError as exc:
        exit_with_error(exc)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    from rich.console import Console
    out = Console(stderr=str(html_file) == STDOUT)        # stdout holds the page: the words go to stderr
    states = data["inputs"]
    out.print(f"[bold]journal[/] {escape(printable(data['journal']))}")
    rejected = f", rejected by user ops: {states['rejected']}" if states.get("rejected") else ""
    out.print(f"inputs done: {states.get('ok', 0)}, failed: {states.get('failed', 0)}{rejected}; "
              f"outputs: {data['outputs']} ({data['output_bytes'] / 1e6:.1f} MB)")
    for error_class, failure in data["failures"].items():
        out.print(f"[red]{escape(error_class)}[/]: {failure['count']} input(s)")
        for example in failure["examples"]:
            out.print(printable(f"  {example['path']}: {example['message']}"), markup=False, highlight=False)
    for run in data["runs"][:1]:
        summary = run["summary"] or {}
        out.print(f"last run: processed {summary.get('processed', '?')}, failed {summary.get('failed', '?')}, "
                  f"skipped {summary.get('skipped', '?')}" + ("" if run["finished"] else " (did not finish)"))


@app.command("ops")
def list_ops(name: Optional[str] = typer.Argument(None, help="Show one op in detail."),
             markdown: bool = typer.Option(False, "--markdown", help="Print the ops as the README's table.")) -> None:
    """Document every op: what it does, its flag on the command line, its parameters in spec files."""
    from ..reference import ops_table
    from .opflags import synopsis
    if markdown:
        print(ops_table())
        return
    chosen = [*op_catalogue.OP_CLASSES.values(), *op_catalogue.plugin_ops().values()]
    if name:
        try:
            chosen = [op_catalogue.op_class(name)]
        except GpupipeError as exc:
            exit_with_error(exc)
    from rich.console import Console
    out = Console(highlight=False, soft_wrap=True)
    for cls in chosen:
        out.print(f"[bold cyan]{cls.name}[/]  {escape(cls.summary)}")
        out.print(f"    [dim]command line:[/] {escape(synopsis(cls))}")
        for info in cls.params():
            kind = info.kind.__name__ if info.kind is not tuple else ("colour" if info.spec.convert is
                                                                     op_catalogue._color else "kernel")
            rule, default = info.spec.rule(), info.shown_default()
            out.print(escape(f"    {info.name}: {kind}{' or none' if info.optional else ''}"
                             f"{f' = {default}' if default else ''}  — {info.doc}{f' ({rule})' if rule else ''}"))
    if not name:
        out.print('\nIn a spec file: ops = [{ op = "thumbnail", size = 256 }, { op = "sharpen", amount = 0.5 }]')


@app.command()
def doctor() -> None:
    """Report the libraries, codecs and devices gpupipe would use, and which backend `auto` picks."""
    import platform

    import cv2
    import numpy
    import PIL
    import simplejpeg
    from PIL import features
    from rich.console import Console
    from rich.table import Table

    from ..backends import cuda_report
    from ..backends.cuda.jpeg import nvimgcodec_unavailable_reason
    out = Console()
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("gpupipe", __version__)
    table.add_row("python", f"{platform.python_version()} ({platform.machine()}, {platform.system()})")
    cores, memory = usable_cores(), usable_memory()
    table.add_row("cpu cores usable", str(cores))
    table.add_row("memory usable", "unknown" if memory is None else f"{memory / 2**30:.1f} GB")
    table.add_row("--max-memory auto", f"{default_max_memory(cores, memory) / 2**20:.0f} MB (for {cores} workers)")
    table.add_row("numpy / Pillow / OpenCV", f"{numpy.__version__} / {PIL.__version__} / {cv2.__version__}")
    table.add_row("JPEG decode", f"simplejpeg {simplejpeg.__version__} (libjpeg-turbo), Pillow for the rest")
    table.add_row("Pillow libjpeg-turbo", str(features.version("libjpeg_turbo") or "no"))
    from ..backends.numpy import _resample
    table.add_row("resize (CPU)", f"Pillow 13's algorithm in gpupipe's C, {_resample.PASSES} build")
    table.add_row("write formats", ", ".join(codecs.available_formats()))
    from ..codecs.encoding import webp_writer
    table.add_row("WebP encode", webp_writer())
    from ..codecs import formats
    for known in formats.FORMATS:
        if known.extra is not None:
            missing = formats.unavailable(known.name)
            table.add_row(f"read {known.name}", escape(missing or f"yes ({known.module})"))
    for label, fact in cuda_report().items():
        table.add_row(label, escape(fact))
    auto = select_backend("auto", workers=cores)
    table.add_row("--backend auto", auto.describe())
    auto.close()
    nvjpeg = auto.name == "gpu" and nvimgcodec_unavailable_reason() is None
    decode = "CPU (libjpeg-turbo, Pillow)" + ("; with --decoder nvimgcodec, GPU (nvJPEG) for full-size 8-bit JPEGs"
                                              if nvjpeg else "")
    encode = "CPU (libjpeg-turbo, Pillow)" + ("; with --gpu-encode, GPU (nvJPEG) for L/RGB JPEG outputs"
                                              if nvjpeg else "")
    if auto.name == "cpu":
        table.add_row("stages (auto)", "read → decode → ops → encode → write in worker processes, a chunk of "
                                       "inputs at a time")
    else:
        table.add_row("stages (auto)", f"in worker processes, a chunk of inputs at a time: read · decode: {decode} "
                                       f"· ops: {auto.name.upper()}, in batches, a device context per worker "
                                       f"· encode: {encode} · write")
    table.add_row("worker processes", _worker_process_check())
    try:
        import ray
        table.add_row("--engine ray", f"Ray {ray.__version__}")
    except ImportError:
        table.add_row("--engine ray", escape("not installed (pip install 'gpupipe[ray]')"))
    out.print(table)


def _worker_process_check() -> str:
    """Fork one CPU worker process, run one chunk and stop it: whether worker processes work here."""
    import tempfile

    from ..backends import choose_backend
    from ..engine.pool import WorkerPool
    from ..engine.unit import Work
    from ..engine.writer import WritePolicy
    from ..ops import Thumbnail
    from ..spec import Spec

    with tempfile.TemporaryDirectory() as scratch:
        work = Work(Spec.single([Thumbnail(1)]), Path(scratch), WritePolicy(scratch), False, DEFAULT_MAX_PIXELS,
                    16 * 2**20)
        pool = WorkerPool(1, work, choose_backend("cpu", workers=1))
        started = time.perf_counter()
        try:
            pool.start()
            pool.send(0, [])
            events = pool.wait(30)
            seconds = time.perf_counter() - started
        except OSError as exc:
            return escape(f"cannot run here: {exc}")
        finally:
            pool.close()
    if not events or not isinstance(events[0], tuple):
        return escape("cannot run here: the worker process did not answer")
    return f"a worker process starts and answers in {seconds:.3f} s"

