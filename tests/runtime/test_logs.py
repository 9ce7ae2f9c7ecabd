"""Log lines written straight to a file: one JSON object per event, owner-only, rotated."""

from __future__ import annotations

import json
import logging
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.runtime import logs
from tests.support import serving_call


@pytest.fixture
def file_log(tmp_path: Path) -> Iterator[logging.Logger]:
    """A logger of its own writing JSON lines to tmp_path/svc.log, as LOG_FILE makes one."""
    log = logging.getLogger(f"tests.logs.{tmp_path.name}")
    handler = logs.LogFile(tmp_path / "svc.log", max_bytes=0, backups=2)
    handler.setFormatter(logs.JsonFormatter("booking-svc"))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    handler.close()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_log_file_is_created_readable_by_its_owner_only(
    file_log: logging.Logger, tmp_path: Path
) -> None:
    file_log.info("serving", extra={"port": 1234})
    assert stat.S_IMODE((tmp_path / "svc.log").stat().st_mode) == 0o600


def test_a_log_file_left_with_looser_permissions_is_made_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "old.log"
    path.write_text("")
    path.chmod(0o644)
    handler = logs.LogFile(path, max_bytes=0, backups=1)
    handler.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_each_event_is_one_json_line_with_the_request_id_and_its_fields(
    file_log: logging.Logger, tmp_path: Path
) -> None:
    with serving_call("req-1", method="/pkg.Svc/Get"):
        file_log.info("rpc", extra={"code": "OK", "duration_ms": 0.5, "user_id": None})
    file_log.warning("outside a call")
    first, second = _lines(tmp_path / "svc.log")
    assert first["request_id"] == "req-1"
    assert first["method"] == "/pkg.Svc/Get"
    assert (first["service"], first["event"], first["code"]) == ("booking-svc", "rpc", "OK")
    assert first["duration_ms"] == 0.5
    assert first["user_id"] is None
    assert first["ts"].endswith("Z")
    assert "request_id" not in second
    assert second["level"] == "warning"


def test_a_traceback_stays_inside_its_one_line(file_log: logging.Logger, tmp_path: Path) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        file_log.exception("unhandled error")
    (line,) = _lines(tmp_path / "svc.log")
    assert "RuntimeError: boom" in line["traceback"]


def test_lines_from_many_threads_are_never_torn(file_log: logging.Logger, tmp_path: Path) -> None:
    def log_many(n: int) -> None:
        for i in range(200):
            file_log.info("rpc", extra={"thread_no": n, "i": i, "pad": "x" * 500})

    threads = [threading.Thread(target=log_many, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(_lines(tmp_path / "svc.log")) == 8 * 200


def test_the_file_rotates_past_its_size_and_keeps_only_its_backups(tmp_path: Path) -> None:
    log = logging.getLogger("tests.logs.rotation")
    handler = logs.LogFile(tmp_path / "svc.log", max_bytes=2000, backups=2)
    handler.setFormatter(logs.JsonFormatter("user-svc"))
    log.handlers[:] = [handler]
    log.propagate = False
    try:
        for i in range(100):
            log.warning("line", extra={"i": i, "pad": "y" * 100})
    finally:
        handler.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["svc.log", "svc.log.1", "svc.log.2"]
    for name in names:
        path = tmp_path / name
        assert path.stat().st_size <= 2000
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Nothing lost between the files that remain: the newest lines, in order.
    kept = [line["i"] for name in reversed(names) for line in _lines(tmp_path / name)]
    assert kept == list(range(kept[0], 100))


def test_configure_with_a_file_sends_every_logger_there(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure("auth-svc", "INFO", file=str(tmp_path / "auth-svc.log"))
        logging.getLogger("rpc").info("rpc", extra={"code": "OK"})
        logging.getLogger("anything").debug("below the level")
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], level = saved
        root.setLevel(level)
    (line,) = _lines(tmp_path / "auth-svc.log")
    assert (line["service"], line["logger"], line["code"]) == ("auth-svc", "rpc", "OK")
