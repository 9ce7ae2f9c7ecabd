"""Structured logs: one JSON object per line, with the request id, to a file or stderr.

The request id and method come from the request context (see `context.py`),
so every line a handler logs carries them without being passed along. Under the
mesh every instance writes its own file (`LOG_FILE`, owner-only, rotated by size):
a line through supervisord's pipe cost a second process a wake-up, a read and a
write per request (~90 us at 32 in flight, ~150 us alone).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from services.runtime import context

# Attributes every LogRecord has; anything else passed in `extra=` is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}
_encode = json.JSONEncoder(default=str).encode


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; `extra=` keys become fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "event": record.getMessage(),
        }
        current = context.current()
        if current is not None:
            entry["request_id"] = current.request_id
            entry["method"] = current.method
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return _encode(entry)

    def _timestamp(self, record: logging.LogRecord) -> str:
        # strftime once per second, not once per line: a busy instance logs hundreds.
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int(record.msecs):03d}Z"


class LogFile(logging.Handler):
    """Appends each record as one line to a file only its owner may read; rotates by size.

    One `write` per line on an O_APPEND descriptor: no buffer to lose in a crash,
    and a line is whole in the file as soon as the call that logged it returns.
    Past `max_bytes` the file becomes `<name>.1` (`.1` becomes `.2`, ... up to
    `backups`) and a new one is started.
    """

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        super().__init__()
        self.path = path
        self._max = max_bytes
        self._backups = backups
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # also when the file was left by a run with a looser umask
        return fd

    def emit(self, record: logging.LogRecord) -> None:
        # `Handler.handle` holds the handler's lock around this: one writer rotates.
        try:
            line = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            if self._max > 0 and self._size + len(line) > self._max and self._size > 0:
                self._rotate()
            self._size += os.write(self._fd, line)
        except Exception:  # noqa: BLE001  # logging's contract: a failed line is reported, not raised
            self.handleError(record)

    def _rotate(self) -> None:
        os.close(self._fd)
        for n in range(self._backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self._backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        with self.lock or threading.RLock():
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        super().close()


def configure(
    service: str,
    level: str = "INFO",
    *,
    file: str = "",
    max_bytes: int = 20 * 1024 * 1024,
    backups: int = 2,
) -> None:
    """Sends every logger's records, as JSON lines, to `file` (rotated) or else stderr."""
    handler: logging.Handler
    if file:
        handler = LogFile(Path(file), max_bytes=max_bytes, backups=backups)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, LogFile):
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # No line carries the caller's file, thread or process names: don't compute them
    # for every record (the logging docs' "Optimization" switches).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # the docs' switch for findCaller: no line names its source
