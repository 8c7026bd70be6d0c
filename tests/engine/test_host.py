"""What a run may use of the machine (gpupipe.engine.host), container limits included, and the
defaults sized from it (--max-memory auto). Cgroup trees are built as real files under tmp_path,
laid out as the kernel lays them out."""

from __future__ import annotations

import os
from pathlib import Path

from gpupipe.engine.host import cpu_quota, usable_cores, usable_memory
from gpupipe.engine.options import DEFAULT_MAX_MEMORY, RunOptions, default_max_memory

MB, GB = 2**20, 2**30


def _tree(tmp_path: Path, files: dict[str, str], proc: str) -> tuple[str, str]:
    for name, text in files.items():
        path = tmp_path / "cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    (tmp_path / "proc_cgroup").write_text(proc)
    return str(tmp_path / "cgroup"), str(tmp_path / "proc_cgroup")


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_this_machine() -> None:
    assert 1 <= usable_cores() <= _affinity()
    memory = usable_memory()
    assert memory is not None and 0 < memory <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_cgroup_v2_container_limits(tmp_path: Path) -> None:
    """docker run --cpus 1.5 --memory 3g on cgroup v2: the namespace's root holds the limits."""
    root, proc = _tree(tmp_path, {"cpu.max": "150000 100000", "memory.max": str(3 * GB)}, "0::/\n")
    assert cpu_quota(root, proc) == 1.5
    assert usable_cores(root, proc) == min(2, _affinity())
    assert usable_memory(root, proc) == min(3 * GB, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def test_cgroup_v2_without_limits(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, {"cpu.max": "max 100000", "memory.max": "max"}, "0::/\n")
    assert cpu_quota(root, proc) is None
    assert usable_cores(root, proc) == _affinity()
    assert usable_memory(root, proc) == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_cgroup_v2_limit_on_this_process_own_cgroup(tmp_path: Path) -> None:
    """A systemd unit's CPUQuota=100% and MemoryMax=1G, on the process's cgroup, not the root."""
    root, proc = _tree(tmp_path, {"cpu.max": "max 100000", "memory.max": "max",
                                  "system.slice/job.service/cpu.max": "100000 100000",
                                  "system.slice/job.service/memory.max": str(GB)},
                       "0::/system.slice/job.service\n")
    assert cpu_quota(root, proc) == 1.0
    assert usable_cores(root, proc) == 1
    assert usable_memory(root, proc) == GB


def test_cgroup_v1_quota_and_limit(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, {"cpu/docker/abc/cpu.cfs_quota_us": "400000",
                                  "cpu/docker/abc/cpu.cfs_period_us": "100000",
                                  "cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000",
                                  "memory/docker/abc/memory.limit_in_bytes": str(2 * GB),
                                  "memory/memory.limit_in_bytes": "9223372036854771712"},
                       "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n")
    assert cpu_quota(root, proc) == 4.0
    assert usable_cores(root, proc) == min(4, _affinity())
    assert usable_memory(root, proc) == 2 * GB


def test_no_cgroup_files_at_all(tmp_path: Path) -> None:
    root, proc = str(tmp_path / "none"), str(tmp_path / "no_proc_file")
    assert cpu_quota(root, proc) is None
    assert usable_cores(root, proc) == _affinity()
    assert usable_memory(root, proc) == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_auto_memory_grows_with_workers_within_a_quarter_of_the_machine() -> None:
    assert default_max_memory(1, memory=64 * GB) == 512 * MB          # the floor: the old fixed default
    assert default_max_memory(2, memory=64 * GB) == 512 * MB
    assert default_max_memory(16, memory=64 * GB) == 4 * GB            # 256 MB a worker
    assert default_max_memory(16, memory=8 * GB) == 2 * GB             # a quarter of the machine
    assert default_max_memory(64, memory=1 * GB) == DEFAULT_MAX_MEMORY  # never below the floor
    assert default_max_memory(0, memory=64 * GB) == 512 * MB


def test_run_options_resolve_auto_and_keep_a_given_size() -> None:
    assert RunOptions(workers=12).max_memory == default_max_memory(12)
    assert RunOptions(workers=12, max_memory=100 * MB).max_memory == 100 * MB
