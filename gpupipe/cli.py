"""The command line: `gpupipe run`, `inspect` and `ops`.

Op flags (--resize, --blur, --watermark-text, …) apply in the order given on
the command line, so `--rotate 90 --crop 100x50+0+0` differs from the reverse.
The parser does not keep the relative order of different options, so the command
class below keeps the raw arguments and ``ops_from_args`` reads them in order.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand

from . import __version__, api, codecs, ops as op_catalogue, sources
from .backends import choose_backend, select_backend
from .engine.host import usable_cores, usable_memory
from .engine.options import DEFAULT_MAX_PIXELS, default_max_memory
from .errors import GpupipeError, SystemFailure, UsageError, did_you_mean
from .journal import default_path, report as journal_report
from .observe import ProgressDisplay
from .tracing import ChromeTrace, StateLog
from .report import ReportWriter, print_summary
from .sidefiles import STDOUT, printable
from .spec import Spec

app = typer.Typer(help="Process whole directories of images: resize, filters, watermarks, format conversion — "
                       "on a CUDA GPU or the CPU, with the same results.",
                  no_args_is_help=True, rich_markup_mode="rich")
err = Console(stderr=True, highlight=False)

OPS_PANEL = "Ops (applied in the order given)"
WATERMARK_PANEL = "Watermark"
OUTPUT_PANEL = "Output"
INPUT_PANEL = "Inputs"
RUN_PANEL = "Execution"


class OrderedOpsCommand(TyperCommand):
    """Keeps the raw arguments so op flags can be applied in command-line order."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        ctx.meta["gpupipe_raw_args"] = list(args)
        return super().parse_args(ctx, args)


# Op flags: flag → how its value becomes an op. Flags without a value map to None.
VALUE_OP_FLAGS = ("--resize", "--thumbnail", "--crop", "--blur", "--box-blur", "--brightness", "--contrast",
                  "--rotate", "--flip")
BARE_OP_FLAGS = ("--grayscale", "--sharpen", "--edges", "--emboss")
WATERMARK_FLAGS = ("--watermark-text", "--watermark-image")
# Modifier flags → the op flags they modify: a modifier without one of them is an error, never ignored.
MODIFIES = {**dict.fromkeys(("--fit", "--fill", "--exact", "--pad", "--filter", "--no-upscale"), ("--resize",)),
            "--sharpen-amount": ("--sharpen",), "--edges-kind": ("--edges",),
            **dict.fromkeys(("--watermark-position", "--watermark-opacity", "--watermark-margin", "--watermark-size",
                             "--watermark-color", "--watermark-font"), WATERMARK_FLAGS)}
RESIZE_MODE_FLAGS = ("--fit", "--fill", "--exact", "--pad")
SIZE_RE = re.compile(r"^(\d*)(?:[x×](\d*))?$")
CROP_RE = re.compile(r"^(\d+)[x×](\d+)(?:\+(\d+)\+(\d+))?$")


def parse_size(text: str, what: str) -> tuple[int | None, int | None]:
    """'800x600', '800x' (width only), 'x600' (height only) or '800' (an 800×800 box)."""
    match = SIZE_RE.match(text.strip())
    if not match or not (match.group(1) or match.group(2)):
        raise UsageError(f"{what} takes WIDTHxHEIGHT, WIDTHx, xHEIGHT or SIZE (e.g. 800x600), got {text!r}")
    width = int(match.group(1)) if match.group(1) else None
    height = int(match.group(2)) if match.group(2) else (width if "x" not in text and "×" not in text else None)
    return width, height


def _number(text: str, what: str, kind=float):
    try:
        return kind(text)
    except ValueError:
        raise UsageError(f"{what} takes a {'whole ' if kind is int else ''}number, got {text!r}") from None


def check_modifiers(raw: list[str]) -> None:
    """UsageError for a modifier flag given without the op flag it modifies (``--thumbnail 100
    --filter bilinear``: --filter is --resize's), and for more than one resize mode."""
    given = {token.partition("=")[0] for token in raw[:raw.index("--") if "--" in raw else len(raw)]}
    for modifier, targets in MODIFIES.items():
        if modifier in given and not given & set(targets):
            raise UsageError(f"{modifier} modifies {' or '.join(targets)}, which this command does not have; "
                             f"add {targets[0]}, or drop {modifier}")
    modes = [flag for flag in RESIZE_MODE_FLAGS if flag in given]
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(modes)} are different resize modes; give one (none: --fit)")


