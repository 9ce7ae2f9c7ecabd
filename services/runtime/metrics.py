"""gRPC server and client metrics with py-grpc-prometheus's names and labels, at a lower
cost per call.

`PromServerInterceptor` resolves every label set on every call (`Counter.labels`
takes a lock and builds a key each time) and wraps each handler in one more
interceptor layer. Here the families are py-grpc-prometheus's own (its
`init_metrics`), and the runtime's one interceptor records them
(`grpc_server_started_total`, `grpc_server_handled_total{grpc_code}`,
`grpc_server_msg_received_total`, `grpc_server_msg_sent_total`,
`grpc_server_handling_seconds`) with each method's children resolved once, so
dashboards and alerts built on py-grpc-prometheus keep working. Its legacy and
client-histogram families are registered with the rest and stay empty, as they do
under its interceptors with legacy mode and client histograms off.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Histogram
from py_grpc_prometheus import client_metrics as prom_client
from py_grpc_prometheus import server_metrics as prom_server

_LABELS = ("grpc_type", "grpc_service", "grpc_method")


class ServerMetrics:
    """The server metric families of one process, and their children per method."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # The families as py-grpc-prometheus defines them (one source of the names,
        # help texts and labels); only the per-call work is ours.
        families = prom_server.init_metrics(registry)
        self._started = families["grpc_server_started_counter"]
        self._received = families["grpc_server_stream_msg_received"]
        self._sent = families["grpc_server_stream_msg_sent"]
        self._seconds = families["grpc_server_handled_histogram"]
        self._handled = prom_server.get_grpc_server_handled_counter(False, registry)
        self._methods: dict[tuple[str, str], MethodMetrics] = {}

    def method(self, full_method: str, grpc_type: str) -> MethodMetrics:
        """The children of `/package.Service/Method`; made on its first call."""
        key = (full_method, grpc_type)
        found = self._methods.get(key)
        if found is None:
            labels = _labels(grpc_type, full_method)
            found = MethodMetrics(
                started=self._started.labels(*labels),
                received=self._received.labels(*labels),
                sent=self._sent.labels(*labels),
                seconds=self._seconds.labels(*labels),
                handled=lambda code: self._handled.labels(*labels, code.name),
            )
            # Dict assignment is atomic: two threads making the same entry is harmless.
            self._methods[key] = found
        return found


class MethodMetrics:
    """One method's metric children: a call costs a few increments, no label lookups."""

    def __init__(
        self, *, started: Any, received: Any, sent: Any, seconds: Any, handled: Any
    ) -> None:
        self.started = started
        self.received = received
        self.sent = sent
        self.seconds = seconds
        self._make_handled = handled
        self._handled: dict[grpc.StatusCode, Any] = {}

    def handled(self, code: grpc.StatusCode, seconds: float) -> None:
        """Counts a finished unary-response call and its handling time."""
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._make_handled(code)
        child.inc()
        self.seconds.observe(max(seconds, 0.0))

    def counting_sent(self, responses: Iterator[Any]) -> Iterator[Any]:
        for response in responses:
            self.sent.inc()
            yield response

    def counting_received(self, requests: Iterator[Any]) -> Iterator[Any]:
        for request in requests:
            self.received.inc()
            yield request


def grpc_type(handler: grpc.RpcMethodHandler[Any, Any]) -> str:
    """py-grpc-prometheus's name for the handler's kind of call."""
    if handler.request_streaming and handler.response_streaming:
        return "BIDI_STREAMING"
    if handler.request_streaming:
        return "CLIENT_STREAMING"
    if handler.response_streaming:
        return "SERVER_STREAMING"
    return "UNARY"


class ClientMetrics:
    """py-grpc-prometheus's client families for unary calls, children resolved once.

    `PromClientInterceptor` looked up three label sets per call and was one more
    interceptor layer on every outbound call (booking-svc asks user-svc on every
    booking). Recorded by `clients.ClientInterceptor`: `grpc_client_started_total` and
    `grpc_client_handled_total{grpc_code}`, with py-grpc-prometheus's labels; the
    services make no streaming calls, and its histograms were never enabled.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        families = prom_client.init_metrics(registry)
        self._started = families["grpc_client_started_counter"]
        self._handled = families["grpc_client_handled_counter"]
        self._methods: dict[str, ClientMethodMetrics] = {}
        # Ours, not py-grpc-prometheus's: how many callers one batched call answered
        # (`batching.BatchLookup`), so an operator sees what batching saves.
        self._batch_keys = Histogram(
            "mesh_client_batch_keys",
            "Keys asked for in one batched outbound call, by method",
            _LABELS,
            buckets=(1, 2, 4, 8, 16, 32, 64, 100),
            registry=registry,
        )

    def batch_keys(self, full_method: str) -> Histogram:
        """The batch-size histogram's child for unary `/package.Service/Method`."""
        return self._batch_keys.labels(*_labels("UNARY", full_method))

    def method(self, full_method: str) -> ClientMethodMetrics:
        """The children of unary `/package.Service/Method`; made on its first call."""
        found = self._methods.get(full_method)
        if found is None:
            labels = _labels("UNARY", full_method)
            found = ClientMethodMetrics(
                self._started.labels(*labels),
                lambda code: self._handled.labels(*labels, code.name),
            )
            # Dict assignment is atomic: two threads making the same entry is harmless.
            self._methods[full_method] = found
        return found


class ClientMethodMetrics:
    """One outbound method's children: a call costs two increments, no label lookups."""

    def __init__(self, started: Any, handled: Any) -> None:
        self.started = started
        self._make_handled = handled
        self._handled: dict[grpc.StatusCode, Any] = {}

    def handled(self, code: grpc.StatusCode) -> None:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._make_handled(code)
        child.inc()


def _labels(grpc_type: str, full_method: str) -> tuple[str, str, str]:
    """py-grpc-prometheus's (grpc_type, grpc_service, grpc_method) of `/package.Service/Method`."""
    service, _, name = full_method.lstrip("/").partition("/")
    return grpc_type, service, name
