"""Pure builders from what Consul knows to Envoy's v3 resources, and the snapshot of them.

Nothing here does I/O: the same view always gives the same resources and the same
version, which is what lets Envoy's ACKs mean something and the tests run without Envoy.
Shaped like go-control-plane's `dynamic-config-cp` example (`resource.go`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import (
    circuit_breaker_pb2,
    cluster_pb2,
    outlier_detection_pb2,
)
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    health_check_pb2,
    protocol_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2

from services.runtime.identity import SPIFFE_PREFIX

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
# Type URL and names of secrets (SDS), not secrets themselves.
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"  # noqa: S105
IDENTITY_SECRET = "mesh-identity"  # noqa: S105
CA_SECRET = "mesh-ca"  # noqa: S105
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

# Consul's aggregated check status; only `passing` receives traffic. A `warning` is
# Consul's way of saying "degraded, take me out" for our gRPC checks (NOT_SERVING).
PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"


@dataclass(frozen=True, order=True)
class Instance:
    """One registered instance of a service, as Consul's health endpoint sees it."""

    id: str
    address: str
    port: int
    status: str = PASSING


# Service name -> its instances. The watcher builds it; the builders only read it.
View = Mapping[str, Iterable[Instance]]


@dataclass(frozen=True)
class ClusterPolicy:
    """How Envoy treats every upstream cluster: timeouts, ejection and limits."""

    connect_timeout_seconds: float = 1.0
    # Outlier detection: the router reports gRPC statuses as HTTP codes (UNAVAILABLE is
    # 503), so a crashing or overloaded instance is ejected before Consul's check notices.
    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 3
    ejection_interval_seconds: float = 5.0
    base_ejection_seconds: float = 15.0
    max_ejection_percent: int = 50
    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    # Retries are bounded by a budget relative to active requests, not a fixed count:
    # a retry storm cannot multiply load on an already failing service.
    retry_budget_percent: float = 20.0
    min_retry_concurrency: int = 3
    # HTTP/2 PINGs find a dead peer on an idle connection before a request does.
    keepalive_interval_seconds: float = 30.0
    keepalive_timeout_seconds: float = 5.0
    # Mutual TLS to every instance with Envoy's SDS certificate, accepting only the
    # certificate of the service the cluster is named for.
    upstream_tls: bool = False


DEFAULT_POLICY = ClusterPolicy()


def _duration(seconds: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(
        seconds=int(seconds), nanos=round((seconds - int(seconds)) * 1_000_000_000)
    )


def _http2_options(policy: ClusterPolicy) -> any_pb2.Any:
    """gRPC upstreams speak HTTP/2 only: say so explicitly, never by downstream ALPN."""
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions(
                connection_keepalive=protocol_pb2.KeepaliveSettings(
                    interval=_duration(policy.keepalive_interval_seconds),
                    timeout=_duration(policy.keepalive_timeout_seconds),
                )
            )
        )
    )
    packed = any_pb2.Any()
    packed.Pack(options)
    return packed


def _outlier_detection(policy: ClusterPolicy) -> outlier_detection_pb2.OutlierDetection:
    return outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=wrappers_pb2.UInt32Value(value=policy.consecutive_5xx),
        consecutive_gateway_failure=wrappers_pb2.UInt32Value(
            value=policy.consecutive_gateway_failure
        ),
        # Gateway-failure ejection is off (0%) unless enforced explicitly.
        enforcing_consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=100),
        interval=_duration(policy.ejection_interval_seconds),
        base_ejection_time=_duration(policy.base_ejection_seconds),
        max_ejection_percent=wrappers_pb2.UInt32Value(value=policy.max_ejection_percent),
    )


def _circuit_breakers(policy: ClusterPolicy) -> circuit_breaker_pb2.CircuitBreakers:
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds
    return circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            thresholds(
                priority=base_pb2.RoutingPriority.DEFAULT,
                max_connections=wrappers_pb2.UInt32Value(value=policy.max_connections),
                max_pending_requests=wrappers_pb2.UInt32Value(value=policy.max_pending_requests),
                max_requests=wrappers_pb2.UInt32Value(value=policy.max_requests),
                retry_budget=thresholds.RetryBudget(
                    budget_percent=percent_pb2.Percent(value=policy.retry_budget_percent),
                    min_retry_concurrency=wrappers_pb2.UInt32Value(
                        value=policy.min_retry_concurrency
                    ),
                ),
                track_remaining=True,
            )
        ]
    )