def ops_from_args(raw: list[str], params: dict[str, Any], value_options: set[str]) -> list[op_catalogue.Op]:
    """Op flags in command-line order → ops. ``params`` are click's parsed values (for modifiers)."""
    check_modifiers(raw)
    mode = "fit"
    for name in ("exact", "fill", "pad"):
        if params.get(name):
            mode = name
    result: list[op_catalogue.Op] = []
    watermark_added = False
    i = 0
    while i < len(raw):
        token = raw[i]
        if token == "--":
            break
        flag, _, inline = token.partition("=")
        value = None
        if flag in value_options and not _:
            value = raw[i + 1] if i + 1 < len(raw) else None
            i += 1
        elif _:
            value = inline
        i += 1
        if flag in VALUE_OP_FLAGS:
            result.append(_value_op(flag, value, mode, params))
        elif flag in BARE_OP_FLAGS:
            result.append({"--grayscale": op_catalogue.Grayscale(),
                           "--sharpen": op_catalogue.Sharpen(params["sharpen_amount"]),
                           "--edges": op_catalogue.Edges(params["edges_kind"]),
                           "--emboss": op_catalogue.Emboss()}[flag])
        elif flag in WATERMARK_FLAGS and not watermark_added:
            watermark_added = True
            result.append(op_catalogue.Watermark(
                text=params["watermark_text"], image=params["watermark_image"],
                position=params["watermark_position"], opacity=params["watermark_opacity"],
                margin=params["watermark_margin"], size=params["watermark_size"],
                color=params["watermark_color"], font=params["watermark_font"]))
    return result


def _value_op(flag: str, value: str | None, mode: str, params: dict[str, Any]) -> op_catalogue.Op:
    if value is None:
        raise UsageError(f"{flag} needs a value")
    if flag == "--resize":
        width, height = parse_size(value, "--resize")
        if width is None or height is None:
            mode = "fit"        # one side given: the other follows the aspect ratio
        return op_catalogue.Resize(width, height, mode=mode, filter=params["filter"],
                                   upscale=not params["no_upscale"], background=params["background"])
    if flag == "--thumbnail":
        width, height = parse_size(value, "--thumbnail")
        return op_catalogue.Thumbnail(width, height)
    if flag == "--crop":
        match = CROP_RE.match(value.strip())
        if not match:
            raise UsageError(f"--crop takes WxH+X+Y (e.g. 640x480+10+20) or WxH for a centre crop, got {value!r}")
        w, h, x, y = match.groups()
        if x is None:
            return op_catalogue.CenterCrop(int(w), int(h))
        return op_catalogue.Crop(int(x), int(y), int(w), int(h))
    if flag == "--blur":
        return op_catalogue.GaussianBlur(_number(value, "--blur"))
    if flag == "--box-blur":
        return op_catalogue.BoxBlur(_number(value, "--box-blur", int))
    if flag == "--brightness":
        return op_catalogue.Brightness(_number(value, "--brightness"))
    if flag == "--contrast":
        return op_catalogue.Contrast(_number(value, "--contrast"))
    if flag == "--rotate":
        return op_catalogue.Rotate(_number(value, "--rotate", int))
    return op_catalogue.Flip(value)


def parse_memory(text: str) -> int:
    """'512MB', '2G', '300m', '1.5GiB' or a plain number of megabytes."""
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", text.lower())
    if not match:
        raise UsageError(f"--max-memory takes a size like 512MB or 2G, or auto, got {text!r}")
    number, unit = float(match.group(1)), match.group(2) or "m"
    size = int(number * 1024 ** " kmgt".index(unit))
    if size < 16 * 2**20:
        raise UsageError(f"--max-memory must be at least 16MB, got {text!r}")
    return size


