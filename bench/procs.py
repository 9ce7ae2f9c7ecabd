"""Which local process listens on a port, its children, memory and CPU time (Linux /proc)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_LISTEN = "0A"  # TCP state in /proc/net/tcp


def pid_listening_on(port: int) -> int:
    """The PID whose socket listens on loopback or any-address TCP `port`."""
    inodes = {
        fields[9]
        for table in ("/proc/net/tcp", "/proc/net/tcp6")
        for fields in (line.split() for line in Path(table).read_text().splitlines()[1:])
        if fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port
    }
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if wanted & _open_files(pid):
            return int(pid)
    raise LookupError(f"no process listens on port {port}")


def _open_files(pid: str) -> set[str]:
    """What `pid`'s file descriptors point at; processes and fds may vanish meanwhile."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return found


def rss_mib(pid: int) -> float:
    """Resident set size (VmRSS) of `pid`, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time `pid` has used so far, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command (in parentheses, which may hold spaces): utime is the 14th.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The direct children of `pid`."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found
