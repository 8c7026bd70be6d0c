"""RunOptions' defaults that depend on the machine: --max-memory auto."""

from __future__ import annotations

import os

from gpupipe.engine.options import DEFAULT_MAX_MEMORY, RunOptions, default_max_memory, usable_memory

MB, GB = 2**20, 2**30


def test_auto_memory_grows_with_workers_within_a_quarter_of_the_machine() -> None:
    assert default_max_memory(1, memory=64 * GB) == 512 * MB          # the floor: the old fixed default
    assert default_max_memory(2, memory=64 * GB) == 512 * MB
    assert default_max_memory(16, memory=64 * GB) == 4 * GB            # 256 MB a worker
    assert default_max_memory(16, memory=8 * GB) == 2 * GB             # a quarter of the machine
    assert default_max_memory(64, memory=1 * GB) == DEFAULT_MAX_MEMORY  # never below the floor
    assert default_max_memory(0, memory=64 * GB) == 512 * MB


def test_usable_memory_is_this_machines_or_less() -> None:
    memory = usable_memory()
    assert memory is not None and memory > 0
    assert memory <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_run_options_resolve_auto_and_keep_a_given_size() -> None:
    assert RunOptions(workers=12).max_memory == default_max_memory(12)
    assert RunOptions(workers=12, max_memory=100 * MB).max_memory == 100 * MB