def _exit_with_error(exc: GpupipeError, code: int = 2) -> None:
    err.print(f"[red]error:[/] {escape(printable(str(exc)))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


RUN_EXAMPLES = """[bold]Examples[/]

  gpupipe run photos/ -o thumbs/ --thumbnail 256 -f webp            [dim]# gallery thumbnails[/]

  gpupipe run shop/ -o web/ --spec examples/web.toml                [dim]# several variants per photo[/]

  gpupipe run 'scans/**/*.png' -o out/ --resize 1600x1600 --sharpen --watermark-text '© me'

  gpupipe run big/ -o out/ --backend gpu --gpu-decode --report run.json   [dim]# on the GPU, with a report[/]

  gpupipe run photos/ -o thumbs/ --thumbnail 256 -f webp            [dim]# again: resumes, skipping what is done[/]
"""


@app.command(cls=OrderedOpsCommand, no_args_is_help=True, epilog=RUN_EXAMPLES)
def run(
    ctx: typer.Context,
    inputs: list[str] = typer.Argument(..., metavar="IN", help="Directories (searched recursively), image files or glob "
                                                "patterns like 'shots/**/*.jpg' (quote them).", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory; input folder structure is mirrored "
                                                            "under it.", rich_help_panel=OUTPUT_PANEL),
    spec_file: Optional[Path] = typer.Option(None, "--spec", help="TOML spec with several named variants per input "
                                             "(replaces the op and output flags).", rich_help_panel=OUTPUT_PANEL),
    resize: Optional[list[str]] = typer.Option(None, "--resize", metavar="WxH", help="Resize to a box: 800x600, "
                                               "800x (width only) or x600; mode from --fit (default), --fill, "
                                               "--exact, --pad.", rich_help_panel=OPS_PANEL),
    fit: bool = typer.Option(False, "--fit", help="--resize keeps the aspect ratio inside the box (default).",
                             rich_help_panel=OPS_PANEL),
    fill: bool = typer.Option(False, "--fill", help="--resize covers the box and centre-crops to it.",
                              rich_help_panel=OPS_PANEL),
    exact: bool = typer.Option(False, "--exact", help="--resize stretches to exactly WxH.", rich_help_panel=OPS_PANEL),
    pad: bool = typer.Option(False, "--pad", help="--resize fits, then pads to WxH with --background.",
                             rich_help_panel=OPS_PANEL),
    filter: str = typer.Option("lanczos3", "--filter", help="Resampling filter for --resize: nearest, bilinear, "
                               "bicubic, lanczos3.", rich_help_panel=OPS_PANEL),
    no_upscale: bool = typer.Option(False, "--no-upscale", help="--resize never enlarges.", rich_help_panel=OPS_PANEL),
    thumbnail: Optional[list[str]] = typer.Option(None, "--thumbnail", metavar="N|WxH", help="Fit inside NxN (or "
                                                  "WxH) with lanczos3, never upscaling.", rich_help_panel=OPS_PANEL),
    crop: Optional[list[str]] = typer.Option(None, "--crop", metavar="WxH+X+Y", help="Crop a rectangle; WxH alone "
                                             "crops the centre.", rich_help_panel=OPS_PANEL),
    grayscale: bool = typer.Option(False, "--grayscale", help="Convert to luma (one channel).",
                                   rich_help_panel=OPS_PANEL),
    blur: Optional[list[str]] = typer.Option(None, "--blur", metavar="SIGMA", help="Gaussian blur.",
                                             rich_help_panel=OPS_PANEL),
    box_blur: Optional[list[str]] = typer.Option(None, "--box-blur", metavar="RADIUS", help="Box (mean) blur.",
                                                 rich_help_panel=OPS_PANEL),
    sharpen: bool = typer.Option(False, "--sharpen", help="3x3 sharpen (strength from --sharpen-amount).",
                                 rich_help_panel=OPS_PANEL),
    sharpen_amount: float = typer.Option(1.0, "--sharpen-amount", help="Strength of --sharpen.",
                                         rich_help_panel=OPS_PANEL),
    edges: bool = typer.Option(False, "--edges", help="Edge magnitude (kind from --edges-kind).",
                               rich_help_panel=OPS_PANEL),
    edges_kind: str = typer.Option("sobel", "--edges-kind", help="sobel or laplacian.", rich_help_panel=OPS_PANEL),
    emboss: bool = typer.Option(False, "--emboss", help="Emboss filter.", rich_help_panel=OPS_PANEL),
    brightness: Optional[list[str]] = typer.Option(None, "--brightness", metavar="V", help="Add V (-255..255) to "
                                                   "the colour channels.", rich_help_panel=OPS_PANEL),
    contrast: Optional[list[str]] = typer.Option(None, "--contrast", metavar="F", help="Scale contrast around 128 "
                                                 "by F (≥ 0).", rich_help_panel=OPS_PANEL),
    rotate: Optional[list[str]] = typer.Option(None, "--rotate", metavar="90|180|270", help="Rotate clockwise.",
                                               rich_help_panel=OPS_PANEL),
    flip: Optional[list[str]] = typer.Option(None, "--flip", metavar="h|v", help="Mirror horizontally or "
                                             "vertically.", rich_help_panel=OPS_PANEL),
    watermark_text: Optional[str] = typer.Option(None, "--watermark-text", metavar="TEXT", help="Text watermark.",
                                                 rich_help_panel=WATERMARK_PANEL),
    watermark_image: Optional[str] = typer.Option(None, "--watermark-image", metavar="PNG", help="Image watermark "
                                                  "(its alpha is used).", rich_help_panel=WATERMARK_PANEL),
    watermark_position: str = typer.Option("bottom-right", "--watermark-position", help="top-left, top-right, "
                                           "bottom-left, bottom-right, center or tile.",
                                           rich_help_panel=WATERMARK_PANEL),
    watermark_opacity: float = typer.Option(0.5, "--watermark-opacity", help="0..1.",
                                            rich_help_panel=WATERMARK_PANEL),
    watermark_margin: int = typer.Option(16, "--watermark-margin", help="Distance from the edges in pixels.",
                                         rich_help_panel=WATERMARK_PANEL),
    watermark_size: Optional[int] = typer.Option(None, "--watermark-size", help="Text height in pixels "
                                                 "\\[default: 4% of the shorter side].", rich_help_panel=WATERMARK_PANEL),
    watermark_color: str = typer.Option("#ffffff", "--watermark-color", help="Text colour.",
                                        rich_help_panel=WATERMARK_PANEL),
    watermark_font: Optional[str] = typer.Option(None, "--watermark-font", help="TTF/OTF font file \\[default: "
                                                 "Pillow's built-in font].", rich_help_panel=WATERMARK_PANEL),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="jpeg, png, webp (avif where Pillow has it) "
                                         "\\[default: keep the input's format, PNG for GIF/BMP/TIFF].",
                                         rich_help_panel=OUTPUT_PANEL),
    quality: int = typer.Option(85, "--quality", "-q", min=1, max=100, help="JPEG/WebP/AVIF quality 1-100.",
                                rich_help_panel=OUTPUT_PANEL),
    name_template: Optional[str] = typer.Option(None, "--name-template", help="Output name, from {stem} {ext} "
                                                "{name} {suffix} {variant} \\[default: {stem}.{ext}].",
                                                rich_help_panel=OUTPUT_PANEL),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files already at output paths that "
                                   "gpupipe's journal did not write \\[default: keep them; that input fails as "
                                   "output_exists]. Inputs are never replaced.", rich_help_panel=OUTPUT_PANEL),
    background: str = typer.Option("#ffffff", "--background", help="Colour for --pad and for flattening alpha into "
                                   "formats without it (JPEG).", rich_help_panel=OUTPUT_PANEL),
    report: Optional[Path] = typer.Option(None, "--report", metavar="FILE.json", help="Write every input's outcome "
                                          "as JSON ('-': stdout).", rich_help_panel=OUTPUT_PANEL),
    log_file: Optional[Path] = typer.Option(None, "--log", metavar="FILE", help="JSON lines: every input's state "
                                            "transitions with timestamps and durations ('-': stdout).", rich_help_panel=OUTPUT_PANEL),
    report_html: Optional[Path] = typer.Option(None, "--report-html", metavar="FILE.html", help="One "
                                               "self-contained page about the run, to look at: throughput over "
                                               "time, time and CPU per stage, failures, a contact sheet of outputs.",
                                               rich_help_panel=OUTPUT_PANEL),
    trace: Optional[Path] = typer.Option(None, "--trace", metavar="FILE.json", help="Chrome/Perfetto trace: one span "
                                         "per input per stage, on the thread that ran it ('-': stdout).",
                                         rich_help_panel=OUTPUT_PANEL),
    metrics_port: Optional[str] = typer.Option(None, "--metrics-port", metavar="[HOST:]PORT", help="Serve "
                                               "Prometheus metrics at http://127.0.0.1:PORT/metrics while the run "
                                               "goes (only this machine can scrape it; 0.0.0.0:PORT listens on "
                                               "every interface). A port in use is an error before any work.",
                                               rich_help_panel=OUTPUT_PANEL),
    metrics_file: Optional[Path] = typer.Option(None, "--metrics-file", metavar="FILE.prom", help="Write the "
                                                "Prometheus metrics there at the end, also after a failure or "
                                                "Ctrl+C (text format, for node_exporter's textfile collector; '-': stdout).",
                                                rich_help_panel=OUTPUT_PANEL),
    no_recursive: bool = typer.Option(False, "--no-recursive", help="Don't descend into subdirectories.",
                                      rich_help_panel=INPUT_PANEL),
    hidden: bool = typer.Option(False, "--hidden", help="Include hidden files and directories.",
                                rich_help_panel=INPUT_PANEL),
    all_files: bool = typer.Option(False, "--all-files", help="Consider every file, whatever its extension; "
                                   "non-images are skipped.", rich_help_panel=INPUT_PANEL),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", help="Refuse images declaring more pixels "
                                   "(decompression-bomb guard).", rich_help_panel=INPUT_PANEL),
    backend: str = typer.Option("auto", "--backend", help="auto (GPU when CUDA is usable, else CPU), cpu or gpu.",
                                rich_help_panel=RUN_PANEL),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1, help="Worker processes, each taking a "
                                          "chunk of inputs at a time through read, decode, ops, encode and write "
                                          "(on the GPU each with its own device context); a codec that crashes "
                                          "costs one input (error class 'crashed'), not the run "
                                          "\\[default: CPU cores].", rich_help_panel=RUN_PANEL),
    max_memory: str = typer.Option("auto", "--max-memory", help="Cap on images held in the pipeline (e.g. 2GB). "
                                   "auto: 256MB per worker, at least 512MB, and above 512MB only within a "
                                   "quarter of the memory this process may use.", rich_help_panel=RUN_PANEL),
    gpu_memory: Optional[str] = typer.Option(None, "--gpu-memory", metavar="SIZE", help="Cap on GPU memory for "
                                             "--backend gpu (e.g. 8GB), shared out between the workers; a batch "
                                             "that does not fit is split. Default: what the device has.", rich_help_panel=RUN_PANEL),
    gpu_decode: bool = typer.Option(False, "--gpu-decode/--cpu-decode", help="With --backend gpu and "
                                    "nvImageCodec installed, decode full-size JPEGs on the GPU (nvJPEG): "
                                    "much faster, but a JPEG with corrupt image data then comes out as "
                                    "noise instead of failing. Default: libjpeg-turbo on the CPU.",
                                    rich_help_panel=RUN_PANEL),
    gpu_encode: bool = typer.Option(False, "--gpu-encode/--cpu-encode", help="With --backend gpu and "
                                    "nvImageCodec installed, encode JPEG outputs on the GPU (nvJPEG, same "
                                    "quality, 4:2:0): only the files cross PCIe, but their bytes differ from "
                                    "libjpeg-turbo's. Default: libjpeg-turbo on the CPU.",
                                    rich_help_panel=RUN_PANEL),
    on_error: str = typer.Option("continue", "--on-error", help="continue (record the failure, go on) or stop "
                                 "(end the run at the first failure).", rich_help_panel=RUN_PANEL),
    journal_path: Optional[Path] = typer.Option(None, "--journal", metavar="PATH", help="SQLite journal of every "
                                                "input \\[default: OUT/.gpupipe/journal.sqlite]; a re-run skips what "
                                                "is done and unchanged.", rich_help_panel=RUN_PANEL),
    no_journal: bool = typer.Option(False, "--no-journal", help="Keep no journal: process everything, remember "
                                    "nothing.", rich_help_panel=RUN_PANEL),
    force: bool = typer.Option(False, "--force", help="Redo inputs the journal says are done.",
                               rich_help_panel=RUN_PANEL),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Retry inputs that failed in an earlier run "
                                      "(they are skipped otherwise, and the exit code stays 1).",
                                      rich_help_panel=RUN_PANEL),
    verify: bool = typer.Option(False, "--verify", help="Before skipping an input done before, compare its "
                                "outputs' checksums with the journal's (their sizes are always compared); a "
                                "mismatch redoes it.", rich_help_panel=RUN_PANEL),
    retries: int = typer.Option(3, "--retries", min=0, help="Extra attempts after a transient read error (EIO, "
                                "timeouts, network filesystems), with exponential backoff.", rich_help_panel=RUN_PANEL),
    stall_timeout: float = typer.Option(300.0, "--stall-timeout", metavar="SECONDS", help="If no stage makes "
                                        "progress this long while work is in flight (a hung mount, a deadlock), "
                                        "report every stage's state and stop.", rich_help_panel=RUN_PANEL),
    engine: str = typer.Option("local", "--engine", metavar="local|ray", help="local (threads on this machine) or ray (the same "
                               "pipeline on a Ray cluster; pip install 'gpupipe[ray]').", rich_help_panel=RUN_PANEL),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="ADDR", help="Ray cluster to join "
                                              "with --engine ray (e.g. auto, or ray://head:10001); default: start a "
                                              "local one for this run.", rich_help_panel=RUN_PANEL),
    order: str = typer.Option("input", "--order", help="Which inputs go first: input (as found, streaming), "
                              "smallest-first, largest-first or newest-first (these list every input first).",
                              rich_help_panel=RUN_PANEL),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan and every input → output; write nothing.",
                                 rich_help_panel=RUN_PANEL),
    quiet: bool = typer.Option(False, "--quiet", help="No progress, no summary; failures and errors only.",
                               rich_help_panel=RUN_PANEL),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More detail on stderr: -v how the run is "
                                "set up (backend, workers, memory), -vv each chunk of work too.",
                                rich_help_panel=RUN_PANEL),
    output_format: str = typer.Option("text", "--output-format", metavar="text|json", help="json: also print "
                                      "the summary and every failure (path, error class, message) as one JSON "
                                      "object on stdout when the run ends, for scripts.", rich_help_panel=RUN_PANEL),
) -> None:
    """Process images: gpupipe run IN [IN...] -o OUT \\[op flags] [--format F] [--quality Q].

    Exit codes: 0 all good, 1 some inputs failed, 2 usage error, 130 interrupted.
    """
    params = ctx.params
    try:
        value_options = {opt for p in ctx.command.params
                         if getattr(p, "param_type_name", "") == "option" and not getattr(p, "is_flag", False)
                         for opt in p.opts}
        chain = ops_from_args(ctx.meta.get("gpupipe_raw_args", []), params, value_options)
        if spec_file is not None:
            if chain or format or name_template:
                raise UsageError("--spec replaces op flags, --format and --name-template; put those in the spec file")
            spec = Spec.from_toml(spec_file)
        else:
            spec = Spec.single(chain, format=format, quality=quality, template=name_template,
                               background=background)
        memory = None if max_memory.strip().lower() == "auto" else parse_memory(max_memory)
        device_memory = parse_memory(gpu_memory) if gpu_memory else None
        metrics_host, metrics_port_number = "127.0.0.1", None
        if metrics_port:
            from .metrics import parse_address      # prometheus_client: imported only by runs that serve metrics
            metrics_host, metrics_port_number = parse_address(metrics_port)
        api.check_numbers(workers=workers, max_memory=memory, gpu_memory=device_memory, max_pixels=max_pixels,
                          retries=retries, stall_timeout=stall_timeout)
        if output_format not in ("text", "json"):
            raise UsageError(f"--output-format must be text or json, got {output_format!r}"
                             f"{did_you_mean(output_format, ('text', 'json'))}")
        _check_one_stdout({"--report": report, "--log": log_file, "--trace": trace, "--metrics-file": metrics_file,
                           "--report-html": report_html,
                           "--output-format json": Path(STDOUT) if output_format == "json" else None})
        if dry_run:
            sources.check_inputs(inputs)
            spec.check_resources(max_pixels=max_pixels)
            _dry_run(inputs, output, spec, choose_backend(backend, workers=workers or usable_cores()).description,
                     not no_recursive, hidden, all_files)
            return
        side = _SideFiles.open(report, log_file, trace, {
            "gpupipe": __version__, "command": ["gpupipe", "run", *ctx.meta.get("gpupipe_raw_args", [])],
            "spec": spec.to_dict(), "spec_hash": spec.hash()}, failures=output_format == "json")
        if report_html is not None:
            from .htmlreport import HtmlReport
            try:
                side.html = HtmlReport(report_html, [v.name or "output" for v in spec.variants], max_pixels)
            except GpupipeError:
                side.abandon()
                raise
    except GpupipeError as exc:
        _exit_with_error(exc)
    _log_to_stderr(verbose)
    result = None
    try:
        with ProgressDisplay(quiet=quiet) as display:
            # api.run validates everything else (inputs, output, backend, journal lock) before any work.
            result = api.run(
                inputs, output, spec, backend=backend, workers=workers, max_memory=memory, gpu_memory=device_memory,
                gpu_decode=gpu_decode, gpu_encode=gpu_encode, max_pixels=max_pixels,
                recursive=not no_recursive, include_hidden=hidden, all_files=all_files, on_error=on_error,
                order=order, on_progress=display.update, keep_outcomes=False, retries=retries,
                stall_timeout=stall_timeout, force=force, retry_failed=retry_failed, verify=verify,
                metrics_port=metrics_port_number, metrics_host=metrics_host, metrics_file=metrics_file,
                engine=engine, ray_address=ray_address, overwrite=overwrite, spans=trace is not None,
                on_outcome=side.on_outcome,
                journal=False if no_journal else (journal_path or True))
    except SystemFailure as exc:           # before any work: e.g. no space for the journal
        side.abandon()
        _exit_with_error(exc, code=1)
    except GpupipeError as exc:
        side.abandon()
        _exit_with_error(exc)
    except KeyboardInterrupt:
        _abort(side, backend)
    side.close(result.summary)
    print_summary(result.summary, Console(stderr=True), failures_only=quiet)
    if side.failures is not None:
        print(json.dumps({"summary": result.summary.to_dict(), "failures": side.failures}, ensure_ascii=False))
    raise typer.Exit(result.exit_code)


