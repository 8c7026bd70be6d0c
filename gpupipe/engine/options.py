"""What an engine is told besides inputs, output and spec: the user's options (defined, with
their defaults, in gpupipe/options.py) and what the API adds (callbacks, the journal, internals)."""

from __future__ import annotations

from dataclasses import field, fields
from typing import Any, Callable

from .. import sources
from ..options import DEFAULT_MAX_PIXELS, ORDERS, Order, registry  # noqa: F401  (re-exported)
from ..records import dataclass
from .host import usable_cores, usable_memory  # noqa: F401  (re-exported)
from .results import FileOutcome, RunSummary

DEFAULT_MAX_MEMORY = 512 * 2**20         # --max-memory auto's floor
MEMORY_PER_WORKER = 256 * 2**20          # --max-memory auto: about three decoded 12 MP photos a worker


def default_max_memory(workers: int, memory: int | None = None) -> int:
    """``--max-memory auto``: 256 MB per worker, at least 512 MB, and above 512 MB only within a
    quarter of ``memory`` (default: what this process may use, ``usable_memory``). A fixed 512 MB
    held five decoded 12 MP photos for all workers: on 16 cores W3 ran 2.3x faster with 4 GB."""
    memory = usable_memory() if memory is None else memory
    wanted = max(DEFAULT_MAX_MEMORY, MEMORY_PER_WORKER * max(1, workers))
    return wanted if memory is None else min(wanted, max(DEFAULT_MAX_MEMORY, memory // 4))


ORDER_KEYS: dict[str, Callable[[sources.SourceFile], float]] = {
    "smallest-first": lambda source: source.size,
    "largest-first": lambda source: -source.size,
    "newest-first": lambda source: -source.mtime,
}
assert ORDERS == ("input", *ORDER_KEYS)


def _default(name: str) -> Any:
    return field(default=registry()[name].default)


@dataclass
class RunOptions:
    """Everything an engine needs besides inputs, output and spec. The fields named like options
    take the options' values (gpupipe.api passes them all, ``ENGINE_OPTIONS``) and defaults."""

    workers: int = field(default_factory=lambda: usable_cores())
    max_memory: int | None = _default("max_memory")      # None: default_max_memory(workers), "auto"
    max_pixels: int = _default("max_pixels")
    recursive: bool = _default("recursive")
    include_hidden: bool = _default("include_hidden")
    all_files: bool = _default("all_files")
    on_error: str = _default("on_error")
    order: str = _default("order")
    fsync: bool = _default("fsync")
    overwrite: bool = _default("overwrite")
    keep_outcomes: bool = _default("keep_outcomes")
    stall_timeout: float = _default("stall_timeout")
    retries: int = _default("retries")
    spans: bool = _default("spans")
    # what the API adds
    on_outcome: Callable[[FileOutcome], None] | None = None
    on_progress: Callable[[RunSummary], None] | None = None
    journal: Any = None                         # a gpupipe.journal.Journal: skip what is done, record outcomes
    # internals, not options: tests set them
    retry_delay: float = 0.1                    # first backoff, doubled each attempt, with jitter
    progress_interval: float = 0.1
    device_failures: int = 3                    # consecutive GPU failures before the run moves to the CPU

    def __post_init__(self) -> None:
        if self.max_memory is None:
            self.max_memory = default_max_memory(self.workers)

    @property
    def outcomes_wanted(self) -> bool:
        """Whether anyone reads each input's outcome (a list of them, a callback, spans): where none
        does, an input that goes well is only counted and has no outcome object, and its stages
        are not timed."""
        return bool(self.keep_outcomes or self.on_outcome or self.spans)


# The options an engine takes as they are (workers and the journal the API turns into more).
ENGINE_OPTIONS = tuple(f.name for f in fields(RunOptions) if f.name in registry() and f.name not in ("workers",
                                                                                                     "journal"))
