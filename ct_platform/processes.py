"""Is a process alive, and since when? (Linux `/proc`; plain Python.)

A pid alone does not name a process for long: the kernel reuses it. Callers that recorded a
pid keep its start time too (`start_ticks`, or the time they named it) and compare, so a
newer process that took the pid is not mistaken for the one recorded.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def process_exists(pid: int) -> bool:
    """Whether some process has `pid` on this machine (whoever owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return True


def start_ticks(pid: int) -> str:
    """When `pid` started, in clock ticks since boot (`/proc/<pid>/stat` field 22); "" where
    /proc cannot say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) is in parentheses and may contain spaces.
    return stat.rsplit(")", 1)[1].split()[19]


def started_at(pid: int) -> float | None:
    """When `pid` started, in seconds since the epoch; None where /proc cannot say."""
    ticks = start_ticks(pid)
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not ticks.isdigit():
        return None
    return time.time() - uptime + int(ticks) / os.sysconf("SC_CLK_TCK")
