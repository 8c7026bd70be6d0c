"""What this process may use of the machine: cores and memory, a container's limits included.

A container gets its share through cgroups: a CPU quota (``docker run --cpus 4``) leaves every
core visible to the scheduler's affinity mask while allowing only four cores' worth of time, and
a memory limit is lower than the machine's. Sizing workers or buffers by the machine would then
oversubscribe the quota (throttled threads stall the pipeline) or run out of memory.
"""

from __future__ import annotations

import math
import os

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"


def usable_cores(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> int:
    """CPUs this process may run on (taskset's or a cpuset's share), fewer where a cgroup CPU
    quota allows less time (rounded up: a quota of 1.5 CPUs gives 2)."""
    try:
        cores = len(os.sched_getaffinity(0)) or 1
    except AttributeError:                      # not on Linux
        cores = os.cpu_count() or 1
    quota = cpu_quota(root, proc_cgroup)
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def usable_memory(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> int | None:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit where lower;
    None where neither can be read."""
    try:
        limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    except (ValueError, OSError, AttributeError):
        limits = []
    for folder, version in _cgroup_folders("memory", root, proc_cgroup):
        text = _read(os.path.join(folder, "memory.max" if version == 2 else "memory.limit_in_bytes"))
        if text and text.isdigit():             # "max" (v2) means no limit
            limits.append(int(text))
    return min(limits) if limits else None


def cpu_quota(root: str = CGROUP_ROOT, proc_cgroup: str = PROC_CGROUP) -> float | None:
    """CPUs' worth of time per period that the tightest cgroup CPU quota allows, or None."""
    quotas = []
    for folder, version in _cgroup_folders("cpu", root, proc_cgroup):
        if version == 2:                        # cpu.max: "max 100000" or "400000 100000"
            parts = (_read(os.path.join(folder, "cpu.max")) or "").split()
            quota, period = (parts + ["", ""])[:2]
        else:                                   # cpu.cfs_quota_us: -1 for none
            quota = _read(os.path.join(folder, "cpu.cfs_quota_us")) or ""
            period = _read(os.path.join(folder, "cpu.cfs_period_us")) or ""
        if quota.isdigit() and period.isdigit() and int(period) > 0 and int(quota) > 0:
            quotas.append(int(quota) / int(period))
    return min(quotas) if quotas else None


def _cgroup_folders(controller: str, root: str, proc_cgroup: str) -> list[tuple[str, int]]:
    """(folder, cgroup version) where ``controller``'s settings for this process may be: the
    namespace's root (a container's own limits) and this process's cgroup, v2 and v1 alike."""
    folders = [(root, 2), (os.path.join(root, controller), 1)]
    text = _read(proc_cgroup) or ""
    for line in text.splitlines():             # "0::/path" (v2), "4:memory:/path" (v1)
        parts = line.split(":", 2)
        if len(parts) != 3 or parts[2] in ("", "/"):
            continue
        _, controllers, path = parts
        if controllers == "":
            folders.append((root + path, 2))
        elif controller in controllers.split(","):
            folders.append((os.path.join(root, controller) + path, 1))
    return folders


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None
