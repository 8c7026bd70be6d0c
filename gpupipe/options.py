"""The options of a run, defined once.

``Options`` below is the one definition of every option: its name, type, default, help, command-line
spelling, help panel and environment variable. Made from it:

- the keyword arguments of ``gpupipe.run`` (typed: ``**options: Unpack[Options]``), checked and
  given their defaults by ``resolve``;
- the flags of ``gpupipe run`` (gpupipe/cli/run.py generates them, grouped in panels);
- ``GPUPIPE_<NAME>`` environment variables (``GPUPIPE_WORKERS=4``): read by the CLI and the API
  for every option not given explicitly;
- the options table in docs/usage.md (``gpupipe.reference.options_table``).

Options marked ``api=False`` belong to the command line alone (where its output goes, how much
it says, the flags that build a one-variant spec); options without flags belong to the API alone.
Adding an option: one entry here, and the code that uses it.
"""

import math
import os
import re
import typing
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Mapping, TypedDict

from .backends import BackendName
from .codecs.formats import DEFAULT_MAX_PIXELS
from .errors import UsageError, did_you_mean
from .records import dataclass

Engine = Literal["local", "ray"]
Order = Literal["input", "smallest-first", "largest-first", "newest-first"]
ORDERS = typing.get_args(Order)
OnError = Literal["continue", "stop"]
Decoder = Literal["auto", "turbo", "pillow", "nvimgcodec", "dali"]
OutputFormat = Literal["text", "json"]

OUTPUT, INPUTS, EXECUTION, RESUME, OBSERVE, SHOW = (
    "Output", "Inputs", "Execution", "Journal and resume", "Reports and metrics", "What it prints")
ENV_PREFIX = "GPUPIPE_"
DEFAULT_METRICS_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Option:
    """How one option is spelled, defaulted, checked and explained."""

    default: Any
    help: str
    flags: tuple[str, ...] = ()          # command-line spellings, typer-style ("--gpu-encode/--cpu-encode")
    panel: str = EXECUTION
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None     # text (command line, environment) → value
    least: float | None = None                    # numbers: value ≥ least
    above: float | None = None                    # numbers: value > above
    most: float | None = None                     # numbers: value ≤ most
    api: bool = True                              # False: a command-line option only
    count: bool = False                           # -v -v: a flag counted
    shown_default: str | None = None              # the default as help shows it, when not the value
    # filled in by the registry from the annotation
    name: str = ""
    kind: Any = None

    @property
    def env(self) -> str | None:
        return f"{ENV_PREFIX}{self.name.upper()}" if self.flags else None

    @property
    def choices(self) -> tuple[str, ...]:
        return _literal_values(self.kind)

    @property
    def where(self) -> str:
        """How messages name the option: its keyword and its flag."""
        flag = self.flags[0].split("/")[0] if self.flags else None
        return f"{self.name} ({flag})" if flag and self.api else (flag or self.name)


def parse_size(text: str, what: str = "--max-memory") -> int | None:
    """'512MB', '2G', '300m', '1.5GiB' or a plain number of megabytes; 'auto' → None (the default)."""
    if str(text).strip().lower() == "auto":
        return None
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", str(text).lower())
    if not match:
        raise UsageError(f"{what} takes a size like 512MB or 2G, or auto, got {text!r}")
    number, unit = float(match.group(1)), match.group(2) or "m"
    size = int(number * 1024 ** " kmgt".index(unit))
    if size < 16 * 2**20:
        raise UsageError(f"{what} must be at least 16MB, got {text!r}")
    return size


def parse_address(text: str) -> tuple[str, int]:
    """'9108' → (127.0.0.1, 9108); '0.0.0.0:9108', '[::]:9108' → that host and port."""
    host, sep, port_text = str(text).strip().rpartition(":")
    host = host.strip("[]") if sep else DEFAULT_METRICS_HOST
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535 or (sep and not host):
        raise UsageError(f"--metrics-port takes PORT (1-65535) or HOST:PORT, got {text!r}")
    return host, port


def _gpu_memory(text: str) -> int | None:
    return parse_size(text, "--gpu-memory")


def _journal(text: str) -> bool | Path:
    """A path, or yes/no (GPUPIPE_JOURNAL=0: no journal)."""
    lowered = str(text).strip().lower()
    if lowered in ("0", "false", "no", "off"):
        return False
    return True if lowered in ("1", "true", "yes", "on") else Path(text)


