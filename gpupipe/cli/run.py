"""`gpupipe run`: its flags are generated from the op registry (the op flags, ``opflags``) and
the options registry (``gpupipe.options``: every other flag, with its help panel and its
GPUPIPE_<NAME> environment variable); this module only turns their values into an
``api.run`` call, with the side files (report, log, trace, HTML page) around it."""

from __future__ import annotations

import inspect
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperCommand

from .. import __version__, api, codecs, options as run_options, sources
from ..backends import choose_backend
from ..engine.host import usable_cores
from ..errors import GpupipeError, SystemFailure, UsageError
from ..observe import ProgressDisplay
from ..report import ReportWriter, print_summary
from ..sidefiles import STDOUT, printable
from ..spec import Spec
from ..tracing import ChromeTrace, StateLog
from . import opflags
from .app import app, escape, exit_with_error, print_error, stderr_console


class OrderedOpsCommand(TyperCommand):
    """Keeps the raw arguments so op flags can be applied in command-line order."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        ctx.meta["gpupipe_raw_args"] = list(args)
        return super().parse_args(ctx, args)


RUN_EXAMPLES = """[bold]Examples[/]

  gpupipe run photos/ -o thumbs/ --thumbnail 256 -f webp            [dim]# gallery thumbnails[/]

  gpupipe run shop/ -o web/ --spec examples/web.toml                [dim]# several variants per photo[/]

  gpupipe run 'scans/**/*.png' -o out/ --resize 1600x1600 --sharpen --watermark-text '© me'

  gpupipe run big/ -o out/ --backend gpu --decoder nvimgcodec --report run.json   [dim]# on the GPU, with a report[/]

  gpupipe run photos/ -o thumbs/ --thumbnail 256 -f webp            [dim]# again: resumes, skipping what is done[/]

