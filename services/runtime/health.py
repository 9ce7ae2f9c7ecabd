"""gRPC health from the real state of the service.

Each check (storage reachable, model loaded, ...) runs every interval on a
background thread; the overall status ("") and every served service name are
SERVING only while all checks pass, and NOT_SERVING for good once shutdown begins.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures

from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)

Check = Callable[[], None]
"""Raises when the thing it checks is not usable."""


class HealthReporter:
    def __init__(
        self, service_names: Sequence[str], checks: Mapping[str, Check], interval: float
    ) -> None:
        self._names = ("", *service_names)
        self._checks = dict(checks)
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[str, bool] = {}
        self.servicer = health.HealthServicer(
            experimental_non_blocking=True,
            experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=1),
        )

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="health", daemon=True)
        self._thread.start()

    def refresh(self) -> bool:
        """Runs every check once and publishes the result; True when all pass."""
        results: dict[str, bool] = {}
        for name, check in self._checks.items():
            error = _failure(check)
            results[name] = error is None
            if self._last.get(name) != results[name]:
                log.log(
                    logging.INFO if error is None else logging.WARNING,
                    "health check changed",
                    extra={"check": name, "passing": error is None, "error": error},
                )
        self._last = results
        healthy = all(results.values())
        if not self._stop.is_set():
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if healthy
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in self._names:
                self.servicer.set(name, status)
        return healthy

    def shutdown(self) -> None:
        """NOT_SERVING everywhere, for good: load balancers stop sending new calls."""
        self._stop.set()
        self.servicer.enter_graceful_shutdown()
        if self._thread is not None:
            self._thread.join(timeout=self._interval + 1)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.refresh()


def _failure(check: Check) -> str | None:
    """None when `check` passes, else a short description of why not."""
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - any failure means not healthy; reported
        return repr(exc)[:200]
    return None