class Options(TypedDict, total=False):
    """Every option of a run. The API takes them as keywords, the CLI as flags, the environment
    as GPUPIPE_<NAME>; each is defined here once."""

    # ------------------------------------------------------------------ output
    format: Annotated[str | None, Option(
        None, "jpeg, png, webp, tiff (avif where Pillow has it).", ("--format", "-f"), OUTPUT, api=False,
        shown_default="keep the input's format, PNG for GIF/BMP")]
    quality: Annotated[int, Option(85, "JPEG/WebP/AVIF quality 1-100.", ("--quality", "-q"), OUTPUT, api=False,
                                   least=1, most=100)]
    name_template: Annotated[str | None, Option(
        None, "Output name, from {stem} {ext} {name} {suffix} {variant}.", ("--name-template",), OUTPUT,
        api=False, shown_default="{stem}.{ext}")]
    background: Annotated[str, Option(
        "#ffffff", "Colour for --pad and for flattening alpha into formats without it (JPEG).", ("--background",),
        OUTPUT, api=False)]
    overwrite: Annotated[bool, Option(
        False, "Replace files already at output paths that gpupipe's journal did not write (without it: keep "
        "them; that input fails as output_exists). Inputs are never replaced.", ("--overwrite",), OUTPUT)]

    # ------------------------------------------------------------------ inputs
    recursive: Annotated[bool, Option(True, "Descend into subdirectories.", ("--recursive/--no-recursive",), INPUTS)]
    include_hidden: Annotated[bool, Option(False, "Include hidden files and directories.", ("--hidden",), INPUTS)]
    all_files: Annotated[bool, Option(False, "Consider every file, whatever its extension; non-images are "
                                             "skipped.", ("--all-files",), INPUTS)]
    max_pixels: Annotated[int, Option(DEFAULT_MAX_PIXELS, "Refuse images declaring more pixels "
                                      "(decompression-bomb guard).", ("--max-pixels",), INPUTS, least=1)]
    order: Annotated[Order, Option("input", "Which inputs go first: input (as found, streaming), smallest-first, "
                                   "largest-first or newest-first (these list every input first).", ("--order",),
                                   INPUTS)]

    # ------------------------------------------------------------------ execution
    backend: Annotated[BackendName, Option("auto", "auto (GPU when CUDA is usable, else CPU), cpu or gpu.",
                                           ("--backend",))]
    workers: Annotated[int | None, Option(
        None, "Worker processes, each taking a chunk of inputs at a time through read, decode, ops, encode and "
        "write (on the GPU each with its own device context); a codec that crashes costs one input (error class "
        "'crashed'), not the run.", ("--workers", "-j"), least=1, shown_default="the usable CPU cores")]
    max_memory: Annotated[int | None, Option(
        None, "Cap on images held in the pipeline, over all workers (e.g. 2GB; the API takes bytes). auto: 256MB "
        "per worker, at least 512MB, and above 512MB only within a quarter of the memory this process may use.",
        ("--max-memory",), parse=parse_size, least=1, shown_default="auto", metavar="SIZE")]
    gpu_memory: Annotated[int | None, Option(
        None, "Cap on GPU memory (e.g. 8GB; the API takes bytes), shared out between the workers; a batch that "
        "does not fit is split.", ("--gpu-memory",), parse=_gpu_memory, least=1,
        shown_default="what the device has", metavar="SIZE")]
    decoder: Annotated[Decoder, Option(
        "auto", "What decodes JPEGs: turbo (libjpeg-turbo; Pillow for the kinds it lacks), pillow (Pillow for "
        "every JPEG), nvimgcodec (nvJPEG on the GPU backend: much faster; pip install 'gpupipe[nvimgcodec]') or "
        "dali (NVIDIA DALI in batches, on the GPU with the GPU backend, else on the CPU; pip install "
        "'gpupipe[dali]'). auto is turbo. The GPU decoders and DALI turn a JPEG with corrupt image data into "
        "noise instead of failing it.", ("--decoder",))]
    gpu_encode: Annotated[bool, Option(
        False, "With the GPU backend and nvImageCodec installed, encode JPEG outputs on the GPU (nvJPEG, same "
        "quality, 4:2:0): only the files cross PCIe, but their bytes differ from libjpeg-turbo's.",
        ("--gpu-encode/--cpu-encode",))]
    on_error: Annotated[OnError, Option("continue", "continue (record the failure, go on) or stop (end the run at "
                                        "the first failure).", ("--on-error",))]
    retries: Annotated[int, Option(3, "Extra attempts after a transient read error (EIO, timeouts, network "
                                   "filesystems), with exponential backoff.", ("--retries",), least=0)]
    stall_timeout: Annotated[float, Option(
        300.0, "If no stage makes progress this long while work is in flight (a hung mount, a deadlock), report "
        "every stage's state and stop.", ("--stall-timeout",), above=0, metavar="SECONDS")]
    engine: Annotated[Engine, Option("local", "local (worker processes on this machine) or ray (the same "
                                     "pipeline on a Ray cluster; pip install 'gpupipe[ray]').", ("--engine",))]
    ray_address: Annotated[str | None, Option(
        None, "Ray cluster to join with --engine ray (e.g. auto, or ray://head:10001).", ("--ray-address",),
        metavar="ADDR", shown_default="start a local one for this run")]
    fsync: Annotated[bool, Option(True, "Flush outputs and their directories to disk before the journal records "
                                        "them (off: faster, but a power cut can lose outputs the journal "
                                        "counts as done).")]

    # ------------------------------------------------------------------ journal and resume
    journal: Annotated[bool | str | Path, Option(
        True, "SQLite journal of every input; a re-run skips what is done and unchanged (the API: True for "
        "OUT/.gpupipe/journal.sqlite, a path, or False for none).", ("--journal",), RESUME, metavar="PATH",
        parse=_journal, shown_default="OUT/.gpupipe/journal.sqlite")]
    no_journal: Annotated[bool, Option(False, "Keep no journal: process everything, remember nothing.",
                                       ("--no-journal",), RESUME, api=False)]
    force: Annotated[bool, Option(False, "Redo inputs the journal says are done.", ("--force",), RESUME)]
    retry_failed: Annotated[bool, Option(False, "Retry inputs that failed in an earlier run (they are skipped "
                                                "otherwise, and the exit code stays 1).", ("--retry-failed",),
                                         RESUME)]
    verify: Annotated[bool, Option(False, "Before skipping an input done before, compare its outputs' checksums "
                                          "with the journal's (their sizes are always compared); a mismatch "
                                          "redoes it.", ("--verify",), RESUME)]

    # ------------------------------------------------------------------ reports and metrics
    report: Annotated[Path | None, Option(None, "Write every input's outcome as JSON ('-': stdout).",
                                          ("--report",), OBSERVE, metavar="FILE.json", api=False)]
    report_html: Annotated[Path | None, Option(
        None, "One self-contained page about the run, to look at: throughput over time, time and CPU per stage, "
        "failures, a contact sheet of outputs.", ("--report-html",), OBSERVE, metavar="FILE.html", api=False)]
    log: Annotated[Path | None, Option(None, "JSON lines: every input's state transitions with timestamps and "
                                             "durations ('-': stdout).", ("--log",), OBSERVE, metavar="FILE",
                                       api=False)]
    trace: Annotated[Path | None, Option(None, "Chrome/Perfetto trace: one span per input per stage, on the "
                                               "worker that ran it ('-': stdout).", ("--trace",), OBSERVE,
                                         metavar="FILE.json", api=False)]
    spans: Annotated[bool, Option(False, "Keep each input's stage spans (FileOutcome.spans: stage, start, end, "
                                         "worker), which a trace draws; they cost the run's own process about a "
                                         "seventh of its time per input.")]
    metrics_port: Annotated[int | str | None, Option(
        None, "Serve Prometheus metrics at http://127.0.0.1:PORT/metrics while the run goes (only this machine "
        "can scrape it; 0.0.0.0:PORT listens on every interface). A port in use is an error before any work.",
        ("--metrics-port",), OBSERVE, metavar="[HOST:]PORT")]
    metrics_host: Annotated[str, Option(DEFAULT_METRICS_HOST, "The address metrics_port listens on, when "
                                                              "metrics_port does not name one.")]
    metrics_file: Annotated[str | Path | None, Option(
        None, "Write the Prometheus metrics there at the end, also after a failure or Ctrl+C (text format, for "
        "node_exporter's textfile collector; '-': stdout).", ("--metrics-file",), OBSERVE, metavar="FILE.prom",
        parse=Path)]
    keep_outcomes: Annotated[bool, Option(True, "Keep every input's FileOutcome in result.outcomes (pass False "
                                                "on huge runs and use on_outcome instead).")]

    # ------------------------------------------------------------------ what it prints
    dry_run: Annotated[bool, Option(False, "Show the plan and every input → output; write nothing.",
                                    ("--dry-run",), SHOW, api=False)]
    progress: Annotated[bool, Option(False, "Draw a progress line on stderr while the run goes (the CLI always "
                                            "does, unless --quiet).")]
    quiet: Annotated[bool, Option(False, "No progress, no summary; failures and errors only.", ("--quiet",), SHOW,
                                  api=False)]
    verbose: Annotated[int, Option(0, "More detail on stderr: -v how the run is set up (backend, workers, "
                                      "memory), -vv each chunk of work too.", ("--verbose", "-v"), SHOW,
                                   api=False, count=True)]
    output_format: Annotated[OutputFormat, Option(
        "text", "json: also print the summary and every failure (path, error class, message) as one JSON object "
        "on stdout when the run ends, for scripts.", ("--output-format",), SHOW, api=False)]


