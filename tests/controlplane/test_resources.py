"""The pure builders: Consul view in, Envoy v3 clusters, endpoints and versions out."""

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from controlplane.resources import (
    CLUSTER_TYPE,
    CRITICAL,
    ENDPOINT_TYPE,
    HTTP_OPTIONS_KEY,
    PASSING,
    WARNING,
    ClusterPolicy,
    Instance,
    make_cluster,
    make_endpoints,
    make_snapshot,
)

HEALTHY = health_check_pb2.HealthStatus.HEALTHY
UNHEALTHY = health_check_pb2.HealthStatus.UNHEALTHY

VIEW = {
    "user-svc": (
        Instance("user-1", "127.0.0.1", 50051, PASSING),
        Instance("user-2", "127.0.0.1", 50052, CRITICAL),
    ),
    "booking-svc": (Instance("booking-1", "127.0.0.1", 50061, PASSING),),
}


def test_cluster_gets_its_endpoints_from_ads() -> None:
    cluster = make_cluster("user-svc")
    assert cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.eds_cluster_config.service_name == "user-svc"
    assert cluster.eds_cluster_config.eds_config.HasField("ads")


def test_cluster_speaks_http2_explicitly() -> None:
    options = http_protocol_options_pb2.HttpProtocolOptions()
    assert (
        make_cluster("user-svc").typed_extension_protocol_options[HTTP_OPTIONS_KEY].Unpack(options)
    )
    assert options.explicit_http_config.HasField("http2_protocol_options")


def test_cluster_carries_the_policy_limits() -> None:
    policy = ClusterPolicy(connect_timeout_seconds=0.25, consecutive_5xx=7, max_requests=99)
    cluster = make_cluster("user-svc", policy)
    assert cluster.connect_timeout.ToMilliseconds() == 250
    assert cluster.outlier_detection.consecutive_5xx.value == 7
    assert cluster.outlier_detection.enforcing_consecutive_gateway_failure.value == 100
    thresholds = cluster.circuit_breakers.thresholds[0]
    assert thresholds.max_requests.value == 99
    assert thresholds.retry_budget.budget_percent.value == policy.retry_budget_percent


def test_cluster_never_panics_into_unhealthy_hosts() -> None:
    assert make_cluster("user-svc").common_lb_config.healthy_panic_threshold.value == 0.0


def test_endpoint_health_follows_consul_check_status() -> None:
    instances = [
        Instance("a", "127.0.0.1", 1, PASSING),
        Instance("b", "127.0.0.1", 2, WARNING),
        Instance("c", "127.0.0.1", 3, CRITICAL),
    ]
    assignment = make_endpoints("user-svc", instances)
    hosts = assignment.endpoints[0].lb_endpoints
    assert assignment.cluster_name == "user-svc"
    assert [h.endpoint.address.socket_address.port_value for h in hosts] == [1, 2, 3]
    assert [h.health_status for h in hosts] == [HEALTHY, UNHEALTHY, UNHEALTHY]


def test_endpoint_names_its_consul_instance() -> None:
    host = make_endpoints("s", [Instance("s-1", "10.0.0.7", 9000)]).endpoints[0].lb_endpoints[0]
    assert host.metadata.filter_metadata["consul"]["instance_id"] == "s-1"
    assert host.endpoint.address.socket_address.address == "10.0.0.7"


def test_snapshot_has_one_cluster_and_one_assignment_per_service() -> None:
    snapshot = make_snapshot(VIEW)
    assert [c.name for c in snapshot.select(CLUSTER_TYPE)] == ["booking-svc", "user-svc"]
    assert [a.cluster_name for a in snapshot.select(ENDPOINT_TYPE)] == ["booking-svc", "user-svc"]


def test_snapshot_selects_only_requested_names() -> None:
    snapshot = make_snapshot(VIEW)
    selected = snapshot.select(ENDPOINT_TYPE, ["user-svc", "gone-svc"])
    assert [a.cluster_name for a in selected] == ["user-svc"]
    assert len(snapshot.select(CLUSTER_TYPE, ["*"])) == 2


def test_same_view_in_any_order_gives_the_same_versions() -> None:
    shuffled = {name: tuple(reversed(VIEW[name])) for name in reversed(list(VIEW))}
    assert make_snapshot(VIEW).versions == make_snapshot(shuffled).versions


def test_health_change_moves_only_the_endpoint_version() -> None:
    before = make_snapshot(VIEW)
    changed = dict(VIEW)
    changed["booking-svc"] = (Instance("booking-1", "127.0.0.1", 50061, CRITICAL),)
    after = make_snapshot(changed)
    assert after.versions[CLUSTER_TYPE] == before.versions[CLUSTER_TYPE]
    assert after.versions[ENDPOINT_TYPE] != before.versions[ENDPOINT_TYPE]


def test_new_service_moves_both_versions() -> None:
    before = make_snapshot(VIEW)
    after = make_snapshot(dict(VIEW, **{"predict-svc": ()}))
    assert after.versions[CLUSTER_TYPE] != before.versions[CLUSTER_TYPE]
    assert after.versions[ENDPOINT_TYPE] != before.versions[ENDPOINT_TYPE]


def test_service_without_instances_still_has_a_cluster() -> None:
    snapshot = make_snapshot({"predict-svc": ()})
    assert [c.name for c in snapshot.select(CLUSTER_TYPE)] == ["predict-svc"]
    assert not snapshot.select(ENDPOINT_TYPE)[0].endpoints[0].lb_endpoints


def test_cluster_with_upstream_tls_demands_the_services_spiffe_id() -> None:
    cluster = make_cluster("user-svc", ClusterPolicy(upstream_tls=True))
    context = tls_pb2.UpstreamTlsContext()
    assert cluster.transport_socket.typed_config.Unpack(context)
    common = context.common_tls_context
    assert [c.name for c in common.tls_certificate_sds_secret_configs] == ["mesh-identity"]
    combined = common.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "mesh-ca"
    [matcher] = combined.default_validation_context.match_typed_subject_alt_names
    assert matcher.matcher.exact == "spiffe://airline.local/svc/user-svc"


def test_cluster_without_upstream_tls_is_plaintext() -> None:
    assert not make_cluster("user-svc").HasField("transport_socket")