def make_cluster(name: str, policy: ClusterPolicy = DEFAULT_POLICY) -> cluster_pb2.Cluster:
    """An HTTP/2 (gRPC) cluster whose endpoints come over the same ADS stream (EDS)."""
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            service_name=name,
            eds_config=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(),
                resource_api_version=config_source_pb2.ApiVersion.V3,
            ),
        ),
        connect_timeout=_duration(policy.connect_timeout_seconds),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        outlier_detection=_outlier_detection(policy),
        circuit_breakers=_circuit_breakers(policy),
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(
            # Panic mode (default below 50% healthy) would send calls to instances Consul
            # reports failing; we would rather fail fast with "no healthy upstream".
            healthy_panic_threshold=percent_pb2.Percent(value=0.0),
        ),
    )
    cluster.typed_extension_protocol_options[HTTP_OPTIONS_KEY].CopyFrom(_http2_options(policy))
    if policy.upstream_tls:
        cluster.transport_socket.CopyFrom(_upstream_tls(name))
    return cluster


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(
        name=name,
        sds_config=config_source_pb2.ConfigSource(
            ads=config_source_pb2.AggregatedConfigSource(),
            resource_api_version=config_source_pb2.ApiVersion.V3,
        ),
    )


def _upstream_tls(name: str) -> base_pb2.TransportSocket:
    """mTLS to the instances of `name`: Envoy shows its own certificate, and the
    instance's must carry `name`'s SPIFFE id, so a process registered under a name it
    has no certificate for gets no traffic.

    Not validated as a workload name: a Consul name no certificate can carry simply
    matches no instance.
    """
    validation = common_pb2.CertificateValidationContext(
        match_typed_subject_alt_names=[
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.URI,
                matcher=string_pb2.StringMatcher(exact=SPIFFE_PREFIX + name),
            )
        ]
    )
    context = tls_pb2.UpstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificate_sds_secret_configs=[_sds(IDENTITY_SECRET)],
            combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
                default_validation_context=validation,
                validation_context_sds_secret_config=_sds(CA_SECRET),
            ),
            alpn_protocols=["h2"],
        )
    )
    packed = any_pb2.Any()
    packed.Pack(context)
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=packed)


def health_status(consul_status: str) -> int:
    """Consul's aggregated check status as Envoy's EDS health status."""
    if consul_status == PASSING:
        return int(health_check_pb2.HealthStatus.HEALTHY)
    return int(health_check_pb2.HealthStatus.UNHEALTHY)


def _lb_endpoint(instance: Instance) -> endpoint_components_pb2.LbEndpoint:
    metadata = base_pb2.Metadata()
    # Shown in /config_dump, so operators can map an Envoy host to a Consul instance.
    metadata.filter_metadata["consul"].CopyFrom(
        struct_pb2.Struct(fields={"instance_id": struct_pb2.Value(string_value=instance.id)})
    )
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(
                    address=instance.address, port_value=instance.port
                )
            )
        ),
        health_status=health_status(instance.status),
        metadata=metadata,
    )


def make_endpoints(name: str, instances: Iterable[Instance]) -> endpoint_pb2.ClusterLoadAssignment:
    """Every instance of `name`, healthy or not, so Envoy knows the full set."""
    ordered = sorted(instances)  # Consul's order is not stable; the version must be.
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[_lb_endpoint(instance) for instance in ordered]
            )
        ],
    )


def content_version(resources: Iterable[Any]) -> str:
    """A short hash of the resources' deterministic bytes: same content, same version."""
    digest = hashlib.sha256()
    for resource in resources:
        payload = resource.SerializeToString(deterministic=True)
        digest.update(len(payload).to_bytes(8, "big"))
        digest.update(payload)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Snapshot:
    """One consistent set of resources per type URL, each type with its own version."""

    resources: Mapping[str, Mapping[str, Any]]
    versions: Mapping[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """The version of the whole snapshot, for logs."""
        return "-".join(self.versions[type_url] for type_url in sorted(self.versions))

    def select(self, type_url: str, names: Iterable[str] = ()) -> list[Any]:
        """Resources of `type_url` named in `names`, or all of them when `names` is empty."""
        available = self.resources.get(type_url, {})
        wanted = set(names) - {"*"}
        if not wanted:
            return [available[name] for name in sorted(available)]
        return [available[name] for name in sorted(wanted) if name in available]


def make_snapshot(
    view: View, policy: ClusterPolicy = DEFAULT_POLICY, secrets: Iterable[Any] | None = None
) -> Snapshot:
    """The clusters (CDS) and endpoints (EDS) for a Consul view, versioned by content,
    and, when given, Envoy's own secrets (SDS: `controlplane.sds`)."""
    names = sorted(view)
    resources: dict[str, dict[str, Any]] = {
        CLUSTER_TYPE: {name: make_cluster(name, policy) for name in names},
        ENDPOINT_TYPE: {name: make_endpoints(name, view[name]) for name in names},
    }
    if secrets is not None:
        resources[SECRET_TYPE] = {secret.name: secret for secret in secrets}
    versions = {
        type_url: content_version(by_name[name] for name in sorted(by_name))
        for type_url, by_name in resources.items()
    }
    return Snapshot(resources=resources, versions=versions)
