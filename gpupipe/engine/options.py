"""What a run is told besides inputs, output and spec, shared by every engine."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import sources
from .results import FileOutcome, RunSummary

DEFAULT_MAX_MEMORY = 512 * 2**20
DEFAULT_MAX_PIXELS = 178_956_970


def usable_cores() -> int:
    """CPUs this process may run on (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:                      # not on Linux
        return os.cpu_count() or 1


ORDER_KEYS: dict[str, Callable[[sources.SourceFile], float]] = {
    "smallest-first": lambda source: source.size,
    "largest-first": lambda source: -source.size,
    "newest-first": lambda source: -source.mtime,
}
ORDERS = ("input", *ORDER_KEYS)


@dataclass
class RunOptions:
    """Everything a run needs besides inputs, output and spec; defaults are the CLI's."""

    workers: int = field(default_factory=lambda: usable_cores())
    readers: int | None = None                 # I/O threads; default 2 × workers, at most 16
    max_memory: int = DEFAULT_MAX_MEMORY
    max_pixels: int = DEFAULT_MAX_PIXELS
    recursive: bool = True
    include_hidden: bool = False
    all_files: bool = False
    on_error: str = "continue"                  # or "stop": the first failure ends the run
    order: str = "input"                        # input | smallest-first | largest-first | newest-first
    fsync: bool = True
    keep_outcomes: bool = True
    on_outcome: Callable[[FileOutcome], None] | None = None
    on_progress: Callable[[RunSummary], None] | None = None
    journal: Any = None                         # a gpupipe.journal.Journal: skip what is done, record outcomes
    stall_timeout: float = 300.0                # no stage progressing this long with work in flight: stop
    retries: int = 3                            # extra attempts after a transient read error
    retry_delay: float = 0.1                    # first backoff, doubled each attempt, with jitter
    progress_interval: float = 0.1
    device_failures: int = 3                    # consecutive GPU failures before the run moves to the CPU