class _SideFiles:
    """The report, log and trace of one CLI run: opened before any work, fed every outcome,
    closed at the end with any write failure (a full disk) added to the summary, not raised."""

    def __init__(self) -> None:
        self.writer: ReportWriter | None = None
        self.recorders: list[StateLog | ChromeTrace] = []
        self.failures: list[dict] | None = None      # --output-format json: every failed input, for stdout
        self.html = None                              # --report-html: an htmlreport.HtmlReport

    @classmethod
    def open(cls, report: Path | None, log_file: Path | None, trace: Path | None,
             header: dict[str, Any], failures: bool = False) -> "_SideFiles":
        side = cls()
        if failures:
            side.failures = []
        try:
            if report is not None:
                side.writer = ReportWriter(report, header)
            if log_file is not None:
                side.recorders.append(StateLog(log_file))
            if trace is not None:
                side.recorders.append(ChromeTrace(trace))
        except GpupipeError:
            side.abandon()
            raise
        return side

    @property
    def on_outcome(self):
        sinks = ([self.writer.add] if self.writer else []) + self.recorders
        if self.failures is not None:
            sinks.append(self._note_failure)
        if self.html is not None:
            sinks.append(self.html)
        if not sinks:
            return None
        return lambda outcome: [sink(outcome) for sink in sinks]

    def _note_failure(self, outcome) -> None:
        if outcome.status == "failed":
            self.failures.append({"path": outcome.path, "error_class": outcome.error_class,
                                  "message": outcome.message})

    def close(self, summary) -> None:
        """Log and trace first, so the report's summary lists their failures too."""
        for side_file in self.recorders:
            _close_into(side_file.close, summary)
        if self.html is not None:
            _close_into(lambda: self.html.close(summary), summary)
        if self.writer:
            _close_into(lambda: self.writer.close(summary), summary)

    def close_aborted(self, backend: str) -> None:
        for side_file in self.recorders:
            _close_into(side_file.close, None)
        if self.html is not None:
            _close_into(lambda: self.html.close_aborted(backend), None)
        if self.writer:
            _close_into(lambda: self.writer.close_aborted(backend), None)

    def abandon(self) -> None:
        for side_file in [*self.recorders, *([self.writer] if self.writer else []), *([self.html] if self.html else [])]:
            side_file.abandon()


