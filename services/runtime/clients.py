"""Channels to other services: deadlines, request ids, retries and metrics, in one place.

Every outbound call gets a timeout no longer than the caller's remaining time
(less a margin to answer in), and never more than the channel's own default;
the request id travels along, and the call is counted (py-grpc-prometheus's client
metrics), all in one interceptor. Retries are configuration: a bounded gRPC
retryPolicy for the idempotent methods a channel is told about.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from services.runtime import context
from services.runtime.identity import CredentialSource, ReloadingChannel
from services.runtime.metrics import ClientMetrics

# Time kept back from the caller's deadline to turn a dependency's failure into
# an answer of our own.
ANSWER_MARGIN_SECONDS = 0.05


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class ClientInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Derives each call's timeout from the served request's deadline; adds the request
    id; counts the call and its outcome when given `metrics`.

    One layer: each interceptor on a channel costs a Python frame and a wrapped call
    per call, and booking-svc makes one (LookupUser) per booking.
    """

    def __init__(self, default_timeout: float, metrics: ClientMetrics | None = None) -> None:
        self._default = default_timeout
        self._metrics = metrics

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        timeout = min(details.timeout or self._default, self._default)
        metadata = list(details.metadata or [])
        served = context.current()
        if served is not None:
            remaining = served.time_remaining() - ANSWER_MARGIN_SECONDS
            timeout = max(min(timeout, remaining), 0.001)
            metadata.append(("x-request-id", served.request_id))
        counted = self._metrics.method(details.method) if self._metrics is not None else None
        if counted is not None:
            counted.started.inc()
        outcome = continuation(
            _CallDetails(
                method=details.method,
                timeout=timeout,
                metadata=metadata,
                credentials=details.credentials,
                wait_for_ready=details.wait_for_ready,
                compression=details.compression,
            ),
            request,
        )
        if counted is not None:
            counted.handled(outcome.code())  # failures too: the outcome holds the error
        return outcome


# Attempts per call, bounded: Envoy's mesh listener makes up to 3 attempts on
# UNAVAILABLE (num_retries: 2, envoy/bootstrap.yaml), and the channel retries the
# whole call once more (for when the mesh listener itself had no healthy instance
# or could not be reached for a moment). At most 2 x 3 = 6 attempts on instances
# per call, all within the call's one deadline; gRFC A6 throttling below stops the
# client's retries when most calls fail.
MAX_ATTEMPTS = 2


def retry_service_config(
    idempotent: Iterable[tuple[str, str]], max_attempts: int = MAX_ATTEMPTS
) -> str:
    """A service config retrying the given (service, method) pairs on UNAVAILABLE."""
    names = [{"service": s, "method": m} for s, m in idempotent]
    config: dict[str, Any] = {"methodConfig": []}
    if names:
        config["methodConfig"].append(
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        )
    # Bound the retry traffic a struggling dependency sees (gRFC A6 throttling).
    config["retryThrottling"] = {"maxTokens": 10, "tokenRatio": 0.1}
    return json.dumps(config)


def client_metrics(registry: CollectorRegistry) -> ClientMetrics:
    """The one set of client metrics of a process: share it among its channels."""
    return ClientMetrics(registry)


def dial(
    target: str,
    *,
    default_timeout: float,
    idempotent: Iterable[tuple[str, str]] = (),
    metrics: ClientMetrics | None = None,
    identity: CredentialSource | None = None,
) -> grpc.Channel:
    """A channel to `target` (the mesh listener, or an instance in tests).

    With `identity` it speaks mutual TLS, presenting the workload's certificate and
    trusting only the mesh CA; a renewed certificate goes on a new channel, and the
    old one drains (a channel's client certificate is fixed, grpc/grpc#15735).
    Without, plaintext (a service run alone in development).
    """
    options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", retry_service_config(idempotent)),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    channel: grpc.Channel
    if identity is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = ReloadingChannel(
            identity, lambda creds: grpc.secure_channel(target, creds, options=options)
        )
    return grpc.intercept_channel(channel, ClientInterceptor(default_timeout, metrics))
