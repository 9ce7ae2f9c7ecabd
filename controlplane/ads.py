"""Envoy's Aggregated Discovery Service (state of the world, v3) over one gRPC stream.

`StreamState` decides, without any I/O, what to send for each request and each new
snapshot: the resources of the requested type (EDS and SDS: only the names asked for), a
response when the version or the requested names changed, nothing for an ACK or a
NACK of what is already sent. `AdsServicer` runs it per stream: a reader thread
queues Envoy's requests, the store queues "changed", and the stream answers both.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from controlplane.ca import private_dir
from controlplane.resources import CLUSTER_TYPE, ENDPOINT_TYPE, SECRET_TYPE, Snapshot
from controlplane.store import CHANGED, SnapshotStore

log = logging.getLogger(__name__)

SUPPORTED_TYPES = (CLUSTER_TYPE, ENDPOINT_TYPE, SECRET_TYPE)
CONTROL_PLANE_ID = "airline-controlplane"
_CLOSED = object()
_stream_ids = itertools.count(1)


@dataclass
class _TypeState:
    """What one stream asked for and was sent, for one type URL."""

    names: frozenset[str] = frozenset()
    sent_version: str | None = None
    sent_names: frozenset[str] = frozenset()
    nonce: str = ""
    acked_version: str = ""


class StreamState:
    """The xDS protocol bookkeeping of one ADS stream."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.types: dict[str, _TypeState] = {}
        self.node_id = ""
        self._nonces = itertools.count(1)

    def on_request(
        self, request: discovery_pb2.DiscoveryRequest, snapshot: Snapshot | None
    ) -> discovery_pb2.DiscoveryResponse | None:
        """The response owed for `request`, if any."""
        if request.node.id and not self.node_id:
            self.node_id = request.node.id
            self.log_event(logging.INFO, "stream opened", node_cluster=request.node.cluster)
        if request.type_url not in SUPPORTED_TYPES:
            self.log_event(logging.WARNING, "type not served", type_url=request.type_url)
            return None
        state = self.types.setdefault(request.type_url, _TypeState())
        replies_to_latest = bool(state.nonce) and request.response_nonce == state.nonce
        if state.nonce and request.response_nonce and not replies_to_latest:
            # Answers a response we have since replaced; Envoy will answer that one too.
            # (A nonce from before a reconnect, when we sent nothing yet, is not stale.)
            return None
        state.names = frozenset(request.resource_names)
        if replies_to_latest:
            self._acknowledge(request, state)
        if snapshot is None:
            return None  # Answered once the first view of Consul arrives.
        return self._respond_if_due(request.type_url, state, snapshot)

    def on_snapshot(self, snapshot: Snapshot | None) -> list[discovery_pb2.DiscoveryResponse]:
        """Pushes of the new snapshot, for every type this stream subscribed to."""
        if snapshot is None:
            return []
        pushes = (self._respond_if_due(t, state, snapshot) for t, state in self.types.items())
        return [push for push in pushes if push is not None]

    def _acknowledge(self, request: discovery_pb2.DiscoveryRequest, state: _TypeState) -> None:
        kind = _short(request.type_url)
        if request.HasField("error_detail"):
            # Envoy keeps its last good config; we keep the bad version marked as sent,
            # so it is not pushed again, and wait for the next snapshot.
            self.log_event(
                logging.WARNING,
                "nack",
                type=kind,
                rejected_version=state.sent_version,
                kept_version=request.version_info,
                error=request.error_detail.message,
            )
            return
        state.acked_version = request.version_info
        self.log_event(logging.INFO, "ack", type=kind, version=request.version_info)

    def _respond_if_due(
        self, type_url: str, state: _TypeState, snapshot: Snapshot
    ) -> discovery_pb2.DiscoveryResponse | None:
        version = snapshot.versions.get(type_url, "")
        if state.sent_version == version and state.sent_names == state.names:
            return None
        resources = snapshot.select(type_url, state.names)
        response = discovery_pb2.DiscoveryResponse(
            version_info=version,
            type_url=type_url,
            nonce=str(next(self._nonces)),
            resources=[_pack(resource) for resource in resources],
            control_plane=base_pb2.ControlPlane(identifier=CONTROL_PLANE_ID),
        )
        state.sent_version, state.sent_names, state.nonce = version, state.names, response.nonce
        self.log_event(
            logging.INFO,
            "sent",
            type=_short(type_url),
            version=version,
            nonce=response.nonce,
            resources=[getattr(r, "name", "") or r.cluster_name for r in resources],
        )
        return response

    def log_event(self, level: int, event: str, **fields: Any) -> None:
        log.log(level, event, extra={"stream": self.stream_id, "node": self.node_id} | fields)


