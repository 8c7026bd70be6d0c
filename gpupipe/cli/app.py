"""The command line's application object, its error output and its entry point."""

from __future__ import annotations

import functools
import re
import sys

import typer

from .. import __version__
from ..errors import GpupipeError
from ..sidefiles import printable

app = typer.Typer(help="Process whole directories of images: resize, filters, watermarks, format conversion — "
                       "on a CUDA GPU or the CPU, with the same results.",
                  no_args_is_help=True, rich_markup_mode="rich")


@functools.cache
def stderr_console():
    """The console on stderr for errors, made when the first is said: a run that says nothing never
    loads rich (30-40 ms of its start)."""
    from rich.console import Console
    return Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    stderr_console().print(f"[red]error:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)


_MARKUP_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def escape(text: str) -> str:
    """``text`` as rich prints it literally: rich.markup.escape's rule (a tag-like ``[...]`` and the
    backslashes before it escaped), kept here because the help of every option and op flag is
    escaped as the CLI is built, and importing rich.markup would load rich for every run."""
    text = _MARKUP_TAG.sub(lambda found: f"{found[1]}{found[1]}\\{found[2]}", text)
    return text + "\\" if text.endswith("\\") and not text.endswith("\\\\") else text


def exit_with_error(exc: GpupipeError, code: int = 2) -> None:
    """One line on stderr, then the exit code: 2 for usage errors, 1 for system failures."""
    print_error(str(exc))
    raise typer.Exit(code)



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
        from ..backends.cuda.jpeg import exit_before_teardown
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        status = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        exit_before_teardown(status)
        _exit_without_teardown(status)
        raise SystemExit(status) from None       # its message, if any, is printed already


def _exit_without_teardown(status: int) -> None:
    """End the process with ``status`` once the command is over and everything it wrote is closed:
    the exit handlers still run (logging's, multiprocessing's, Ray's), but the interpreter does not
    free every module and object first. That teardown took 50 ms of a small run's 0.3 s (and 90 ms
    of CPU) for the libraries a run imports. Returns, leaving the usual exit, while a thread
    that is not a daemon still runs (the interpreter would wait for it) or where CPython's
    exit handlers cannot be run by hand."""
    import atexit
    import os
    import threading
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None or any(not t.daemon for t in threading.enumerate()
                                        if t is not threading.main_thread()):
        return
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):        # a closed pipe (`gpupipe … | head`) or stream
            pass
    os._exit(status)