Every option can also be set in the environment as GPUPIPE_<OPTION>, e.g. GPUPIPE_WORKERS=4.
"""

# What the command takes besides op flags and options: the inputs, OUT, or a spec file.
BASE_PARAMETERS = [
    inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
    inspect.Parameter("inputs", inspect.Parameter.KEYWORD_ONLY, annotation=list[str], default=typer.Argument(
        ..., metavar="IN", show_default=False,
        help="Directories (searched recursively), image files or glob patterns like 'shots/**/*.jpg' (quote them).")),
    inspect.Parameter("output", inspect.Parameter.KEYWORD_ONLY, annotation=Path, default=typer.Option(
        ..., "--output", "-o", help="Output directory; input folder structure is mirrored under it.",
        rich_help_panel=run_options.OUTPUT)),
    inspect.Parameter("spec_file", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path], default=typer.Option(
        None, "--spec", metavar="FILE.toml", rich_help_panel=run_options.OUTPUT,
        help="TOML spec with several named variants per input (replaces the op flags, --format and "
             "--name-template).")),
]


def option_parameters() -> list[inspect.Parameter]:
    """Every option that has flags, as a typer parameter: its panel, help and environment variable."""
    return [_option_parameter(option) for option in run_options.registry().values() if option.flags]


def _option_parameter(option: run_options.Option) -> inspect.Parameter:
    kinds = run_options.kinds_of(option.kind)
    common = dict(help=escape(option.help), rich_help_panel=option.panel, envvar=option.env, show_envvar=False,
                  metavar=option.metavar)
    if option.shown_default is not None:
        common["show_default"] = option.shown_default
    if option.count:
        annotation, default = int, typer.Option(option.default, *option.flags, count=True, show_default=False,
                                                **{**common, "metavar": ""})
    elif bool in kinds and option.parse is None:
        annotation, default = bool, typer.Option(option.default, *option.flags, **common)
    elif option.parse is None and option.kind in (int, float, int | None, float | None):
        annotation = Optional[int] if int in kinds else Optional[float]
        default = typer.Option(option.default, *option.flags, **common)
    elif option.parse is None and Path in kinds and str not in kinds:
        annotation, default = Optional[Path], typer.Option(option.default, *option.flags, **common)
    else:                     # text: parsed and checked by the options registry, with its messages
        shown = None if option.default is None or isinstance(option.default, bool) else str(option.default)
        annotation, default = Optional[str], typer.Option(shown, *option.flags, **common)
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def _option_values(ctx: typer.Context, params: dict[str, Any]) -> dict[str, Any]:
    """The options' values from click's: text parsed, each checked, as gpupipe.run takes them;
    a bad value is named by where it came from (the flag, or its environment variable)."""
    values = {}
    for name, option in run_options.registry().items():
        if not option.flags:
            continue
        value = params[name]
        source = ctx.get_parameter_source(name)            # typer's own copy of click's ParameterSource
        where = option.env if source is not None and source.name == "ENVIRONMENT" else None
        if value is None:
            values[name] = option.default
        elif isinstance(value, str) and (option.parse is not None or option.choices or str not in
                                         run_options.kinds_of(option.kind)):
            values[name] = run_options.from_text(option, value, where)
        else:
            values[name] = run_options.check(option, value, where)
    return values


def run(ctx: typer.Context, **params: Any) -> None:
    """Process images: gpupipe run IN [IN...] -o OUT \\[op flags] [--format F] [--quality Q].

    Exit codes: 0 all good, 1 some inputs failed, 2 usage error, 130 interrupted.
    """
    raw = ctx.meta.get("gpupipe_raw_args", [])
    try:
        takes_value = {opt for p in ctx.command.params
                       if getattr(p, "param_type_name", "") == "option" and not getattr(p, "is_flag", False)
                       and not getattr(p, "count", False) for opt in p.opts}
        chain = opflags.ops_from_args(raw, params, takes_value)
        values = _option_values(ctx, params)
        if params["spec_file"] is not None:
            if chain or values["format"] or values["name_template"]:
                raise UsageError("--spec replaces op flags, --format and --name-template; put those in the spec file")
            spec = Spec.from_toml(params["spec_file"])
        else:
            spec = Spec.single(chain, format=values["format"], quality=values["quality"],
                               template=values["name_template"], background=values["background"])
        api_values = {name: value for name, value in values.items() if run_options.registry()[name].api}
        if values["no_journal"]:
            api_values["journal"] = False
        run_options.resolve(api_values, environ={})          # every value checked before any file is opened
        _check_one_stdout({"--report": values["report"], "--log": values["log"], "--trace": values["trace"],
                           "--metrics-file": values["metrics_file"], "--report-html": values["report_html"],
                           "--output-format json": STDOUT if values["output_format"] == "json" else None})
        inputs, output = params["inputs"], params["output"]
        if values["dry_run"]:
            sources.check_inputs(inputs)
            spec.check_resources(max_pixels=values["max_pixels"])
            chosen = choose_backend(values["backend"], workers=values["workers"] or usable_cores())
            _dry_run(inputs, output, spec, chosen.description, values["recursive"], values["include_hidden"],
                     values["all_files"])
            return
        side = _SideFiles.open(values["report"], values["log"], values["trace"], {
            "gpupipe": __version__, "command": ["gpupipe", "run", *raw],
            "spec": spec.to_dict(), "spec_hash": spec.hash()}, failures=values["output_format"] == "json")
        if values["report_html"] is not None:
            from ..htmlreport import HtmlReport
            try:
                side.html = HtmlReport(values["report_html"], [v.name or "output" for v in spec.variants],
                                       values["max_pixels"])
            except GpupipeError:
                side.abandon()
                raise
    except GpupipeError as exc:
        exit_with_error(exc)
    _log_to_stderr(values["verbose"])
    result = None
    try:
        with ProgressDisplay(quiet=values["quiet"]) as display:
            # api.run checks everything else (inputs, output, backend, journal lock) before any work.
            result = api.run(inputs, output, spec, on_progress=display.update, on_outcome=side.on_outcome,
                             **{**api_values, "keep_outcomes": False, "spans": values["trace"] is not None})
    except SystemFailure as exc:           # before any work: e.g. no space for the journal
        side.abandon()
        exit_with_error(exc, code=1)
    except GpupipeError as exc:
        side.abandon()
        exit_with_error(exc)
    except KeyboardInterrupt:
        _abort(side, values["backend"])
    side.close(result.summary)
    print_summary(result.summary, failures_only=values["quiet"])
    if side.failures is not None:
        print(json.dumps({"summary": result.summary.to_dict(), "failures": side.failures}, ensure_ascii=False))
    raise typer.Exit(result.exit_code)


run.__signature__ = inspect.Signature([*BASE_PARAMETERS, *opflags.typer_parameters(), *option_parameters()])
app.command(cls=OrderedOpsCommand, no_args_is_help=True, epilog=RUN_EXAMPLES)(run)


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
            print_error(str(exc))


def _abort(side: _SideFiles, backend: str) -> None:
    """The second Ctrl+C: the report still gets what was done so far (marked aborted), then exit 130."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # a third Ctrl+C must not cut the report short
    side.close_aborted(backend)
    stderr_console().print("[red]aborted[/] (second interrupt): in-flight work dropped, temporary files removed")
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
    from rich.console import Console
    out = Console()
    out.print(f"[bold]backend[/]: {backend}")
    for line in spec.describe():
        out.print(f"[bold]variant[/] {escape(line)}", highlight=False)
    count = 0
    for item in sources.discover(inputs, recursive=recursive, include_hidden=hidden, all_files=all_files,
                                 exclude=[output]):
        if isinstance(item, sources.SourceFile):
            count += 1
            guess = codecs.format_from_name(item.relative)
            try:
                targets = ", ".join(printable(os.path.join(output, v.output_path(item.relative, guess)))
                                    for v in spec.variants)
            except GpupipeError as exc:
                targets = printable(f"(fails: {exc})")
            out.print(f"{printable(item.path)} → {targets}", highlight=False, markup=False)
        elif isinstance(item, sources.Skipped):
            out.print(printable(f"skip {item.path}: {item.reason}"), highlight=False, markup=False)
        else:
            out.print(f"[yellow]problem[/] {escape(printable(f'{item.path}: {item.message}'))}", highlight=False)
    out.print(f"[bold]{count}[/] input(s); nothing written (--dry-run)")

