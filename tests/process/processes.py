"""Processes as the kernel lists them in /proc: which run, in which group, since when."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    """One process; its start time tells it apart from a later one given the same PID."""

    pid: int
    group: int
    start_ticks: int


def read(pid: int) -> Proc | None:
    """The live process `pid`, or None when it is gone or a zombie (exited, not yet reaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ")".
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in {"Z", "X"}:
        return None
    return Proc(pid, group=int(fields[2]), start_ticks=int(fields[19]))


def alive(proc: Proc) -> bool:
    now = read(proc.pid)
    return now is not None and now.start_ticks == proc.start_ticks


def running() -> list[Proc]:
    """Every live process."""
    found = [read(int(entry.name)) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [proc for proc in found if proc is not None]


def in_groups(groups: set[int]) -> list[Proc]:
    """Every live process whose process group is one of `groups`."""
    return [proc for proc in running() if proc.group in groups]