def _pack(resource: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(resource)
    return packed


def _short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """StreamAggregatedResources for every connected Envoy, fed from one store.

    DeltaAggregatedResources stays UNIMPLEMENTED (the base class): Envoy uses
    state-of-the-world ADS unless its bootstrap asks for DELTA_GRPC.
    """

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    def StreamAggregatedResources(
        self,
        request_iterator: Iterator[discovery_pb2.DiscoveryRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[discovery_pb2.DiscoveryResponse]:
        state = StreamState(f"{next(_stream_ids)}@{context.peer()}")
        events = self._store.subscribe()
        # Ends the loop below when Envoy goes away or the server stops.
        if not context.add_callback(lambda: events.put(_CLOSED)):
            self._store.unsubscribe(events)
            return  # Already over: nothing would ever close the loop.
        reader = threading.Thread(
            target=_read_requests, args=(request_iterator, events), daemon=True
        )
        reader.start()
        try:
            yield from _answer(state, events, self._store)
        finally:
            self._store.unsubscribe(events)
            state.log_event(logging.INFO, "stream closed")


def _answer(
    state: StreamState, events: queue.SimpleQueue[object], store: SnapshotStore
) -> Iterator[discovery_pb2.DiscoveryResponse]:
    while (event := events.get()) is not _CLOSED:
        if event is CHANGED:
            yield from state.on_snapshot(store.get())
        elif isinstance(event, discovery_pb2.DiscoveryRequest):
            response = state.on_request(event, store.get())
            if response is not None:
                yield response


def _read_requests(
    requests: Iterator[discovery_pb2.DiscoveryRequest], events: queue.SimpleQueue[object]
) -> None:
    try:
        for request in requests:
            events.put(request)
    except grpc.RpcError as exc:
        # The stream was cancelled (Envoy left, or we are stopping): nothing to answer.
        log.debug("request stream ended", extra={"error": repr(exc)})
    finally:
        events.put(_CLOSED)


class SdsServicer(sds_pb2_grpc.SecretDiscoveryServiceServicer):  # type: ignore[misc]
    """StreamSecrets: the secrets of the ADS snapshot on a stream of their own.

    For Envoy's static clusters (the edge's `ratelimit`): a static cluster cannot take
    its secrets over ADS, which Envoy sets up after its static clusters (it crashes:
    envoyproxy/envoy#15517), so it asks here through the static xds_cluster.
    """

    def __init__(self, ads: AdsServicer) -> None:
        self._ads = ads

    def StreamSecrets(
        self,
        request_iterator: Iterator[discovery_pb2.DiscoveryRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[discovery_pb2.DiscoveryResponse]:
        return self._ads.StreamAggregatedResources(request_iterator, context)


class XdsServer:
    """The gRPC server Envoy connects to: ADS (and SDS alone), plus gRPC health for operators.

    It listens on a Unix socket only, 0600 in a folder made 0700: the stream hands out
    Envoy's private key (SDS), so only the socket's owner (and root) may open one.
    Health is NOT_SERVING until the first snapshot exists, so a supervisor or a
    probe can tell "up" from "up and knows what Consul knows".
    """

    def __init__(self, store: SnapshotStore, socket: Path, max_workers: int = 32) -> None:
        # Each Envoy holds one worker for its stream's lifetime.
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="ads")
        )
        ads = AdsServicer(store)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, self._server)
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(SdsServicer(ads), self._server)
        self._health = health.HealthServicer()
        self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self.socket = socket
        # The folder first: until the chmod below the socket has the umask's mode, and
        # the 0700 folder is what keeps others out meanwhile. gRPC replaces a stale
        # socket left by a crash, and removes its own when it stops.
        private_dir(socket.parent)
        self._server.add_insecure_port(f"unix:{socket}")
        socket.chmod(0o600)

    @property
    def target(self) -> str:
        """The address a gRPC client dials: `unix:` and the socket's path."""
        return f"unix:{self.socket}"

    def start(self) -> None:
        self._server.start()

    def mark_serving(self) -> None:
        self._health.set("", health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace_seconds: float) -> None:
        """Refuses new streams, then cancels open ones after the grace period."""
        self._health.enter_graceful_shutdown()
        self._server.stop(grace_seconds).wait(grace_seconds + 1.0)
