"""The current snapshot, shared by every ADS stream, and who to tell when it changes."""

from __future__ import annotations

import logging
import queue
import threading

from envoy.config.core.v3 import health_check_pb2

from controlplane.resources import CLUSTER_TYPE, ENDPOINT_TYPE, Snapshot

log = logging.getLogger(__name__)

# What a stream's queue receives besides requests: "look at the store again".
CHANGED = object()
HEALTHY = health_check_pb2.HealthStatus.HEALTHY


class SnapshotStore:
    """Holds the latest snapshot; each subscribed stream gets CHANGED on its queue."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._subscribers: set[queue.SimpleQueue[object]] = set()

    def get(self) -> Snapshot | None:
        with self._lock:
            return self._snapshot

    def set(self, snapshot: Snapshot) -> bool:
        """Makes `snapshot` current; False (and no push) when nothing changed."""
        with self._lock:
            if self._snapshot is not None and self._snapshot.versions == snapshot.versions:
                return False
            self._snapshot = snapshot
            subscribers = list(self._subscribers)
        for events in subscribers:
            events.put(CHANGED)
        log.info("snapshot", extra=summary(snapshot) | {"streams": len(subscribers)})
        return True

    def subscribe(self) -> queue.SimpleQueue[object]:
        events: queue.SimpleQueue[object] = queue.SimpleQueue()
        with self._lock:
            self._subscribers.add(events)
        return events

    def unsubscribe(self, events: queue.SimpleQueue[object]) -> None:
        with self._lock:
            self._subscribers.discard(events)


def summary(snapshot: Snapshot) -> dict[str, object]:
    """What a log line says about a snapshot: its version and healthy instance counts."""
    healthy: dict[str, str] = {}
    for name, assignment in snapshot.resources.get(ENDPOINT_TYPE, {}).items():
        hosts = [host for group in assignment.endpoints for host in group.lb_endpoints]
        up = sum(1 for host in hosts if host.health_status == HEALTHY)
        healthy[name] = f"{up}/{len(hosts)}"
    return {
        "version": snapshot.version,
        "clusters": len(snapshot.resources.get(CLUSTER_TYPE, {})),
        "healthy": healthy,
    }
