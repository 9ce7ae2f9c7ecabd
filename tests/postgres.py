"""A throwaway PostgreSQL server for tests, and fresh databases on it.

Run as the invoking user, or as `postgres` when the tests run as root (initdb refuses
root). Stopped by the postmaster's PID, never by name.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

from services.runtime.db import make_engine
from tests.support import free_ports


class PostgresMissing(RuntimeError):
    """What is missing to run a server here; the reason a test skips."""


def _binaries() -> tuple[str, str]:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise PostgresMissing("initdb/pg_ctl not on PATH: install postgresql (CI does)")
    try:
        import psycopg  # noqa: F401 - only whether the driver is there.
    except ImportError as exc:
        raise PostgresMissing("psycopg missing: pip install '.[postgres]'") from exc
    return initdb, pg_ctl


def _run_as() -> tuple[list[str], pwd.struct_passwd | None]:
    if os.geteuid() != 0:
        return [], None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresMissing("running as root and there is no postgres user") from exc
    return ["runuser", "-u", "postgres", "--"], account


@contextmanager
def postgres_server() -> Iterator[str]:
    """Runs a server on a free loopback port; yields its base URL (no database part)."""
    initdb, pg_ctl = _binaries()
    as_postgres, account = _run_as()
    base = Path(tempfile.mkdtemp(prefix="airline-pg-"))
    if account is not None:
        os.chown(base, account.pw_uid, account.pw_gid)
    data, (port,) = base / "data", free_ports(1)
    pidfile = data / "postmaster.pid"
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    try:
        subprocess.run(
            [*as_postgres, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        start = ["-l", str(base / "log"), "-o", options, "-w", "-t", "60", "start"]
        subprocess.run(
            [*as_postgres, pg_ctl, "-D", str(data), *start],
            check=True,
            capture_output=True,
            timeout=90,
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        if pidfile.exists():
            _stop(int(pidfile.read_text().split()[0]), pidfile)
        shutil.rmtree(base, ignore_errors=True)


def _stop(pid: int, pidfile: Path) -> None:
    """Fast-shuts the postmaster down and waits, with a deadline, until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not pidfile.exists() or not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextmanager
def fresh_database(server: str, prefix: str = "test") -> Iterator[str]:
    """A new empty database on `server`, dropped afterwards; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex}"
    admin = make_engine(f"{server}/postgres").execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{server}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.engine.dispose()
