"""What a run is told besides inputs, output and spec, shared by every engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, get_args

from .. import sources
from .host import usable_cores, usable_memory  # noqa: F401  (re-exported)
from .results import FileOutcome, RunSummary

DEFAULT_MAX_MEMORY = 512 * 2**20         # --max-memory auto's floor
MEMORY_PER_WORKER = 256 * 2**20          # --max-memory auto: about three decoded 12 MP photos a worker
DEFAULT_MAX_PIXELS = 178_956_970


def default_max_memory(workers: int, memory: int | None = None) -> int:
    """``--max-memory auto``: 256 MB per worker, at least 512 MB, and above 512 MB only within a
    quarter of ``memory`` (default: what this process may use, ``usable_memory``). A fixed 512 MB
    held five decoded 12 MP photos for all workers: on 16 cores W3 ran 2.3x faster with 4 GB."""
    memory = usable_memory() if memory is None else memory
    wanted = max(DEFAULT_MAX_MEMORY, MEMORY_PER_WORKER * max(1, workers))
    return wanted if memory is None else min(wanted, max(DEFAULT_MAX_MEMORY, memory // 4))


Order = Literal["input", "smallest-first", "largest-first", "newest-first"]     # --order
ORDER_KEYS: dict[str, Callable[[sources.SourceFile], float]] = {
    "smallest-first": lambda source: source.size,
    "largest-first": lambda source: -source.size,
    "newest-first": lambda source: -source.mtime,
}
ORDERS = get_args(Order)
assert ORDERS == ("input", *ORDER_KEYS)


@dataclass
class RunOptions:
    """Everything a run needs besides inputs, output and spec; defaults are the CLI's."""

    workers: int = field(default_factory=lambda: usable_cores())
    max_memory: int | None = None              # None: default_max_memory(workers), "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    recursive: bool = True
    include_hidden: bool = False
    all_files: bool = False
    on_error: str = "continue"                  # or "stop": the first failure ends the run
    order: str = "input"                        # input | smallest-first | largest-first | newest-first
    fsync: bool = True
    overwrite: bool = False                     # replace files at output paths that the journal did not write
    keep_outcomes: bool = True
    on_outcome: Callable[[FileOutcome], None] | None = None
    on_progress: Callable[[RunSummary], None] | None = None
    journal: Any = None                         # a gpupipe.journal.Journal: skip what is done, record outcomes
    stall_timeout: float = 300.0                # no stage progressing this long with work in flight: stop
    retries: int = 3                            # extra attempts after a transient read error
    retry_delay: float = 0.1                    # first backoff, doubled each attempt, with jitter
    progress_interval: float = 0.1
    device_failures: int = 3                    # consecutive GPU failures before the run moves to the CPU
    spans: bool = False                         # keep each input's stage spans (FileOutcome.spans), for --trace

    def __post_init__(self) -> None:
        if self.max_memory is None:
            self.max_memory = default_max_memory(self.workers)
