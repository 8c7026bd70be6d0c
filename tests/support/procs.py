"""Processes as /proc shows them (Linux), for the tests of worker processes."""

from __future__ import annotations

import os
from pathlib import Path


def children(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid``."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            # The command name may hold spaces and parentheses: the fields after its last ")".
            if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue                  # gone meanwhile
    return found


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def state(pid: int) -> str:
    """The process's state letter (R, S, D, Z …), "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