@cache
def registry() -> dict[str, Option]:
    """Every option by name, in the order defined, with its name and type filled in."""
    hints = typing.get_type_hints(Options, include_extras=True)
    found = {}
    for name, hint in hints.items():
        kind, option = typing.get_args(hint)
        found[name] = Option(**{**option.__dict__, "name": name, "kind": kind})
    return found


def api_options() -> dict[str, Option]:
    return {name: option for name, option in registry().items() if option.api}


def resolve(given: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every API option's value: as given, else from GPUPIPE_<NAME>, else the default; each checked.
    UsageError for an unknown keyword (with a suggestion), a command-line option, or a bad value."""
    environ = os.environ if environ is None else environ
    known = api_options()
    for name in given:
        if name not in known:
            if name in registry():
                raise UsageError(f"{name} is an option of the command line, not of gpupipe.run "
                                 "(the spec says formats, quality and names)")
            raise UsageError(f"gpupipe.run has no option {name!r}{did_you_mean(name, known)}")
    values = {}
    for name, option in known.items():
        if name in given:
            values[name] = check(option, given[name])
        elif option.env and option.env in environ:
            values[name] = from_text(option, environ[option.env], source=option.env)
        else:
            values[name] = option.default
    return values


def from_text(option: Option, text: str, source: str | None = None) -> Any:
    """A value written as text (an environment variable, a flag's value), parsed and checked."""
    where = source or option.where
    if option.parse is not None:
        return check(option, option.parse(text), where)
    kinds = kinds_of(option.kind)
    if bool in kinds:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise UsageError(f"{where} takes true or false (1/0, yes/no), got {text!r}")
    for kind in (int, float):
        if kind in kinds:
            try:
                return check(option, kind(text), where)
            except ValueError:
                raise UsageError(f"{where} takes a {'whole ' if kind is int else ''}number, got {text!r}") from None
    if Path in kinds:
        return Path(text)
    return check(option, text, where)


def check(option: Option, value: Any, where: str | None = None) -> Any:
    """The value if the option takes it, else UsageError naming the option, or ``where`` the value
    came from (an environment variable), with a near miss."""
    kinds = kinds_of(option.kind)
    where = where or option.where
    if value is None and type(None) in kinds:
        return None
    choices = option.choices
    if choices:
        if value not in choices:
            raise UsageError(f"{where} must be one of {', '.join(choices)}, got {value!r}"
                             f"{did_you_mean(str(value), choices)}")
        return value
    if isinstance(value, bool):
        if bool not in kinds:
            raise UsageError(f"{where} must be {_wanted(kinds)}, got {value!r}")
        return value
    if isinstance(value, int) and (int in kinds or float in kinds) or isinstance(value, float) and float in kinds:
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{where} must be a finite number, got {value!r}")
        if option.least is not None and value < option.least:
            raise UsageError(f"{where} must be {'a whole number ' if int in kinds else ''}≥ "
                             f"{option.least:g}, got {value!r}")
        if option.most is not None and value > option.most:
            raise UsageError(f"{where} must be at most {option.most:g}, got {value!r}")
        if option.above is not None and value <= option.above:
            raise UsageError(f"{where} must be a number above {option.above:g}, got {value!r}")
        return value
    if isinstance(value, str) and (str in kinds or Path in kinds) or isinstance(value, Path) and Path in kinds:
        return value
    raise UsageError(f"{where} must be {_wanted(kinds)}, got {value!r}")


def _wanted(kinds: tuple[type, ...]) -> str:
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "text", Path: "a path"}
    return " or ".join(words[k] for k in kinds if k in words)


@cache
def kinds_of(hint: Any) -> tuple[type, ...]:
    """The plain types a hint allows: int | None → (int, NoneType); a Literal → (str,)."""
    if typing.get_origin(hint) is Literal:
        return (str,)
    args = typing.get_args(hint)
    return tuple(a for a in args) if args else (hint,)


def _literal_values(hint: Any) -> tuple[str, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else ()


