"""Simulated hosts on one kernel: network namespaces on a bridge, and running in them.

The bridge lives in a namespace of its own (`<prefix>-net`), each host's end of its
veth pair is `eth0` in the host's namespace, and no namespace has a default route: the
addresses exist only inside these namespaces, nothing outside is reachable from them,
and the machine's own namespace gains no link, address or route. Removing the
namespaces removes every link with them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
IP = shutil.which("ip") or "/usr/sbin/ip"
CLONE_NEWNET = 0x40000000
COMMAND_TIMEOUT_SECONDS = 30


class NetnsError(RuntimeError):
    """An `ip` command failed, or a namespace could not be entered."""


def ip(*args: str) -> str:
    done = subprocess.run(
        [IP, *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS, check=False
    )
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def listed(prefix: str) -> list[str]:
    """The namespaces whose name starts with `prefix-`."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(f"{prefix}-"))


def create_network(
    bridge_ns: str, subnet: IPv4Network, members: Sequence[tuple[str, Sequence[IPv4Address]]]
) -> None:
    """The bridge namespace, and one namespace per member with its addresses on eth0."""
    ip("netns", "add", bridge_ns)
    ip("-n", bridge_ns, "link", "set", "lo", "up")
    ip("-n", bridge_ns, "link", "add", "br0", "type", "bridge")
    ip("-n", bridge_ns, "link", "set", "br0", "up")
    for number, (name, addresses) in enumerate(members):
        ip("netns", "add", name)
        ip("-n", name, "link", "set", "lo", "up")
        port = f"port{number}"
        # The peer end is made straight in the host's namespace, as its eth0.
        peer = ("peer", "name", "eth0", "netns", name)
        ip("-n", bridge_ns, "link", "add", port, "type", "veth", *peer)
        ip("-n", bridge_ns, "link", "set", port, "master", "br0")
        ip("-n", bridge_ns, "link", "set", port, "up")
        for address in addresses:
            ip("-n", name, "addr", "add", f"{address}/{subnet.prefixlen}", "dev", "eth0")
        ip("-n", name, "link", "set", "eth0", "up")


def pids(name: str) -> list[int]:
    """Every process whose network namespace is `name`; never this process."""
    if not exists(name):
        return []
    found = [int(raw) for raw in ip("netns", "pids", name).split() if raw.isdigit()]
    return [pid for pid in found if pid != os.getpid()]


def kill_all(name: str, timeout: float = 10.0) -> list[int]:
    """SIGKILL to every process in namespace `name`, by PID; returns those still there."""
    deadline = time.monotonic() + timeout
    left = pids(name)
    while left and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
        left = pids(name)
    return left


def delete(name: str) -> None:
    if exists(name):
        ip("netns", "del", name)


def exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    """`argv` run inside namespace `name`."""
    return [IP, "netns", "exec", name, *argv]


def run_in(name: str, fn: Callable[[], T], timeout: float | None = None) -> T:
    """`fn()` in a thread of ours that entered namespace `name`: every socket it opens is
    that namespace's. The rest of the process stays where it was."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            enter(name)
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise NetnsError(f"work in namespace {name} did not end within {timeout} s")
    if errors:
        raise errors[0]
    return result[0]


def enter(name: str) -> None:
    """Moves the calling thread (only it) into namespace `name` (setns(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise NetnsError(f"setns {name}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