def _close_into(close, summary) -> None:
    try:
        close()
    except GpupipeError as exc:
        if summary is not None:
            summary.side_file_errors.append(str(exc))
        else:
            err.print(f"[red]error:[/] {escape(printable(str(exc)))}", highlight=False, soft_wrap=True)


def _abort(side: _SideFiles, backend: str) -> None:
    """The second Ctrl+C: the report still gets what was done so far (marked aborted), then exit 130."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # a third Ctrl+C must not cut the report short
    side.close_aborted(backend)
    err.print("[red]aborted[/] (second interrupt): in-flight work dropped, temporary files removed")
    # Worker threads may be inside libjpeg/OpenCV: tearing the interpreter down under them
    # can abort the process (C++ terminate). The journal keeps what it recorded; leave at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def _log_to_stderr(verbose: int) -> None:
    """gpupipe's log on stderr: warnings and errors, and with -v its INFO lines, with -vv its DEBUG."""
    import logging

    class Stderr(logging.StreamHandler):
        """Writes to whatever sys.stderr is when a record comes (a test may swap it)."""

        stream = property(lambda self: sys.stderr, lambda self, value: None)

    logger = logging.getLogger("gpupipe")
    handler = Stderr()
    handler.setFormatter(logging.Formatter("gpupipe: %(message)s" if verbose < 2 else
                                           "gpupipe %(asctime)s %(threadName)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if not verbose else logging.INFO if verbose == 1 else logging.DEBUG)


def _check_one_stdout(side_files: dict[str, Optional[Path]]) -> None:
    to_stdout = [option for option, path in side_files.items() if path is not None and str(path) == STDOUT]
    if len(to_stdout) > 1:
        raise UsageError(f"{' and '.join(to_stdout)} both ask for stdout ('-'); give at most one of them '-'")


def _dry_run(inputs, output: Path, spec: Spec, backend: str, recursive: bool, hidden: bool, all_files: bool) -> None:
    out = Console()
    out.print(f"[bold]backend[/]: {backend}")
    for line in spec.describe():
        out.print(f"[bold]variant[/] {escape(line)}", highlight=False)
    count = 0
    for item in sources.discover(inputs, recursive=recursive, include_hidden=hidden, all_files=all_files,
                                 exclude=[output]):
        if isinstance(item, sources.SourceFile):
            count += 1
            guess = codecs.format_from_name(item.relative.name)
            try:
                targets = ", ".join(printable(str(output / v.output_path(item.relative, guess)))
                                    for v in spec.variants)
            except GpupipeError as exc:
                targets = printable(f"(fails: {exc})")
            out.print(f"{printable(str(item.path))} → {targets}", highlight=False, markup=False)
        elif isinstance(item, sources.Skipped):
            out.print(printable(f"skip {item.path}: {item.reason}"), highlight=False, markup=False)
        else:
            out.print(f"[yellow]problem[/] {escape(printable(f'{item.path}: {item.message}'))}", highlight=False)
    out.print(f"[bold]{count}[/] input(s); nothing written (--dry-run)")


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
        _exit_with_error(exc)
    out = Console()
    table = Table("path", "format", "bytes", "size", "mode", "orient.", "problems")
    bad = 0
    for item in sources.discover(inputs, recursive=not no_recursive, include_hidden=hidden, all_files=all_files):
        if not isinstance(item, sources.SourceFile):
            continue
        row: dict[str, Any] = {"path": str(item.path), "bytes": item.size}
        try:
            info = codecs.probe(sources.read_bytes(item.path), max_pixels=max_pixels)
            row.update(format=info.format, width=info.width, height=info.height, mode=info.mode,
                       orientation=info.orientation, problems=list(info.problems))
        except GpupipeError as exc:
            row.update(problems=[f"{getattr(exc, 'error_class', 'error')}: {exc}"])
            bad += 1
        if as_json:
            print(json.dumps(row), flush=True)
        else:
            size = f"{row['width']}×{row['height']}" if "width" in row else "—"
            table.add_row(escape(printable(row["path"])), row.get("format", "—"), str(row["bytes"]), size,
                          row.get("mode", "—"), str(row.get("orientation", "—")),
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
        _exit_with_error(UsageError("--json and --html - both ask for stdout; give --html a file"))
    try:
        journal_file = journal_path or default_path(output)
        data = journal_report(journal_file)
        if html_file is not None:
            from .htmlreport import write_from_journal
            write_from_journal(journal_file, html_file, max_pixels=max_pixels)
    except GpupipeError as exc:
        _exit_with_error(exc)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    out = Console(stderr=str(html_file) == STDOUT)        # stdout holds the page: the words go to stderr
    states = data["inputs"]
    out.print(f"[bold]journal[/] {escape(printable(data['journal']))}")
    out.print(f"inputs done: {states.get('ok', 0)}, failed: {states.get('failed', 0)}; "
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
    """Document every op and its parameters (as used in spec files)."""
    import dataclasses
    if markdown:
        from .reference import ops_table
        print(ops_table())
        return
    out = Console()
    chosen = op_catalogue.OP_CLASSES
    if name:
        key = op_catalogue.ALIASES.get(name, name).replace("-", "_")
        if key not in chosen:
            hint = did_you_mean(key, [*chosen, *op_catalogue.ALIASES])
            err.print(f"[red]error:[/] unknown op {escape(repr(name))}{escape(hint)}; known: {', '.join(chosen)}")
            raise typer.Exit(2)
        chosen = {key: chosen[key]}
    for op_name, cls in chosen.items():
        out.print(f"[bold cyan]{op_name}[/]  {cls.summary}", highlight=False)
        if cls is op_catalogue.Thumbnail:
            out.print("    size: int  (or width, height)", highlight=False)
            continue
        for field in dataclasses.fields(cls):
            default = field.default if field.default is not dataclasses.MISSING else "required"
            out.print(f"    {field.name}: {field.type} = {default!r}", highlight=False, markup=False)
    if not name:
        out.print("\nIn a spec file: ops = [{ op = \"thumbnail\", size = 256 }, { op = \"sharpen\", amount = 0.5 }]")


@app.command()
def doctor() -> None:
    """Report the libraries, codecs and devices gpupipe would use, and which backend `auto` picks."""
    import platform

    import cv2
    import numpy
    import PIL
    import simplejpeg
    from PIL import features

    from .backends import cuda_report
    from .backends.cuda.jpeg import nvimgcodec_unavailable_reason
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
    table.add_row("write formats", ", ".join(codecs.available_formats()))
    for label, fact in cuda_report().items():
        table.add_row(label, escape(fact))
    auto = select_backend("auto", workers=cores)
    table.add_row("--backend auto", auto.describe())
    auto.close()
    nvjpeg = auto.name == "gpu" and nvimgcodec_unavailable_reason() is None
    decode = "CPU (libjpeg-turbo, Pillow)" + ("; with --gpu-decode, GPU (nvJPEG) for full-size 8-bit JPEGs"
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

    from .backends import choose_backend
    from .engine.pool import WorkerPool
    from .engine.unit import Work
    from .engine.writer import WritePolicy
    from .ops import Thumbnail
    from .spec import Spec

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


def version_callback(value: bool) -> None:
    if value:
        print("\n".join(versions()))
        raise typer.Exit()


def versions() -> list[str]:
    """What --version says: gpupipe, then the libraries whose versions change its results or speed.
    CuPy is named from its install, not imported (CUDA is looked at by `gpupipe doctor`)."""
    import platform
    from importlib.metadata import distributions

    import cv2
    import numpy
    import PIL
    import simplejpeg
    from PIL import features
    lines = [f"gpupipe {__version__}",
             f"Python {platform.python_version()}, NumPy {numpy.__version__}, Pillow {PIL.__version__} "
             f"(libjpeg-turbo {features.version('libjpeg_turbo') or 'absent'}), simplejpeg {simplejpeg.__version__}, "
             f"OpenCV {cv2.__version__}"]
    cupy = sorted(f"{d.metadata['Name']} {d.version}" for d in distributions()
                  if (d.metadata["Name"] or "").lower().startswith("cupy"))
    lines.append(f"{', '.join(cupy)} (CUDA: see `gpupipe doctor`)" if cupy else "CuPy not installed (CPU only)")
    return lines


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                       help="Show the version and exit.")) -> None:
    """Process whole directories of images on a CUDA GPU or the CPU, with the same results."""


def main() -> None:
    try:
        app()
    except SystemExit as done:
        from .backends.cuda.jpeg import exit_before_teardown
        if isinstance(done.code, str) and "nvidia.nvimgcodec" in sys.modules:
            print(done.code, file=sys.stderr)
        exit_before_teardown(done.code if isinstance(done.code, int) else (0 if done.code is None else 1))
        raise
